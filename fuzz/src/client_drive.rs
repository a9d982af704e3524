//! The client session that `client_stream` fuzzes and that `examples/capture.rs` runs against
//! real servers to record seeds: the same code, so a captured server stream replays the same
//! path through the client when fed back to it.
//!
//! One session: negotiate (`Session::open`, i.e. `Handshake::negotiate`), walk up to 1 MiB with
//! `map::map` (two windows in flight), READ the first 4 KiB, ask for block status past the end
//! (the server must refuse: an error reply), then disconnect.

use std::time::Duration;

use nbd_conform::client::{Session, SessionOptions, Target};
use nbd_conform::map::{map, MapEntry, MapError, MapOptions};
use nbd_conform::wire::consts::context;
use nbd_conform::wire::draft::DraftQuery;
use nbd_conform::Dialect;

/// What the session asks for, packed into the first byte of a `client_stream` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Negotiate extended headers instead of structured replies.
    pub extended: bool,
    /// The 2016 draft dialect (GO only, then GET_LBA_STATUS).
    pub draft: bool,
    /// Also select `qemu:allocation-depth` (qemu-nbd -A offers it).
    pub allocation_depth: bool,
    /// Set REQ_ONE on the map's block-status requests.
    pub req_one: bool,
}

impl Plan {
    pub fn from_selector(s: u8) -> Plan {
        Plan {
            extended: s & 0x01 != 0,
            draft: s & 0x02 != 0,
            allocation_depth: s & 0x04 != 0,
            req_one: s & 0x08 != 0,
        }
    }

    pub fn selector(&self) -> u8 {
        (self.extended as u8)
            | (self.draft as u8) << 1
            | (self.allocation_depth as u8) << 2
            | (self.req_one as u8) << 3
    }

    pub fn session_options(&self, timeout: Duration) -> SessionOptions {
        let mut contexts = Vec::new();
        if !self.draft {
            contexts.push(context::BASE_ALLOCATION.to_owned());
            if self.allocation_depth {
                contexts.push(context::QEMU_ALLOCATION_DEPTH.to_owned());
            }
        }
        SessionOptions {
            timeout,
            structured: true,
            extended: self.extended,
            contexts,
            dialect: if self.draft {
                Dialect::Draft
            } else {
                Dialect::Standard
            },
        }
    }
}

/// Bytes of the export the session maps at most.
pub const MAP_LIMIT: u64 = 1 << 20;
/// Bytes per map window (so a 1 MiB export takes four requests, two in flight).
pub const MAP_WINDOW: u64 = 256 << 10;

/// How far a session got, for the capture tool's log and the fuzz invariants.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The last step reached: "open", "map", "read", "past-end", "done".
    pub stage: &'static str,
    pub size: Option<u64>,
    /// The (id, name) pairs the handshake selected, as the client kept them.
    pub contexts: Vec<(u32, String)>,
    /// Entries `map` emitted, in emission order.
    pub entries: Vec<MapEntry>,
    /// The error that ended the session early, if any.
    pub error: Option<String>,
    /// Violations the client recorded (session-level and per reply).
    pub violations: usize,
}

/// Runs the session against `target`. Never fails: errors end up in [`Outcome::error`].
pub async fn drive(target: &Target, plan: &Plan, timeout: Duration) -> Outcome {
    let mut out = Outcome {
        stage: "open",
        ..Outcome::default()
    };
    let mut session = match Session::open(target, &plan.session_options(timeout)).await {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let size = session.negotiated.size;
    out.size = Some(size);
    out.contexts = session.negotiated.contexts.clone();

    out.stage = "map";
    let options = MapOptions {
        offset: 0,
        length: Some(size.min(MAP_LIMIT)),
        req_one: plan.req_one,
        draft_queries: vec![DraftQuery::Allocated, DraftQuery::Dirty],
        window: MAP_WINDOW,
        depth: 2,
        // The iteration has its bound (runtime::ITERATION_BOUND), and each reply its deadline.
        deadline: None,
    };
    let mut entries = Vec::new();
    let mapped = map(&mut session, &options, |e| {
        entries.push(e.clone());
        Ok(())
    })
    .await;
    out.entries = entries;
    match mapped {
        Ok(()) => {}
        // The stream may still be usable after a reply the map did not like.
        Err(
            e @ (MapError::ServerError { .. }
            | MapError::MissingContext { .. }
            | MapError::NoProgress { .. }),
        ) => out.error = Some(e.to_string()),
        Err(e) => return finish(out, &session, e.to_string()),
    }

    if !plan.draft && size >= 4096 {
        out.stage = "read";
        match session.read(0, 4096).await {
            Ok(reply) => {
                out.violations += reply.violations.len();
                let _ = reply.read_data();
            }
            Err(e) => return finish(out, &session, e.to_string()),
        }
    }

    out.stage = "past-end";
    let past_end = if plan.draft {
        session.draft_status(size, 512, DraftQuery::Allocated).await
    } else {
        session.block_status(size, 512, 0).await
    };
    match past_end {
        Ok(reply) => out.violations += reply.violations.len(),
        Err(e) => return finish(out, &session, e.to_string()),
    }

    out.stage = "done";
    out.violations += session.violations.len();
    session.disconnect().await;
    out
}

fn finish(mut out: Outcome, session: &Session, error: String) -> Outcome {
    out.violations += session.violations.len();
    if out.error.is_none() {
        out.error = Some(error);
    }
    out
}

/// Invariants of what `map` emitted, whatever the server said: per context, entries are
/// non-empty, contiguous from offset 0, and stay inside the mapped range.
pub fn check_entries(out: &Outcome) {
    let Some(size) = out.size else {
        assert!(out.entries.is_empty());
        return;
    };
    let end = size.min(MAP_LIMIT);
    let mut covered: Vec<(&str, u64)> = Vec::new();
    for e in &out.entries {
        assert!(e.length > 0, "map emitted an empty entry: {e:?}");
        let at = match covered.iter_mut().find(|(c, _)| *c == e.context) {
            Some((_, at)) => at,
            None => {
                covered.push((&e.context, 0));
                &mut covered.last_mut().unwrap().1
            }
        };
        assert_eq!(
            e.offset, *at,
            "map entries of {:?} are not contiguous",
            e.context
        );
        *at = e.offset.checked_add(e.length).expect("entry end overflows");
        assert!(*at <= end, "map entry {e:?} runs past the mapped end {end}");
    }
}

/// Errors the client may legitimately give against a hostile or truncated stream. Anything is
/// allowed except a panic or a hang; this only exists so that the capture tool can tell a clean
/// session from an early end.
pub fn is_clean(out: &Outcome) -> bool {
    out.stage == "done" && out.error.is_none()
}
