//! The numbered, decoded exchange of a case: what snapshots hold and reports show.
//!
//! Lines are stable across runs: cookies are shown relative to the session's first cookie,
//! and nothing time-dependent is recorded.

use crate::client::{Chunk, DraftTrailer, Negotiated, Reply, ReplyBody, COOKIE_BASE};
use crate::wire::consts::{command, command_flag, draft, errno, option};
use crate::wire::reply::ChunkBody;
use crate::wire::request::Request;
use crate::wire::state::state_name;
use crate::Dialect;

pub fn cookie(c: u64) -> String {
    match c.checked_sub(COOKIE_BASE) {
        Some(n) if n < 1 << 32 => format!("#{n}"),
        _ => format!("{c:#x}"),
    }
}

/// One request line, its flags by name as cases write them. In the draft dialect command 7 is
/// GET_LBA_STATUS and its flags field is the query selector.
pub fn request(r: &Request, dialect: Dialect) -> String {
    let start = format!("offset={} length={}", r.offset, r.length);
    match dialect {
        Dialect::Draft if r.command == draft::CMD_GET_LBA_STATUS => format!(
            "→ GET_LBA_STATUS {} {start} selector={}",
            cookie(r.cookie),
            r.flags
        ),
        _ => format!(
            "→ {} {} {start} flags={}",
            command::name(r.command),
            cookie(r.cookie),
            command_flags(r.flags)
        ),
    }
}

/// The payload after a request header: a block-status filter as its effect length and ids
/// (a long one by its length and first ids), anything else in hex.
pub fn status_payload(bytes: &[u8]) -> String {
    use crate::wire::status_payload::StatusPayload;
    const SHOWN: usize = 8;
    match StatusPayload::decode(bytes) {
        Ok(p) if p.ids.len() <= SHOWN => format!(
            "  payload: effect length={} ids={:?}",
            p.effect_length, p.ids
        ),
        Ok(p) => format!(
            "  payload: {} bytes, effect length={} ids={:?}…",
            bytes.len(),
            p.effect_length,
            &p.ids[..SHOWN]
        ),
        Err(_) => {
            let hex: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
            let more = if bytes.len() > 32 { "…" } else { "" };
            format!("  payload: {} bytes {hex}{more}", bytes.len())
        }
    }
}

/// Command flags by name, `|`-joined (`REQ_ONE|FUA`); bits without a name in hex; `0` for none.
fn command_flags(flags: u16) -> String {
    if flags == 0 {
        return "0".into();
    }
    let mut names: Vec<String> = command_flag::NAMES
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let unnamed = command_flag::NAMES
        .iter()
        .fold(flags, |rest, (_, bit)| rest & !bit);
    if unnamed != 0 {
        names.push(format!("{unnamed:#06x}"));
    }
    names.join("|")
}

/// An option reply's payload as text (an error's human-readable message), quoted with a
/// leading blank; nothing for an empty one.
pub fn option_text(data: &[u8]) -> String {
    if data.is_empty() {
        String::new()
    } else {
        format!(" {:?}", String::from_utf8_lossy(data))
    }
}

/// Strings longer than this are shown by their start and length (a 4096-byte export name
/// would otherwise fill a transcript line).
const SHOWN_STRING: usize = 64;

/// A string as the transcript quotes it: whole, or its first bytes and its length.
fn quoted(s: &str) -> String {
    if s.len() <= SHOWN_STRING {
        return format!("{s:?}");
    }
    let mut end = SHOWN_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..end], s.len())
}

/// One option line, the same whichever step sent it: the option, the export its payload names
/// and the queries, or for a payload the case wrote by hand its length (and the length the
/// header claimed, when that differs).
pub fn option(
    opt: u32,
    export: Option<&str>,
    queries: &[&str],
    raw: Option<(usize, u32)>,
) -> String {
    let mut line = format!("→ NBD_OPT_{} ({opt})", option::name(opt));
    if let Some(export) = export {
        line.push_str(&format!(" export={}", quoted(export)));
    }
    if !queries.is_empty() {
        let queries: Vec<String> = queries.iter().map(|q| quoted(q)).collect();
        line.push_str(&format!(" queries=[{}]", queries.join(", ")));
    }
    if let Some((sent, claimed)) = raw {
        line.push_str(&format!(" payload {sent} bytes"));
        if claimed as usize != sent {
            line.push_str(&format!(" (the header claims {claimed})"));
        }
    }
    line
}

/// One line per chunk (or one for a simple / draft reply).
pub fn reply(r: &Reply, neg: &Negotiated) -> Vec<String> {
    let c = cookie(r.request.cookie);
    match &r.body {
        ReplyBody::Simple { error, data } => vec![format!(
            "← simple {c} {}{}",
            errno::name(*error),
            data.as_ref()
                .map_or(String::new(), |d| format!(" + {} data bytes", d.len()))
        )],
        ReplyBody::Draft {
            error,
            trailer,
            descriptors,
        } => vec![format!(
            "← draft {c} {} {}",
            errno::name(*error),
            match trailer {
                DraftTrailer::Length(p) => format!("P={p} ({} descriptors)", descriptors.len()),
                DraftTrailer::Closed => "then closed".to_owned(),
            }
        )],
        ReplyBody::Chunks(chunks) => chunks.iter().map(|ch| chunk(&c, ch, neg)).collect(),
    }
}

fn chunk(c: &str, ch: &Chunk, neg: &Negotiated) -> String {
    let done = if ch.flags & 1 != 0 { " DONE" } else { "" };
    let what = match &ch.body {
        ChunkBody::None => "NONE".to_owned(),
        ChunkBody::OffsetData { offset, data } => {
            format!("OFFSET_DATA offset={offset} {} bytes", data.len())
        }
        ChunkBody::OffsetHole { offset, length } => {
            format!("OFFSET_HOLE offset={offset} length={length}")
        }
        ChunkBody::BlockStatus {
            context_id,
            descriptors,
        }
        | ChunkBody::BlockStatusExt {
            context_id,
            descriptors,
            ..
        } => {
            let kind = if matches!(ch.body, ChunkBody::BlockStatus { .. }) {
                "BLOCK_STATUS"
            } else {
                "BLOCK_STATUS_EXT"
            };
            let name = neg.context_name(*context_id).unwrap_or("?");
            let shown: Vec<String> = descriptors
                .iter()
                .take(4)
                .map(|d| format!("{}:{}", d.length, state_name(name, d.flags)))
                .collect();
            let more = if descriptors.len() > 4 {
                format!(" …+{}", descriptors.len() - 4)
            } else {
                String::new()
            };
            format!(
                "{kind} ctx={context_id} ({name}) [{}{more}]",
                shown.join(" ")
            )
        }
        ChunkBody::Error {
            error,
            message,
            offset,
            ..
        } => {
            let at = offset.map_or(String::new(), |o| format!(" at {o}"));
            format!("ERROR {}{at} {message:?}", errno::name(*error))
        }
        ChunkBody::Unknown { chunk_type, length } => {
            format!("chunk type {chunk_type:#06x} ({length} bytes)")
        }
    };
    format!("← {what} {c}{done}")
}
