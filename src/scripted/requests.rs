//! Proofs for requests: ones a correct server refuses, accepted; ones it must accept, refused;
//! a close where the spec says a server should not close.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{
    chunk_type, command_flag, draft, errno, option, transmission_flag as tf,
};
use crate::wire::reply::{encode_chunk, ChunkBody};
use crate::wire::request::Request;

/// An export past 4 GiB, as the big fixtures are (4 GiB + 1 MiB).
const BIG: u64 = (4 << 30) + (1 << 20);

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "zero-length-block-status-answered-then-hung-up-on",
        clause: id::BS_REQ_ZERO_1,
        case: "bs.range.zero-length",
        peer: || {
            // Refuses the zero-length request, then hangs up before the still-alive probe is
            // answered: the same SHOULD NOT as a close before the reply.
            Peer::new()
                .negotiated(PLAIN_SIZE)
                .request()
                .answer(|r, out| error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None))
                .request()
                .next_connection()
                .negotiated(PLAIN_SIZE)
                .answer_all(|r| match r.length {
                    0 => einval(r),
                    _ => answer_or_read(r, 0, 0),
                })
        },
    },
    Proof {
        name: "read-in-a-simple-reply",
        clause: id::SR_PAYLOAD_1,
        case: "bs.neg.no-context-selected",
        peer: || {
            // Structured replies on, no context: the block status refused, then the still-alive
            // READ answered with a simple reply and its data, as an old server would.
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .request()
                .answer(|r, out| error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None))
                .request()
                .answer(|r, out| {
                    simple(out, r.cookie, 0);
                    out.extend_from_slice(&vec![0u8; r.length as usize]);
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "draft-zero-length-request-hung-up-on",
        clause: id::DRAFT_REQ_ZERO_1,
        case: "draft.error.zero-length",
        peer: || {
            // Hangs up on the first zero-length query; on the next connection every query is
            // answered (a zero-length one with an empty list, P = 0).
            Peer::new()
                .greet()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS | draft::SEND_GET_LBA_STATUS)
                .ack()
                .request()
                .next_connection()
                .greet()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS | draft::SEND_GET_LBA_STATUS)
                .ack()
                .answer_all(|r| {
                    let mut out = BytesMut::new();
                    match r.length {
                        0 => draft_status(&mut out, r, &[]),
                        _ => draft_right(r, &mut out),
                    }
                    out.to_vec()
                })
        },
    },
    Proof {
        name: "empty-filter-accepted",
        clause: id::BS_PAYLOAD_SHAPE_1,
        case: "eh.payload.empty-list",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS | tf::BLOCK_STATUS_PAYLOAD)
                .ack()
                .answer_all_extended(|r| {
                    // An empty filter answered as a success with nothing in it (no context
                    // listed, so no status chunk), the still-alive probe as usual.
                    let mut out = BytesMut::new();
                    if r.flags & command_flag::PAYLOAD_LEN != 0 {
                        encode_chunk(&mut out, true, DONE, r.cookie, r.offset, &ChunkBody::None);
                    } else {
                        extended_status(&mut out, r, &[(r.length, 0)]);
                    }
                    out.to_vec()
                })
        },
    },
    Proof {
        name: "bitmap-first-refused",
        clause: id::BS_REP_ORDER_1,
        case: "bs.multi.bitmap-first",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "qemu:dirty-bitmap:bm1")
                .meta_context(2, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .answer_all(einval)
        },
    },
    Proof {
        name: "pipelined-requests-refused",
        clause: id::BS_REQ_PIPE_1,
        case: "bs.pipeline.req-one",
        peer: || Peer::new().negotiated(2 << 20).answer_all(einval),
    },
    Proof {
        name: "hangs-up-on-a-bad-request-magic",
        clause: id::TX_VIOL_1,
        case: "tx.magic.bad-request-magic",
        peer: || {
            Peer::new()
                .negotiated(PLAIN_SIZE)
                .request()
                .next_connection()
                .negotiated(PLAIN_SIZE)
                .answer_all(|r| answer_or_read(r, 0, 0))
        },
    },
    Proof {
        name: "longest-compact-length-refused",
        clause: id::BS_REQ_BIG_1,
        case: "bs.big.max-compact-length-in-bounds",
        peer: || {
            Peer::new()
                .negotiated(BIG)
                .request()
                .answer(|r, out| {
                    error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None);
                })
                .answer_all(|r| answer_or_read(r, 0, 0))
        },
    },
    Proof {
        name: "extended-length-of-4g-refused",
        clause: id::BS_EXT_64_1,
        case: "eh.bs.length-4g-and-more",
        peer: || {
            Peer::new()
                .negotiated_extended(BIG)
                .extended_request()
                .answer(|r, out| extended_error(out, r, errno::EINVAL))
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "draft-dirtiness-query-refused",
        clause: id::DRAFT_DIRTY_1,
        case: "draft.dirty.single-request",
        peer: || {
            draft(&[
                |r, out| {
                    simple(out, r.cookie, errno::EINVAL);
                    out.put_u32(0);
                },
                draft_right,
                draft_right,
            ])
        },
    },
    Proof {
        name: "draft-request-past-the-end-answered",
        clause: id::DRAFT_REQ_OOB_1,
        case: "draft.error.past-end",
        peer: || draft(&[draft_right, draft_right, draft_right, draft_right]),
    },
    Proof {
        name: "extended-request-past-the-end-accepted",
        clause: id::BS_REQ_OOB_3,
        case: "eh.range.length-8g-on-small-export",
        peer: || {
            let to_the_end = |r: &Request| {
                let mut out = BytesMut::new();
                extended_status(&mut out, r, &[(PLAIN_SIZE - r.offset, 0)]);
                out.to_vec()
            };
            Peer::new()
                .negotiated_extended(PLAIN_SIZE)
                .extended_request()
                .reply(to_the_end)
                .extended_request()
                .reply(to_the_end)
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "extended-block-status-refused",
        clause: id::EH_WIRE_1,
        case: "eh.neg.twice",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .extended_request()
                .answer(|r, out| extended_error(out, r, errno::EINVAL))
                .pause(Duration::from_secs(5))
        },
    },
    // Writes, on a peer whose export is its script (the trials run with --writable).
    Proof {
        name: "write-refused",
        clause: id::BASELINE_1,
        case: "live.trim",
        peer: || writable(tf::SEND_TRIM, &[errno::EINVAL]),
    },
    Proof {
        name: "advertised-trim-refused",
        clause: id::TX_EXPOSE_1,
        case: "live.trim",
        peer: || writable(tf::SEND_TRIM, &[0, errno::EINVAL]),
    },
    Proof {
        name: "write-zeroes-with-no-hole-refused",
        clause: id::WZ_NOHOLE_1,
        case: "live.write-zeroes-no-hole",
        peer: || writable(tf::SEND_WRITE_ZEROES, &[0, errno::EINVAL]),
    },
    Proof {
        name: "block-status-without-contexts-accepted",
        clause: id::MC_NOCTX_1,
        case: "bs.neg.no-context-selected",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .request()
                .answer(|r, out| {
                    encode_chunk(out, false, DONE, r.cookie, 0, &ChunkBody::None);
                })
                .request()
                .answer(|r, out| {
                    let body = ChunkBody::OffsetData {
                        offset: r.offset,
                        data: vec![0u8; r.length as usize].into(),
                    };
                    encode_chunk(out, false, DONE, r.cookie, 0, &body);
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "block-status-with-df-accepted",
        clause: id::BS_REQ_FLAGS_1,
        case: "bs.flags.df",
        peer: || accepting(2),
    },
    Proof {
        name: "block-status-with-an-unknown-flag-accepted",
        clause: id::ERRNO_UNKFLAG_1,
        case: "bs.flags.unknown-bit-15",
        peer: || accepting(2),
    },
    Proof {
        name: "block-status-wrapping-past-2-64-accepted",
        clause: id::BS_REQ_OVF_1,
        case: "bs.range.offset-overflow",
        peer: || accepting(2),
    },
    Proof {
        name: "unknown-command-accepted",
        clause: id::BS_REQ_UNKCMD_1,
        case: "tx.cmd.unknown-command",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .request()
                .answer(|r, out| {
                    simple(out, r.cookie, 0);
                })
                .request()
                .answer(|r, out| {
                    let data = vec![0u8; r.length as usize];
                    let body = ChunkBody::OffsetData {
                        offset: r.offset,
                        data: data.into(),
                    };
                    encode_chunk(out, false, DONE, r.cookie, 0, &body);
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "block-status-with-fua-refused",
        clause: id::BS_REQ_FUA_1,
        case: "bs.flags.fua-advertised",
        peer: || {
            Peer::new()
                .haggled()
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS | tf::SEND_FUA)
                .ack()
                .request()
                .answer(|r, out| {
                    error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None);
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "zero-length-block-status-hangs-up",
        clause: id::BS_REQ_ZERO_1,
        case: "bs.range.zero-length",
        peer: || {
            // Hangs up on the first zero-length request; the case goes on on a new connection,
            // where everything is answered.
            let ok = |r: &Request| {
                let mut out = BytesMut::new();
                match r.length {
                    0 => error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None),
                    n => status(&mut out, r, DONE, &[(n, 0)]),
                }
                out.to_vec()
            };
            Peer::new()
                .negotiated(PLAIN_SIZE)
                .request()
                .next_connection()
                .negotiated(PLAIN_SIZE)
                .request()
                .reply(ok)
                .request()
                .reply(ok)
                .request()
                .reply(ok)
                .pause(Duration::from_secs(5))
        },
    },
];
