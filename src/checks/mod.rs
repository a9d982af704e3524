//! Clause checks: code, keyed by clause id, run on every reply a case receives.
//!
//! Checks consume decoded replies (never sockets) and return [`Finding`]s; each finding names
//! exactly one clause. `block_status` covers today's replies, `draft` the 2016 draft's.

pub mod block_status;
pub mod draft;

use crate::clauses;
use crate::engine::outcome::Finding;
use crate::wire::Violation;

/// A codec or framing violation as a finding, graded by its clause's level.
pub fn from_violation(v: &Violation) -> Finding {
    let expected = clauses::clause(v.clause)
        .map_or_else(|| "the clause holds".to_owned(), |c| c.text.to_owned());
    Finding::broken(v.clause, expected, v.detail.clone())
}
