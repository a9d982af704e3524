//! One broken rule, one grade: a rule a server breaks on the way to what a case is about (the
//! handshake every case starts with, the connection it then drops, a chunk of a type no one
//! defined) fails that server in every case that meets it, under the clause broken. `error` is
//! left for a server the harness could not reach at all. Each trial plays a scripted peer
//! (`nbd_conform::scripted::Peer`) against every case it applies to and asserts the grade.

use std::time::Duration;

use libtest_mimic::{Failed, Trial};

use nbd_conform::clauses::{id, ClauseId};
use nbd_conform::engine::case::{load_suite_cases, Case, Close, Step};
use nbd_conform::engine::outcome::{CaseResult, Grade};
use nbd_conform::scripted::Peer;
use nbd_conform::wire::consts::reply_type;
use nbd_conform::wire::reply::ReplyHeader;

use crate::scripted::against_peer;

/// What a note says when a case really had no connection to send on; never after a handshake
/// that succeeded.
const NO_SESSION: &str = "without a negotiated connection";

/// Runs every case `applies` picks against its own `peer` and collects what `judge` objects
/// to, one line per case.
fn every_case(
    applies: fn(&Case) -> bool,
    peer: fn(&Case) -> Peer,
    judge: fn(&Case, &CaseResult) -> Option<String>,
) -> Result<(), Failed> {
    let cases = load_suite_cases().map_err(|e| e.to_string())?;
    let mut ran = 0;
    let mut wrong = Vec::new();
    for case in cases.iter().filter(|c| applies(c)) {
        ran += 1;
        let result = against_peer(peer(case), case)?;
        if let Some(why) = judge(case, &result) {
            wrong.push(format!(
                "{}: {why} ({})",
                case.id,
                crate::support::why(&result)
            ));
        }
    }
    if ran == 0 {
        return Err("no case to run".into());
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!("{} of {ran} cases:\n{}", wrong.len(), wrong.join("\n")).into())
}

fn has(result: &CaseResult, clause: ClauseId) -> bool {
    result.findings.iter().any(|f| f.clause == clause)
}

fn starts_with_negotiate(case: &Case) -> bool {
    matches!(case.steps.first(), Some(Step::Negotiate(_)))
}

/// The first option of the connection is answered with a header that claims 4 GiB of payload
/// (HS-OPTREP-1: no client can read past it), whichever option it is.
fn claims_4g() -> Peer {
    Peer::new()
        .greet()
        .any_option()
        .option_reply_claiming(reply_type::ACK, u32::MAX)
}

/// Fails under HS-OPTREP-1, with a note that does not blame the case.
fn failed_the_handshake(_: &Case, r: &CaseResult) -> Option<String> {
    if r.grade != Grade::Fail || !has(r, id::HS_OPTREP_1) {
        return Some(format!("graded {} without HS-OPTREP-1", r.grade));
    }
    r.note
        .as_deref()
        .filter(|n| n.contains(NO_SESSION))
        .map(|n| format!("note {n:?}"))
}

/// The whole handshake done right for a case that asks for base:allocation alone, on an
/// export of the fixture's size; then the server hangs up before the first request's reply.
fn drops_after_go(case: &Case) -> Peer {
    let size = nbd_conform::fixtures::find(&case.fixture).map_or(1 << 20, |f| f.layout.size);
    Peer::new().negotiated(size).request()
}

/// A standard case that negotiates structured replies and base:allocation alone, which
/// `drops_after_go` answers.
fn negotiates_base_allocation(case: &Case) -> bool {
    case.dialect == nbd_conform::Dialect::Standard
        && matches!(
            case.steps.first(),
            Some(Step::Negotiate(n)) if n.structured && !n.extended
                && n.contexts == ["base:allocation"] && n.export.is_none() && n.go_export.is_none()
        )
}

/// A close the case's first request forbids fails TX-NODROP-1; one it allows is recorded as
/// such. Either way the note never says nothing was negotiated.
fn graded_the_drop(case: &Case, r: &CaseResult) -> Option<String> {
    if let Some(n) = r.note.as_deref().filter(|n| n.contains(NO_SESSION)) {
        return Some(format!("note {n:?}"));
    }
    // GO said the export has only HAS_FLAGS: a case that needs more stops before it asks.
    if r.grade == Grade::Unsupported && r.findings.is_empty() {
        return None;
    }
    let close = case
        .steps
        .get(1)
        .and_then(Step::expect)
        .map_or(Close::Forbidden, |e| e.close);
    match close {
        Close::Forbidden if r.grade != Grade::Fail || !has(r, id::TX_NODROP_1) => {
            Some(format!("graded {} without TX-NODROP-1", r.grade))
        }
        Close::Forbidden => None,
        // Allowed, preferred, discouraged: the close is recorded under its own clause; what
        // comes after it (a reconnect to a peer that is gone) may be an error, never silence.
        _ if r.findings.is_empty() => Some(format!("graded {} with no finding", r.grade)),
        _ => None,
    }
}

/// A plain block-status reply that opens with a chunk of type 42, with `flags`.
fn unknown_chunk(flags: u16) -> Peer {
    Peer::new()
        .negotiated(4 << 20)
        .request()
        .answer(move |r, out| {
            ReplyHeader::Structured {
                flags,
                chunk_type: 42,
                cookie: r.cookie,
                length: 4,
            }
            .encode(out);
            out.extend_from_slice(&[0; 4]);
        })
        .pause(Duration::from_secs(5))
}

/// The case that reads one plain block-status reply for its structure.
fn structure_case() -> Result<Case, Failed> {
    let cases = load_suite_cases().map_err(|e| e.to_string())?;
    let case = cases.into_iter().find(|c| c.id == "bs.reply.structure");
    case.ok_or_else(|| "no case bs.reply.structure".into())
}

/// With or without DONE, a chunk of an unknown type is CHUNK-UNKTYPE-1 (the client hangs up
/// on it), and the transcript shows it, not a wait for a reply.
fn unknown_chunk_type_is_a_finding() -> Result<(), Failed> {
    let case = &structure_case()?;
    for flags in [0, nbd_conform::wire::consts::reply_flag::DONE] {
        let r = against_peer(unknown_chunk(flags), case)?;
        let shown = r
            .transcript
            .iter()
            .any(|l| l.starts_with('←') && l.contains("CHUNK-UNKTYPE-1") && l.contains("0x002a"));
        if r.grade != Grade::Fail || !has(&r, id::CHUNK_UNKTYPE_1) || !shown {
            return Err(format!(
                "flags {flags}: {}\n{}",
                crate::support::why(&r),
                r.transcript.join("\n")
            )
            .into());
        }
    }
    Ok(())
}

/// An option the server never answers is HS-OPTREP-1 once the deadline passes, like a reply
/// it got wrong.
fn mute_handshake_fails() -> Result<(), Failed> {
    let case = &structure_case()?;
    let peer = Peer::new()
        .greet()
        .any_option()
        .pause(Duration::from_secs(10));
    let r = against_peer(peer, case)?;
    match failed_the_handshake(case, &r) {
        None => Ok(()),
        Some(why) => Err(format!("{why}: {}", crate::support::why(&r)).into()),
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::one_grade::broken_option_reply_fails_every_case",
            || every_case(starts_with_negotiate, |_| claims_4g(), failed_the_handshake),
        ),
        Trial::test(
            "selftest::one_grade::unanswered_option_fails",
            mute_handshake_fails,
        ),
        Trial::test(
            "selftest::one_grade::connection_dropped_after_go_fails",
            || every_case(negotiates_base_allocation, drops_after_go, graded_the_drop),
        ),
        Trial::test(
            "selftest::one_grade::unknown_chunk_type_is_a_finding",
            unknown_chunk_type_is_a_finding,
        ),
    ]
}
