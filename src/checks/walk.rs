//! Whole-export walks: every reply must take the walk forward.

use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;
use crate::Dialect;

/// The clause a walk's request breaks when it does not succeed.
pub fn request_clause(dialect: Dialect) -> ClauseId {
    match dialect {
        Dialect::Draft => id::DRAFT_REP_1,
        Dialect::Standard => id::BS_REP_PERCTX_1,
    }
}

/// A successful reply to a request at `at` described nothing past it (BS-REP-ATLEAST1-1, or
/// DRAFT-DESC-COVER-1 in the draft).
pub fn no_progress(dialect: Dialect, at: u64) -> Finding {
    let clause = match dialect {
        Dialect::Draft => id::DRAFT_DESC_COVER_1,
        Dialect::Standard => id::BS_REP_ATLEAST1_1,
    };
    Finding::broken(
        clause,
        format!("progress past offset {at}"),
        "the reply described nothing new",
    )
}
