//! Proofs for the structure of block-status replies: chunks, flags, descriptors, extended
//! chunks, and the error replies of a request a correct server refuses.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno, transmission_flag as tf};
use crate::wire::reply::{encode_chunk, ChunkBody, Descriptor, ReplyHeader};

pub(super) static PROOFS: &[Proof] = &[
    // The 2016 draft's replies.
    Proof {
        name: "draft-parameter-length-not-a-multiple-of-14",
        clause: id::DRAFT_DESC_LEN_1,
        case: "draft.alloc.single-request",
        peer: || {
            draft(&[
                |r, out| {
                    simple(out, r.cookie, 0);
                    out.put_u32(15);
                    out.put_u64(r.offset);
                    out.put_u32(r.length as u32);
                    out.put_u16(0);
                    out.put_u8(0);
                },
                draft_right,
            ])
        },
    },
    Proof {
        name: "draft-descriptor-of-length-zero",
        clause: id::DRAFT_DESC_NZ_1,
        case: "draft.alloc.unaligned",
        peer: || {
            draft(&[
                |r, out| draft_status(out, r, &[(r.offset, 0, 0), (r.offset, r.length as u32, 0)]),
                draft_right,
                draft_right,
            ])
        },
    },
    Proof {
        name: "draft-descriptors-cover-half-the-request",
        clause: id::DRAFT_DESC_COVER_1,
        case: "draft.alloc.single-request",
        peer: || {
            draft(&[
                |r, out| draft_status(out, r, &[(r.offset, (r.length / 2) as u32, 0)]),
                draft_right,
            ])
        },
    },
    Proof {
        name: "status-chunk-without-descriptors",
        clause: id::BS_REP_ATLEAST1_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[])),
    },
    Proof {
        name: "extended-chunk-of-a-terabyte",
        clause: id::EH_REP_3,
        case: EXTENDED_STRUCTURE,
        peer: || {
            extended_answer(|r, out| {
                ReplyHeader::Extended {
                    flags: DONE,
                    chunk_type: chunk_type::BLOCK_STATUS_EXT,
                    cookie: r.cookie,
                    offset: r.offset,
                    length: 1 << 40,
                }
                .encode(out);
            })
        },
    },
    Proof {
        name: "block-status-in-a-simple-reply",
        clause: id::BS_NEG_3,
        case: STRUCTURE,
        peer: block_status_in_a_simple_reply,
    },
    Proof {
        name: "chunk-of-an-unknown-type",
        clause: id::CHUNK_UNKTYPE_1,
        case: STRUCTURE,
        peer: || {
            // Type 42 is no type the protocol defines, and without the error bit the client
            // must hang up on it; DONE is left off, so only that stops the wait for more.
            answered(|r, out| {
                ReplyHeader::Structured {
                    flags: 0,
                    chunk_type: 42,
                    cookie: r.cookie,
                    length: 4,
                }
                .encode(out);
                out.put_u32(0);
            })
        },
    },
    Proof {
        name: "status-chunk-with-an-unknown-reply-flag",
        clause: id::CHUNK_FLAGS_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE | 0x2, &[(r.length, 0)])),
    },
    Proof {
        name: "none-chunk-before-the-status",
        clause: id::CHUNK_NONE_1,
        case: STRUCTURE,
        peer: || {
            answered(|r, out| {
                encode_chunk(out, false, 0, r.cookie, 0, &ChunkBody::None);
                status(out, r, DONE, &[(r.length, 0)]);
            })
        },
    },
    Proof {
        name: "simple-reply-after-a-status-chunk",
        clause: id::CHUNK_DONE_1,
        case: STRUCTURE,
        peer: || {
            answered(|r, out| {
                status(out, r, 0, &[(r.length, 0)]);
                simple(out, r.cookie, 0);
            })
        },
    },
    Proof {
        name: "extended-status-chunk-without-extended-headers",
        clause: id::BS_EXT_GATE_1,
        case: STRUCTURE,
        peer: || {
            answered(|r, out| {
                let body = ChunkBody::BlockStatusExt {
                    context_id: 1,
                    count: 1,
                    descriptors: vec![Descriptor {
                        length: r.length,
                        flags: 0,
                    }],
                };
                encode_chunk(out, false, DONE, r.cookie, 0, &body);
            })
        },
    },
    Proof {
        name: "reserved-allocation-bit-set",
        clause: id::ALLOC_RSV_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[(r.length, 0x4)])),
    },
    Proof {
        name: "neighbours-with-the-same-status",
        clause: id::BS_REP_DIFF_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[(4096, 0), (r.length - 4096, 0)])),
    },
    Proof {
        name: "boundary-off-512",
        clause: id::BS_REP_512_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[(1000, 0), (r.length - 1000, 3)])),
    },
    Proof {
        name: "extended-status-chunk-of-ragged-length",
        clause: id::BS_EXT_LEN_1,
        case: EXTENDED_STRUCTURE,
        peer: || {
            extended_answer(|r, out| {
                // Context id and count, one 16-byte descriptor, then 4 stray bytes.
                let mut payload = BytesMut::new();
                payload.put_u32(1);
                payload.put_u32(1);
                payload.put_u64(r.length);
                payload.put_u64(0);
                payload.put_u32(0);
                ReplyHeader::Extended {
                    flags: DONE,
                    chunk_type: chunk_type::BLOCK_STATUS_EXT,
                    cookie: r.cookie,
                    offset: r.offset,
                    length: payload.len() as u64,
                }
                .encode(out);
                out.extend_from_slice(&payload);
            })
        },
    },
    Proof {
        name: "extended-descriptor-of-length-zero",
        clause: id::BS_EXT_NZ_1,
        case: EXTENDED_STRUCTURE,
        peer: || extended_answer(|r, out| extended_status(out, r, &[(0, 0), (r.length, 3)])),
    },
    Proof {
        name: "high-status-bits-for-base-allocation",
        clause: id::BS_EXT_HI_1,
        case: EXTENDED_STRUCTURE,
        peer: || extended_answer(|r, out| extended_status(out, r, &[(r.length, 1 << 40)])),
    },
    Proof {
        name: "descriptors-past-the-export-end",
        clause: id::BS_REP_EOF_1,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[(PLAIN_SIZE * 2, 0)])),
    },
    Proof {
        name: "last-descriptor-past-the-request",
        clause: id::BS_REP_SUM_2,
        case: STRUCTURE,
        peer: || answered(|r, out| status(out, r, DONE, &[(r.length * 2, 0)])),
    },
    Proof {
        name: "error-chunk-with-error-zero",
        clause: id::ERRCHUNK_NONZERO_1,
        case: REFUSED,
        peer: || refused(|r, out| error_chunk(out, r, chunk_type::ERROR, 0, None)),
    },
    Proof {
        name: "error-offset-chunk-too-short",
        clause: id::ERRCHUNK_OFF_1,
        case: REFUSED,
        peer: || {
            refused(|r, out| {
                // Error value and message length, but no 8-byte offset after them.
                let payload = [0, 0, 0, 22, 0, 0];
                ReplyHeader::Structured {
                    flags: DONE,
                    chunk_type: chunk_type::ERROR_OFFSET,
                    cookie: r.cookie,
                    length: payload.len() as u32,
                }
                .encode(out);
                out.extend_from_slice(&payload);
            })
        },
    },
    Proof {
        name: "error-offset-outside-the-request",
        clause: id::BS_ERR_OFFSET_1,
        case: REFUSED,
        peer: || {
            refused(|r, out| {
                let outside = r.offset + r.length + 4096;
                error_chunk(
                    out,
                    r,
                    chunk_type::ERROR_OFFSET,
                    errno::EINVAL,
                    Some(outside),
                )
            })
        },
    },
    Proof {
        name: "two-error-chunks-in-one-reply",
        clause: id::ERRCHUNK_ERR_2,
        case: REFUSED,
        peer: || {
            refused(|r, out| {
                let body = |message: &str| ChunkBody::Error {
                    chunk_type: chunk_type::ERROR,
                    error: errno::EINVAL,
                    message: message.into(),
                    offset: None,
                };
                encode_chunk(out, false, 0, r.cookie, 0, &body("past the end"));
                encode_chunk(out, false, DONE, r.cookie, 0, &body("really"));
            })
        },
    },
    Proof {
        name: "one-offset-in-two-error-chunks",
        clause: id::ERRCHUNK_OFF_2,
        case: REFUSED,
        peer: || {
            refused(|r, out| {
                let body = ChunkBody::Error {
                    chunk_type: chunk_type::ERROR_OFFSET,
                    error: errno::EINVAL,
                    message: String::new(),
                    offset: Some(r.offset),
                };
                encode_chunk(out, false, 0, r.cookie, 0, &body);
                encode_chunk(out, false, DONE, r.cookie, 0, &body);
            })
        },
    },
    Proof {
        name: "refusal-with-eoverflow",
        clause: id::BS_ERR_EOVF_1,
        case: REFUSED,
        peer: || refused(|r, out| error_chunk(out, r, chunk_type::ERROR, errno::EOVERFLOW, None)),
    },
    Proof {
        name: "a-chunk-after-the-final-one",
        clause: id::CHUNK_DONELAST_1,
        case: REFUSED,
        peer: || {
            refused(|r, out| {
                error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None);
                status(out, r, DONE, &[(r.length, 0)]);
            })
        },
    },
    Proof {
        name: "refusal-in-a-simple-reply",
        clause: id::BS_ERR_CHUNK_1,
        case: REFUSED,
        peer: || refused(|r, out| simple(out, r.cookie, errno::EINVAL)),
    },
    Proof {
        name: "refusal-with-enotsup",
        clause: id::BS_ERR_NOTSUP_1,
        case: REFUSED,
        peer: || refused(|r, out| error_chunk(out, r, chunk_type::ERROR, errno::ENOTSUP, None)),
    },
    Proof {
        name: "refusal-with-an-undefined-error-value",
        clause: id::ERRNO_SET_1,
        case: REFUSED,
        peer: || refused(|r, out| error_chunk(out, r, chunk_type::ERROR, 99, None)),
    },
    Proof {
        name: "structured-chunk-without-structured-replies",
        clause: id::SR_GATE_1,
        case: "bs.neg.no-structured-replies",
        peer: || {
            Peer::new()
                .plain_go(PLAIN_SIZE, tf::HAS_FLAGS, &[])
                .request()
                .answer(|r, out| {
                    error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None);
                })
                .pause(Duration::from_secs(5))
        },
    },
];
