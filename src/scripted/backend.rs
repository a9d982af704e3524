//! Peers whose block status fails in their backend, for `bs.backend.status-fails`: the answers
//! a failing backend may give (one descriptor over the request) and the ones it must not (an
//! ERROR_OFFSET outside the request, an error chunk with error 0). The reference server's
//! `--fail-block-status` gives the one right answer; these give the others.

use bytes::BytesMut;

use super::answers::{answered, error_chunk, status, DONE};
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno};
use crate::wire::request::Request;

const BACKEND: &str = "bs.backend.status-fails";

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "backend-failure-as-one-descriptor",
        clause: id::BS_ERR_FALLBACK_1,
        case: BACKEND,
        peer: one_descriptor,
    },
    Proof {
        name: "backend-failure-offset-past-the-request",
        clause: id::BS_ERR_OFFSET_1,
        case: BACKEND,
        peer: offset_past_the_request,
    },
    Proof {
        name: "backend-failure-with-error-zero",
        clause: id::ERRCHUNK_NONZERO_1,
        case: BACKEND,
        peer: error_zero,
    },
];

/// One descriptor (status 0, always safe) over exactly the request: the MAY taken.
pub fn one_descriptor() -> Peer {
    answered(|r: &Request, out: &mut BytesMut| status(out, r, DONE, &[(r.length, 0)]))
}

/// EIO at the first byte after the request.
pub fn offset_past_the_request() -> Peer {
    answered(|r: &Request, out: &mut BytesMut| {
        let past = Some(r.offset + r.length);
        error_chunk(out, r, chunk_type::ERROR_OFFSET, errno::EIO, past);
    })
}

/// An ERROR chunk whose error is 0: a failure that says it is none.
pub fn error_zero() -> Peer {
    answered(|r: &Request, out: &mut BytesMut| {
        error_chunk(out, r, chunk_type::ERROR, 0, None);
    })
}
