//! Peers that advertise block sizes and then break what those sizes bind a server to: an
//! unaligned request answered as if it were fine, a status chunk or an error message longer
//! than the advertised maximum payload.

use std::time::Duration;

use bytes::BytesMut;

use super::answers::{error_chunk_with, sizes, status, DONE};
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno};
use crate::wire::request::Request;

/// The case that reads status chunks and a refusal against the advertised maximum payload.
const MAX_PAYLOAD: &str = "bs.max-payload.chunks";

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "unaligned-request-answered",
        clause: id::BS_REQ_ALIGN_1,
        case: "bs.min-block.unaligned-offset",
        peer: unaligned_request_answered,
    },
    Proof {
        name: "descriptors-past-the-maximum-payload",
        clause: id::CHUNK_SRVCTL_1,
        case: MAX_PAYLOAD,
        peer: descriptors_past_the_maximum,
    },
    Proof {
        name: "error-message-past-the-maximum-payload",
        clause: id::CHUNK_MAXPL_1,
        case: MAX_PAYLOAD,
        peer: error_message_past_the_maximum,
    },
];

/// The export the peers announce: 4 MiB.
const SIZE: u64 = 4 << 20;

/// The handshake done right, with NBD_INFO_BLOCK_SIZE (`minimum`, `preferred`, `maximum`).
fn negotiated(minimum: u32, preferred: u32, maximum: u32) -> Peer {
    Peer::new()
        .haggled()
        .export_info(SIZE, 1)
        .info(sizes(minimum, preferred, maximum))
        .ack()
}

/// One request answered by `answer`.
fn then_answer(peer: Peer, answer: fn(&Request, &mut BytesMut)) -> Peer {
    peer.request().answer(move |r, out| {
        answer(r, out);
    })
}

/// A right answer: one descriptor of the request's length.
fn plain(r: &Request, out: &mut BytesMut) {
    status(out, r, DONE, &[(r.length, 0)]);
}

/// A 4 KiB minimum block advertised, and a request at offset 1 answered as a success (the
/// server SHOULD have said EINVAL), then the next request answered right.
pub fn unaligned_request_answered() -> Peer {
    let peer = then_answer(negotiated(4096, 4096, 1 << 20), plain);
    then_answer(peer, plain).pause(Duration::from_secs(5))
}

/// A maximum payload of 1024 advertised, and the whole-export request answered with 200
/// alternating descriptors: 1600 bytes of them in one chunk.
pub fn descriptors_past_the_maximum() -> Peer {
    then_answer(negotiated(512, 512, 1024), |r, out| {
        let descriptors: Vec<(u64, u64)> = (0..200).map(|i| (512, (i % 2) * 3)).collect();
        status(out, r, DONE, &descriptors);
    })
    .pause(Duration::from_secs(5))
}

/// A maximum payload of 512 advertised; two requests answered right, then the refusal of the
/// third with a 600-byte message, then the probe after it answered right.
pub fn error_message_past_the_maximum() -> Peer {
    let peer = then_answer(negotiated(512, 512, 512), plain);
    let peer = then_answer(peer, plain);
    let peer = then_answer(peer, |r, out| {
        error_chunk_with(out, r, chunk_type::ERROR, errno::EINVAL, "x".repeat(600));
    });
    then_answer(peer, plain).pause(Duration::from_secs(5))
}
