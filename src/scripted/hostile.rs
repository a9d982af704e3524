//! Servers that never end an exchange (issue 10 §1): option replies with no final one, chunks
//! for cookies never sent, a reply repeated, a reply that never gets DONE (at once, or one chunk
//! every 4 s), a SET_META_CONTEXT answered with 200,000 contexts nobody asked for. Each is an
//! endless or huge stream the client must cut off at a cap or a deadline, with bounded memory;
//! `tests/conformance/hostile.rs` runs `nbd-conform run` and `map` against each in a child
//! process and bounds the grade, the time and the child's peak RSS.

use std::time::Duration;

use bytes::BytesMut;

use super::answers::*;
use super::Peer;
use crate::clauses::{id, ClauseId};
use crate::wire::consts::{option, reply_type};
use crate::wire::handshake::{encode_meta_context_reply, Info};
use crate::wire::reply::{encode_chunk, ChunkBody, Descriptor};
use crate::wire::request::Request;

/// The case with 16 block-status requests in flight.
const PIPELINE: &str = "bs.pipeline.sixteen-in-flight";

/// One endless server and what the harness must make of it.
pub struct Hostile {
    /// The trial's name: `selftest::hostile::NAME`.
    pub name: &'static str,
    /// The clause the server breaks: `run` fails the case under it.
    pub clause: ClauseId,
    /// The case `run` runs against it (its script is written for that case's steps).
    pub case: &'static str,
    /// What `map`'s error against it says (the clause it names, or the deadline it hit); None:
    /// `map` copes, completes and reports what the server broke.
    pub map_error: Option<&'static str>,
    /// One connection's script (every connection gets its own).
    pub peer: fn() -> Peer,
}

/// Every endless server of issue 10 §1.
pub static HOSTILE: &[Hostile] = &[
    Hostile {
        name: "option-replies-without-a-final-one",
        clause: id::HS_OPTREP_1,
        // A case whose first step is the option the server never ends.
        case: "neg.sr.twice",
        map_error: Some("HS-OPTREP-1"),
        peer: || {
            let mut info = BytesMut::new();
            Info::Export {
                size: PLAIN_SIZE,
                flags: 1,
            }
            .encode(&mut info);
            let info = info.to_vec();
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .flood_option(reply_type::INFO, None, move |_| info.clone())
        },
    },
    Hostile {
        name: "chunks-for-cookies-never-sent",
        clause: id::TX_COOKIE_1,
        case: STRUCTURE,
        map_error: Some("TX-COOKIE-1"),
        peer: || {
            flooded(Duration::ZERO, |r| {
                let stranger = Request {
                    cookie: r.cookie ^ 0x5a5a_0000,
                    ..*r
                };
                status_chunk(&stranger, DONE, 1)
            })
        },
    },
    Hostile {
        name: "a-whole-reply-repeated",
        clause: id::CHUNK_DONELAST_1,
        // The repeats are read while the client waits for its next reply: a case (and a map
        // walk) with more than one request in flight.
        case: PIPELINE,
        map_error: Some("CHUNK-DONELAST-1"),
        peer: || flooded(Duration::ZERO, |r| status_chunk(r, DONE, 1)),
    },
    Hostile {
        name: "the-same-chunk-without-done",
        clause: id::BS_REP_PERCTX_1,
        case: STRUCTURE,
        map_error: Some("BS-REP-PERCTX-1"),
        peer: || flooded(Duration::ZERO, |r| status_chunk(r, 0, 1)),
    },
    Hostile {
        name: "a-chunk-every-4s-without-done",
        clause: id::BS_COMPLETE_1,
        case: STRUCTURE,
        map_error: Some("timed out after 6s waiting for a whole reply"),
        peer: || flooded(Duration::from_secs(4), |r| status_chunk(r, 0, 1)),
    },
    Hostile {
        name: "descriptors-by-the-million-without-done",
        clause: id::BS_REP_PERCTX_1,
        case: STRUCTURE,
        map_error: Some("BS-REP-PERCTX-1"),
        peer: || flooded(Duration::ZERO, |r| status_chunk(r, 0, 100_000)),
    },
    Hostile {
        name: "200k-contexts-nobody-asked-for",
        clause: id::SMC_REPLY_1,
        case: STRUCTURE,
        map_error: None,
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .flood_option(reply_type::META_CONTEXT, Some(200_000), |i| {
                    let mut data = BytesMut::new();
                    let id = u32::try_from(i + 2).unwrap_or(u32::MAX);
                    encode_meta_context_reply(&mut data, id, &format!("x-hostile:ctx-{i}"));
                    data.to_vec()
                })
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, 1)
                .ack()
                .answer_all(|r| answer_or_read(r, 0, 0xa5))
        },
    },
];

/// The whole handshake, one request, then `build`'s bytes for it sent `every` apart forever.
fn flooded(every: Duration, build: fn(&Request) -> Vec<u8>) -> Peer {
    Peer::new()
        .negotiated(PLAIN_SIZE)
        .request()
        .flood(every, build)
}

/// A status chunk for context 1 with `flags`, of `count` descriptors that split the request
/// evenly (the last takes the rest), all allocated data.
fn status_chunk(r: &Request, flags: u16, count: u64) -> Vec<u8> {
    let each = (r.length / count).max(1);
    let descriptors = (0..count)
        .map(|i| Descriptor {
            length: if i + 1 == count {
                r.length.saturating_sub(each * i).max(1)
            } else {
                each
            },
            flags: 0,
        })
        .collect();
    let body = ChunkBody::BlockStatus {
        context_id: 1,
        descriptors,
    };
    let mut out = BytesMut::new();
    encode_chunk(&mut out, false, flags, r.cookie, 0, &body);
    out.to_vec()
}
