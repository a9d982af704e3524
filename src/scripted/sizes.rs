//! Peers about sizes no fixture reaches cheaply: a status chunk of more than 2^20 descriptors
//! (a real export needs over 2^20 runs for that; the peer just writes them).

use std::time::Duration;

use bytes::BytesMut;

use super::answers::{status, DONE};
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::limit::MAX_DESCRIPTORS_PER_CHUNK;
use crate::wire::request::Request;

pub(super) static PROOFS: &[Proof] = &[Proof {
    name: "status-chunk-over-the-descriptor-cap",
    clause: id::BS_REP_CAP_1,
    case: "bs.cap.many-extents",
    peer: over_the_descriptor_cap,
}];

/// The export the peer announces: the size of the case's fixture (`many-extents`, 2 MiB), so
/// that 2^20 + 1 one-byte descriptors stay inside the request.
const SIZE: u64 = 2 << 20;

/// The whole-export request answered with 2^20 + 1 one-byte descriptors in one chunk,
/// alternating data and hole (not zero: a hole over data is allowed, a zero would not be),
/// so that only the cap is broken; the case's second request answered right.
pub fn over_the_descriptor_cap() -> Peer {
    Peer::new()
        .negotiated(SIZE)
        .request()
        .reply(|r| {
            let descriptors: Vec<(u64, u64)> = (0..=MAX_DESCRIPTORS_PER_CHUNK as u64)
                .map(|i| (1, i % 2))
                .collect();
            answer(r, &descriptors)
        })
        .request()
        .reply(|r| answer(r, &[(r.length, 0)]))
        .pause(Duration::from_secs(5))
}

fn answer(r: &Request, descriptors: &[(u64, u64)]) -> Vec<u8> {
    let mut out = BytesMut::new();
    status(&mut out, r, DONE, descriptors);
    out.to_vec()
}
