//! The NBD wire format, sans IO.
//!
//! Nothing in here touches a socket. Encoders write into a `BytesMut` and can be told to build
//! malformed frames on purpose (wrong magic, lengths, flags, cookies). Decoders take byte slices,
//! never panic, never allocate more than the bytes they were given, and are lenient: they return
//! what they could decode together with the [`Violation`]s they saw, each naming one clause id.
//!
//! Layout: [`consts`] (every number, once), [`reader`] (bounds-checked big-endian reads),
//! [`handshake`] (greeting and options), [`request`], [`reply`] (simple replies and chunks),
//! [`status_payload`] (the filtered block-status request's payload), [`draft`] (the 2016
//! GET_LBA_STATUS reply), [`state`] (named states for reports).

pub mod consts;
pub mod draft;
pub mod handshake;
pub mod reader;
pub mod reply;
pub mod request;
pub mod state;
pub mod status_payload;

use std::fmt;

use crate::clauses::id;
use crate::clauses::ClauseId;

/// A rule a peer broke, seen while decoding. `clause` is an id from the clause catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub clause: ClauseId,
    pub detail: String,
}

impl Violation {
    pub fn new(clause: ClauseId, detail: impl Into<String>) -> Self {
        Violation {
            clause,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.clause, self.detail)
    }
}

/// A decoded value plus what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<T> {
    pub value: T,
    pub violations: Vec<Violation>,
}

impl<T> Decoded<T> {
    pub fn clean(value: T) -> Self {
        Decoded {
            value,
            violations: Vec::new(),
        }
    }
}

/// A protocol string (GEN-STR-1): UTF-8, no NUL, at most 4096 bytes. Invalid bytes are kept
/// lossily so that a report can still show them.
pub fn decode_string(bytes: &[u8], what: &str, violations: &mut Vec<Violation>) -> String {
    if bytes.len() > consts::limit::MAX_STRING {
        violations.push(Violation::new(
            id::GEN_STR_1,
            format!("{what} is {} bytes, over the 4096-byte limit", bytes.len()),
        ));
    } else if bytes.len() > consts::limit::RECOMMENDED_STRING {
        violations.push(Violation::new(
            id::GEN_STR_2,
            format!("{what} is {} bytes, over the recommended 256", bytes.len()),
        ));
    }
    if bytes.contains(&0) {
        violations.push(Violation::new(
            id::GEN_STR_1,
            format!("{what} contains a NUL byte"),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            violations.push(Violation::new(
                id::GEN_STR_1,
                format!("{what} is not valid UTF-8"),
            ));
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}
