//! The outcome of one request against what the case expects of it: the reply's structure, its
//! error, a close or a reply that never came.

use std::time::Duration;

use super::from_violation;
use crate::clauses::{id, ClauseId};
use crate::client::{Negotiated, Reply, ReplyBody};
use crate::engine::case::Outcome;
use crate::engine::outcome::Finding;
use crate::wire::consts::{command, draft, errno};
use crate::Dialect;

/// The clause broken by a request that must succeed on any server: the still-alive probe after
/// a request the server should have survived, and the read-back's READs.
pub const MUST_SUCCEED: ClauseId = id::TX_NODROP_1;

/// The clause each reply of a pipeline breaks when it does not succeed.
pub const PIPELINED: ClauseId = id::BS_REQ_PIPE_1;

/// Every structural rule that applies to this reply, by command.
pub fn structure(reply: &Reply, neg: &Negotiated) -> Vec<Finding> {
    if neg.dialect == Dialect::Draft && reply.request.command == draft::CMD_GET_LBA_STATUS {
        super::draft::check(reply)
    } else if reply.request.command == command::BLOCK_STATUS {
        super::block_status::check(reply, neg)
    } else {
        reply.violations.iter().map(from_violation).collect()
    }
}

/// The reply's error (or success) against the `outcome` the case expects, under `clause`.
pub fn expected(outcome: Outcome, clause: ClauseId, reply: &Reply) -> Option<Finding> {
    let error = reply.error();
    let observed = || observed(reply);
    match outcome {
        Outcome::Ok if error.is_some() => Some(Finding::broken(clause, "success", observed())),
        Outcome::Einval if error != Some(errno::EINVAL) => {
            Some(Finding::broken(clause, "EINVAL", observed()))
        }
        Outcome::Error if error.is_none() => Some(Finding::broken(clause, "an error", observed())),
        Outcome::Fallback => fallback(reply, clause),
        _ => None,
    }
}

/// What a block status meant to fail in the server's backend came back as.
#[derive(Debug)]
pub enum BackendAnswer {
    /// An error: what its chunks say is graded by [`structure`].
    Failed,
    /// No error, one descriptor per context over exactly the request: the MAY of
    /// BS-ERR-FALLBACK-1 (recorded as info; a backend that answered truly looks the same).
    OneDescriptor(Finding),
    /// A real answer: the backend did not fail, so the case means nothing here (why).
    Answered(String),
}

/// Sorts the reply to a block status whose backend is meant to fail (`backend-failure`).
pub fn backend_failure(reply: &Reply) -> BackendAnswer {
    if reply.error().is_some() {
        return BackendAnswer::Failed;
    }
    let length = reply.request.length;
    let chunks: Vec<_> = reply.status_chunks().collect();
    let spanning = !chunks.is_empty()
        && chunks
            .iter()
            .all(|(_, d)| matches!(d, [one] if one.length == length));
    if spanning {
        return BackendAnswer::OneDescriptor(Finding::info(
            id::BS_ERR_FALLBACK_1,
            "an error, or one descriptor over the request",
            format!(
                "one descriptor of {length} bytes per context (the fallback, or a true answer)"
            ),
        ));
    }
    BackendAnswer::Answered(format!(
        "the server's backend did not fail: it answered {} status chunk(s) of real extents",
        chunks.len()
    ))
}

/// The draft's unknown-query fallback: one descriptor equal to the request, status 0.
fn fallback(reply: &Reply, clause: ClauseId) -> Option<Finding> {
    let req = &reply.request;
    let observed = match &reply.body {
        ReplyBody::Draft {
            error: 0,
            descriptors,
            ..
        } => {
            if let [d] = descriptors.as_slice() {
                if d.offset == req.offset && d.length as u64 == req.length && d.status == 0 {
                    return None;
                }
            }
            format!(
                "{:?}",
                descriptors
                    .iter()
                    .map(|d| (d.offset, d.length, d.status))
                    .collect::<Vec<_>>()
            )
        }
        ReplyBody::Draft { error, .. } => format!("error {}", errno::name(*error)),
        _ => "another reply form".into(),
    };
    Some(Finding::broken(
        clause,
        format!("one descriptor ({}, {}, status 0)", req.offset, req.length),
        observed,
    ))
}

/// The server closed with the request outstanding: allowed (and recorded) when the request
/// broke a client MUST (TX-VIOL-1), a failure otherwise (TX-NODROP-1).
pub fn closed(allowed: bool) -> Finding {
    if allowed {
        Finding::info(
            id::TX_VIOL_1,
            "an error reply",
            "the server closed the connection (allowed: the request broke a client MUST)",
        )
    } else {
        Finding::broken(
            id::TX_NODROP_1,
            "a reply, the connection open",
            "the server closed the connection",
        )
    }
}

/// The server closed on a request after which the spec says it should not (under `clause`, a
/// SHOULD NOT, e.g. BS-REQ-ZERO-1).
pub fn closed_discouraged(clause: ClauseId) -> Finding {
    Finding::broken(
        clause,
        "a reply, the connection open",
        "the server closed the connection",
    )
}

/// The server answered a request it should have closed on, and kept the connection open.
pub fn kept_open(clause: ClauseId, waited: Duration) -> Finding {
    Finding::broken(
        clause,
        "a hard disconnect",
        format!("the connection was still open {waited:.0?} after the reply"),
    )
}

/// Whether a finding says only that the server closed the connection (as [`closed`] and
/// [`super::options::closed_while_haggling`] do): what a server that died leaves in every
/// case it was serving.
pub fn only_says_closed(f: &Finding) -> bool {
    matches!(f.clause, id::TX_NODROP_1 | id::HS_NOHARD_1) && f.observed.contains("closed")
}

/// BS-COMPLETE-1: no complete reply within the deadline.
pub fn incomplete(after: Duration) -> Finding {
    Finding::broken(
        id::BS_COMPLETE_1,
        "a complete reply",
        format!(
            "no complete reply within {after:.0?} (the per-request deadline; a server this slow \
             can be given longer with --timeout)"
        ),
    )
}

/// What a reply says, for a finding or a transcript: `success`, or the error and its message.
pub fn observed(reply: &Reply) -> String {
    match reply.error() {
        Some(e) => format!("{} ({e}){}", errno::name(e), error_message(reply)),
        None => "success".to_owned(),
    }
}

/// A reply's error message, quoted with a leading blank, if it carries one.
pub fn error_message(reply: &Reply) -> String {
    reply
        .error_message()
        .map_or_else(String::new, |m| format!(" {m:?}"))
}
