//! Clause checks: code, keyed by clause id. Every finding the engine grades is built here.
//!
//! Checks are pure functions over decoded values (replies, maps, the fixture's truth, what the
//! case expects), never sockets, so each can be tested with a hand-built value. The engine's
//! steps (`engine/steps/`) send, wait and call them; `wire` and `client` report framing they
//! cannot decode as [`Violation`]s, turned into findings by [`from_violation`].
//!
//! | module | what it checks |
//! |---|---|
//! | `block_status` | the structure of one `NBD_CMD_BLOCK_STATUS` reply |
//! | `draft` | the structure of one 2016-draft `GET_LBA_STATUS` reply |
//! | `export_name` | NBD_OPT_EXPORT_NAME: the close that refuses it, the padding NO_ZEROES drops |
//! | `max_payload` | reply chunks within an advertised maximum payload |
//! | `payload` | block status's payload form: the area and contexts a filtered request asks for |
//! | `request` | a request's outcome against the case: error, close, no reply |
//! | `options` | option haggling: final replies, META_CONTEXT ids, closes |
//! | `session` | what a server promises on entering transmission: block sizes, flags |
//! | `disc` | NBD_CMD_DISC behind a request |
//! | `walk` | whole-export walks make progress |
//! | `read_back` | ranges called zero read as zeros |
//! | `truth` | maps against the fixture's truth |
//! | `stability` | two maps of one export agree |
//! | `writes` | what the case's own writes promise a later READ and block status |

pub mod block_status;
pub mod disc;
pub mod draft;
pub mod export_name;
pub mod max_payload;
pub mod options;
pub mod payload;
pub mod read_back;
pub mod request;
pub mod session;
pub mod stability;
pub mod truth;
pub mod walk;
pub mod writes;

use crate::engine::outcome::Finding;
use crate::wire::Violation;

/// A codec or framing violation as a finding, graded by its clause's level.
pub fn from_violation(v: &Violation) -> Finding {
    let expected = v
        .clause
        .clause()
        .map_or_else(|| "the clause holds".to_owned(), |c| c.text.to_owned());
    Finding::broken(v.clause, expected, v.detail.clone())
}

/// What the checks' unit tests build their sessions from.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::client::Negotiated;
    use crate::wire::consts::context;
    use crate::Dialect;

    /// Structured replies on a 64 KiB export, base:allocation as context 1, no block sizes:
    /// each test changes what it is about (`Negotiated { size: …, ..negotiated() }`).
    pub fn negotiated() -> Negotiated {
        Negotiated {
            export: String::new(),
            size: 64 << 10,
            transmission_flags: 0,
            block_sizes: None,
            handshake_flags: 0,
            structured: true,
            extended: false,
            contexts: vec![(1, context::BASE_ALLOCATION.to_owned())],
            dialect: Dialect::Standard,
        }
    }
}
