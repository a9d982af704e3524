//! The walk behind `nbd-conform map`: the raw, uncoalesced descriptor stream of every selected
//! context over a range, with several requests in flight.
//!
//! The range is cut into windows. Each window is walked by its own chain of requests (a reply
//! may cover less than asked, BS-REP-SHORT-1, so the next request starts where the slowest
//! context stopped); several windows are in flight at once, and their entries are emitted in
//! order, so memory depends on the window count, not on the export's extent count.
//! Descriptors are clipped to the window they answer (a final descriptor may overshoot,
//! BS-REP-SUM-2), and parts a context already reported are not repeated.

use std::collections::VecDeque;

use crate::client::{ClientError, Negotiated, Reply, ReplyBody, Session};
use crate::wire::consts::{command, command_flag, draft, errno};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;
use crate::wire::state::state_name;
use crate::Dialect;

/// One descriptor as `map` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapEntry {
    pub context: String,
    pub offset: u64,
    pub length: u64,
    pub flags: u64,
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct MapOptions {
    pub offset: u64,
    /// Bytes to map; `None` means up to the end of the export.
    pub length: Option<u64>,
    pub req_one: bool,
    /// Draft dialect only: which queries to walk.
    pub draft_queries: Vec<DraftQuery>,
    /// Bytes per window; each window is one chain of requests.
    pub window: u64,
    /// Windows in flight at once.
    pub depth: usize,
    /// How long the whole walk may take (None: as long as the server keeps answering, each
    /// reply within the session's exchange deadline).
    pub deadline: Option<std::time::Duration>,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            offset: 0,
            length: None,
            req_one: false,
            draft_queries: vec![DraftQuery::Allocated],
            window: 1 << 30,
            depth: 8,
            deadline: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("range {offset}+{length} lies outside the {size}-byte export")]
    Range { offset: u64, length: u64, size: u64 },
    #[error(
        "the server answered block status at {offset}+{length} with {name} ({error}){message}"
    )]
    ServerError {
        offset: u64,
        length: u64,
        error: u32,
        name: &'static str,
        message: String,
    },
    #[error(
        "the reply at {offset} has no block-status chunk for context {context:?} (BS-REP-PERCTX-1)"
    )]
    MissingContext { offset: u64, context: String },
    #[error("the server made no progress at offset {offset} for {context:?}")]
    NoProgress { offset: u64, context: String },
    #[error("no metadata context was negotiated; pass --context")]
    NoContexts,
    #[error("the walk did not finish within its deadline of {0:?}")]
    Deadline(std::time::Duration),
}

/// What one context has reported so far inside one window: entries tile
/// `[window start, covered)` with nothing repeated.
#[derive(Debug, Clone)]
pub struct Track {
    pub context: String,
    pub covered: u64,
    pub entries: Vec<MapEntry>,
}

impl Track {
    pub fn new(context: &str, start: u64) -> Track {
        Track {
            context: context.to_owned(),
            covered: start,
            entries: Vec::new(),
        }
    }

    /// Adds `[at, at+len)` with `flags`, clipped to what is new and ends before `window_end`.
    /// A descriptor that starts past the covered end (a gap) is ignored.
    pub fn absorb(&mut self, window_end: u64, at: u64, len: u64, flags: u64) {
        let start = at.max(self.covered);
        let end = at.saturating_add(len).min(window_end);
        if start >= end || start != self.covered {
            return;
        }
        self.entries.push(MapEntry {
            state: state_name(&self.context, flags),
            context: self.context.clone(),
            offset: start,
            length: end - start,
            flags,
        });
        self.covered = end;
    }
}

/// Adds what a successful reply to a request at `asked_at` says to each context's track, up to
/// `end`. The one place a reply becomes map entries (for `map` and for the engine's walks).
/// A context the reply has no chunk for is named in the error; the others are absorbed.
pub fn absorb_reply(
    tracks: &mut [Track],
    negotiated: &Negotiated,
    asked_at: u64,
    end: u64,
    reply: &Reply,
) -> Result<(), String> {
    let mut missing = None;
    match &reply.body {
        ReplyBody::Draft { descriptors, .. } => {
            if let Some(track) = tracks.first_mut() {
                for d in descriptors {
                    track.absorb(end, d.offset, d.length as u64, d.status as u64);
                }
            }
        }
        _ => {
            for track in tracks {
                let id = negotiated
                    .contexts
                    .iter()
                    .find(|(_, n)| *n == track.context)
                    .map(|(i, _)| *i);
                let descriptors = reply
                    .status_chunks()
                    .find(|(cid, _)| Some(*cid) == id)
                    .map(|(_, d)| d);
                let Some(descriptors) = descriptors else {
                    missing.get_or_insert_with(|| track.context.clone());
                    continue;
                };
                let mut at = asked_at;
                for d in descriptors {
                    track.absorb(end, at, d.length, d.flags);
                    at = at.saturating_add(d.length);
                    if at >= end {
                        break;
                    }
                }
            }
        }
    }
    missing.map_or(Ok(()), Err)
}

/// One window's chain of requests.
struct Window {
    start: u64,
    end: u64,
    /// Request offset and cookie of the request in flight for this window.
    asked: Option<(u64, u64)>,
    tracks: Vec<Track>,
}

impl Window {
    fn next_offset(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| t.covered)
            .min()
            .unwrap_or(self.end)
    }

    fn done(&self) -> bool {
        self.asked.is_none() && self.next_offset() >= self.end
    }
}

/// Walks the range and calls `emit` for every entry, in offset order per window and in
/// selection order per context, all within `options.deadline`.
pub async fn map<F>(session: &mut Session, options: &MapOptions, emit: F) -> Result<(), MapError>
where
    F: FnMut(&MapEntry) -> std::io::Result<()>,
{
    let Some(deadline) = options.deadline else {
        return map_unbounded(session, options, emit).await;
    };
    tokio::time::timeout(deadline, map_unbounded(session, options, emit))
        .await
        .unwrap_or(Err(MapError::Deadline(deadline)))
}

async fn map_unbounded<F>(
    session: &mut Session,
    options: &MapOptions,
    mut emit: F,
) -> Result<(), MapError>
where
    F: FnMut(&MapEntry) -> std::io::Result<()>,
{
    let size = session.negotiated.size;
    let length = options
        .length
        .unwrap_or(size.saturating_sub(options.offset));
    let end = options
        .offset
        .checked_add(length)
        .filter(|e| *e <= size)
        .ok_or(MapError::Range {
            offset: options.offset,
            length,
            size,
        })?;
    let context_names: Vec<String> = match session.negotiated.dialect {
        Dialect::Standard => session
            .negotiated
            .contexts
            .iter()
            .map(|(_, n)| n.clone())
            .collect(),
        Dialect::Draft => options
            .draft_queries
            .iter()
            .map(|q| q.context_name())
            .collect(),
    };
    if context_names.is_empty() {
        return Err(MapError::NoContexts);
    }
    // The draft answers one query per request, so each query gets its own pass.
    let passes: Vec<Vec<String>> = match session.negotiated.dialect {
        Dialect::Standard => vec![context_names],
        Dialect::Draft => context_names.into_iter().map(|n| vec![n]).collect(),
    };
    for (i, pass) in passes.iter().enumerate() {
        let query = options
            .draft_queries
            .get(i)
            .copied()
            .unwrap_or(DraftQuery::Allocated);
        walk(
            session,
            options,
            query,
            pass,
            options.offset,
            end,
            &mut emit,
        )
        .await?;
    }
    Ok(())
}

async fn walk<F>(
    session: &mut Session,
    options: &MapOptions,
    query: DraftQuery,
    contexts: &[String],
    start: u64,
    end: u64,
    emit: &mut F,
) -> Result<(), MapError>
where
    F: FnMut(&MapEntry) -> std::io::Result<()>,
{
    let window = options.window.clamp(1, Request::compact_max(1));
    let mut next_window = start;
    let mut windows: VecDeque<Window> = VecDeque::new();
    loop {
        while windows.len() < options.depth.max(1) && next_window < end {
            let w_end = next_window.saturating_add(window).min(end);
            let mut w = Window {
                start: next_window,
                end: w_end,
                asked: None,
                tracks: contexts
                    .iter()
                    .map(|c| Track::new(c, next_window))
                    .collect(),
            };
            ask(session, options, query, &mut w).await?;
            windows.push_back(w);
            next_window = w_end;
        }
        while windows.front().is_some_and(Window::done) {
            let w = windows.pop_front().unwrap_or_else(|| unreachable!());
            for t in &w.tracks {
                for e in &t.entries {
                    emit(e).map_err(ClientError::Io)?;
                }
            }
        }
        if windows.is_empty() && next_window >= end {
            return Ok(());
        }
        if windows.iter().all(|w| w.asked.is_none()) {
            continue;
        }
        let reply = session.recv().await?;
        let Some(w) = windows
            .iter_mut()
            .find(|w| w.asked.map(|(_, c)| c) == Some(reply.request.cookie))
        else {
            continue;
        };
        absorb(session, w, &reply)?;
        if w.next_offset() < w.end {
            ask(session, options, query, w).await?;
        }
    }
}

async fn ask(
    session: &mut Session,
    options: &MapOptions,
    query: DraftQuery,
    w: &mut Window,
) -> Result<(), MapError> {
    let offset = w.next_offset();
    let length = w.end - offset;
    let cookie = match session.negotiated.dialect {
        Dialect::Draft => {
            session
                .send(
                    draft::CMD_GET_LBA_STATUS,
                    query.selector(),
                    offset,
                    length,
                    &[],
                )
                .await?
        }
        Dialect::Standard => {
            let flags = if options.req_one {
                command_flag::REQ_ONE
            } else {
                0
            };
            session
                .send(command::BLOCK_STATUS, flags, offset, length, &[])
                .await?
        }
    };
    w.asked = Some((offset, cookie));
    Ok(())
}

fn absorb(session: &Session, w: &mut Window, reply: &crate::client::Reply) -> Result<(), MapError> {
    let (asked_at, _) = w.asked.take().unwrap_or((w.start, 0));
    if let Some(error) = reply.error() {
        let message = reply
            .error_message()
            .map_or_else(String::new, |m| format!(": {m}"));
        return Err(MapError::ServerError {
            offset: asked_at,
            length: w.end - asked_at,
            error,
            name: errno::name(error),
            message,
        });
    }
    let before = w.next_offset();
    if let Err(context) = absorb_reply(&mut w.tracks, &session.negotiated, asked_at, w.end, reply) {
        return Err(MapError::MissingContext {
            offset: asked_at,
            context,
        });
    }
    if w.next_offset() <= before {
        let stuck = w
            .tracks
            .iter()
            .find(|t| t.covered == before)
            .map_or_else(String::new, |t| t.context.clone());
        return Err(MapError::NoProgress {
            offset: before,
            context: stuck,
        });
    }
    Ok(())
}
