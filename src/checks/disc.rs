//! TX-DISC-1: NBD_CMD_DISC sent behind a request; the server answers the request, then closes.

use std::time::Duration;

use super::request::observed;
use crate::clauses::{id, ClauseId};
use crate::client::Reply;
use crate::engine::outcome::Finding;
use crate::wire::consts::errno;

/// The clause every rule of this module belongs to.
pub const CLAUSE: ClauseId = id::TX_DISC_1;

/// The server closed without answering the outstanding request.
pub fn closed_unanswered() -> Finding {
    Finding::broken(
        CLAUSE,
        "the outstanding request answered, then the close",
        "the server closed without answering it",
    )
}

/// The outstanding request's reply. Racing the DISC, a server may answer it or cut it short
/// with ESHUTDOWN (a server shutting down may speed up with error replies, "Terminating the
/// transmission phase"): either handles it, any other error does not.
pub fn answer(reply: &Reply) -> Option<Finding> {
    match reply.error() {
        None | Some(errno::ESHUTDOWN) => None,
        Some(_) => Some(Finding::broken(
            CLAUSE,
            "the outstanding request answered (or cut short with ESHUTDOWN)",
            observed(reply),
        )),
    }
}

/// The connection was still open this long after the DISC.
pub fn still_open(after: Duration) -> Finding {
    Finding::broken(
        CLAUSE,
        "the server closes after NBD_CMD_DISC",
        format!("still open after {after:?}"),
    )
}
