//! Proofs for requests: ones a correct server refuses, accepted; ones it must accept, refused;
//! a close where the spec says a server should not close.

use std::time::Duration;

use bytes::BytesMut;

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno, option, transmission_flag as tf};
use crate::wire::reply::{encode_chunk, ChunkBody};
use crate::wire::request::Request;

pub(super) static PROOFS: &[Proof] = &[
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
                .reply(|r| {
                    let mut out = BytesMut::new();
                    encode_chunk(&mut out, false, DONE, r.cookie, 0, &ChunkBody::None);
                    out.to_vec()
                })
                .request()
                .reply(|r| {
                    let mut out = BytesMut::new();
                    let body = ChunkBody::OffsetData {
                        offset: r.offset,
                        data: vec![0u8; r.length as usize].into(),
                    };
                    encode_chunk(&mut out, false, DONE, r.cookie, 0, &body);
                    out.to_vec()
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
                .reply(|r| {
                    let mut out = BytesMut::new();
                    simple(&mut out, r.cookie, 0);
                    out.to_vec()
                })
                .request()
                .reply(|r| {
                    let mut out = BytesMut::new();
                    let data = vec![0u8; r.length as usize];
                    let body = ChunkBody::OffsetData {
                        offset: r.offset,
                        data: data.into(),
                    };
                    encode_chunk(&mut out, false, DONE, r.cookie, 0, &body);
                    out.to_vec()
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
                .reply(|r| {
                    let mut out = BytesMut::new();
                    error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None);
                    out.to_vec()
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
