//! Scripted servers that each break one rule no fault of the reference server breaks (a GO
//! without the export's size, a status reply that is simple): the proof that a check fires for
//! clauses the reference server is built never to break (design §7). [`PROOFS`] is the one list
//! of them; the `selftest::scripted::` trials of `cargo test` run each proof's case against its
//! peer and assert the clause is reported, graded as its level says, and `nbd-conform list
//! --coverage` counts them.

mod limits;
mod peer;

use std::time::Duration;

use bytes::BytesMut;

use crate::clauses::{id, ClauseId};
use crate::wire::consts::{chunk_type, errno, option, reply_type, transmission_flag as tf};
use crate::wire::handshake::{BlockSizes, Greeting, Info};
use crate::wire::reply::{encode_chunk, ChunkBody, Descriptor, ReplyHeader};
use crate::wire::request::Request;

pub use peer::{Listening, Peer};

/// One scripted server and the clause it breaks.
pub struct Proof {
    /// The trial's name: `selftest::scripted::NAME`.
    pub name: &'static str,
    /// The one clause the peer breaks: the case must report it.
    pub clause: ClauseId,
    /// The case run against the peer (its id).
    pub case: &'static str,
    /// The script of the peer's one connection.
    pub peer: fn() -> Peer,
}

/// Every scripted proof.
pub static PROOFS: &[Proof] = &[
    Proof {
        name: "go-without-the-export-size",
        clause: id::GO_ACK_1,
        case: WHAT_GO_SAYS,
        peer: go_without_the_export_size,
    },
    Proof {
        name: "block-status-in-a-simple-reply",
        clause: id::BS_NEG_3,
        case: STRUCTURE,
        peer: block_status_in_a_simple_reply,
    },
    Proof {
        name: "minimum-block-not-a-power-of-two",
        clause: id::SIZE_MIN_1,
        case: WHAT_GO_SAYS,
        peer: || plain_go_with_sizes(3, 4096, 1 << 20),
    },
    Proof {
        name: "preferred-block-below-512",
        clause: id::SIZE_PREF_1,
        case: WHAT_GO_SAYS,
        peer: || plain_go_with_sizes(1, 256, 1 << 20),
    },
    Proof {
        name: "maximum-payload-below-preferred",
        clause: id::SIZE_MAX_1,
        case: WHAT_GO_SAYS,
        peer: || plain_go_with_sizes(1, 4096, 2048),
    },
    Proof {
        name: "export-size-off-the-minimum-block",
        clause: id::SIZE_MIN_2,
        case: WHAT_GO_SAYS,
        peer: || Peer::new().plain_go(PLAIN_SIZE + 1, tf::HAS_FLAGS, &[sizes(4096, 4096, 1 << 20)]),
    },
    Proof {
        name: "send-df-with-simple-replies",
        clause: id::TX_DF_1,
        case: WHAT_GO_SAYS,
        peer: || Peer::new().plain_go(PLAIN_SIZE, tf::HAS_FLAGS | tf::SEND_DF, &[]),
    },
    Proof {
        name: "block-status-payload-without-extended-headers",
        clause: id::TX_BSPL_1,
        case: WHAT_GO_SAYS,
        peer: || Peer::new().plain_go(PLAIN_SIZE, tf::HAS_FLAGS | tf::BLOCK_STATUS_PAYLOAD, &[]),
    },
    Proof {
        name: "transmission-flags-without-has-flags",
        clause: id::TX_HASFLAGS_1,
        case: WHAT_GO_SAYS,
        peer: || Peer::new().plain_go(PLAIN_SIZE, 0, &[]),
    },
    Proof {
        name: "handshake-flags-beyond-bit-1",
        clause: id::HS_HFLAGS_1,
        case: WHAT_GO_SAYS,
        peer: || {
            Peer::new()
                .greet_with(Greeting::new(3 | 1 << 5))
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
        },
    },
    Proof {
        name: "greeting-with-a-wrong-magic",
        clause: id::HS_GREET_1,
        case: WHAT_GO_SAYS,
        peer: || {
            let mut greeting = Greeting::new(3);
            greeting.option_magic ^= 1;
            Peer::new()
                .greet_with(greeting)
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "greeting-without-fixed-newstyle",
        clause: id::HS_FIXED_1,
        case: WHAT_GO_SAYS,
        peer: || {
            Peer::new()
                .greet_with(Greeting::new(0))
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "export-info-too-long",
        clause: id::GO_EXPORT_1,
        case: WHAT_GO_SAYS,
        peer: || {
            // NBD_INFO_EXPORT is exactly 12 bytes; two trailing zeroes break it.
            let mut data = BytesMut::new();
            Info::Export {
                size: PLAIN_SIZE,
                flags: tf::HAS_FLAGS,
            }
            .encode(&mut data);
            data.extend_from_slice(&[0, 0]);
            Peer::new()
                .greet()
                .option(option::GO)
                .option_reply(reply_type::INFO, &data)
                .ack()
        },
    },
    // Option haggling: each case's expectation, shown to fire.
    Proof {
        name: "list-answers-an-unknown-namespace",
        clause: id::LMC_UNKNS_1,
        case: "neg.list.unknown-namespace-ignored",
        peer: || listed(&[(0, "x-conformance-nonexistent:foo")]),
    },
    Proof {
        name: "list-answers-queries-that-match-nothing",
        clause: id::LMC_NOMATCH_1,
        case: "neg.list.no-match",
        peer: || listed(&[(0, "base:allocation")]),
    },
    Proof {
        name: "list-of-everything-without-base-allocation",
        clause: id::LMC_ALL_1,
        case: "neg.list.no-queries-lists-all",
        peer: || listed(&[]),
    },
    Proof {
        name: "list-names-a-context-without-a-namespace",
        clause: id::MC_NAME_1,
        case: "neg.list.no-queries-lists-all",
        peer: || listed(&[(0, "base:allocation"), (0, "no-namespace-here")]),
    },
    Proof {
        name: "list-hands-out-context-ids",
        clause: id::LMC_ID_1,
        case: "neg.list.qemu-wildcard",
        peer: || listed(&[(5, "qemu:allocation-depth")]),
    },
    Proof {
        name: "set-of-no-queries-selects-a-context",
        clause: id::SMC_ZEROQ_1,
        case: "neg.set.no-queries-selects-nothing",
        peer: || set_answered(&[(1, "base:allocation")]),
    },
    Proof {
        name: "set-of-the-base-wildcard-selects-a-context",
        clause: id::BASE_SETWILD_1,
        case: "neg.set.base-wildcard-selects-nothing",
        peer: || set_answered(&[(1, "base:allocation")]),
    },
    Proof {
        name: "unknown-option-gets-err-invalid",
        clause: id::HS_UNSUP_1,
        case: "neg.option.unknown-gets-unsup",
        peer: || {
            Peer::new()
                .greet()
                .any_option()
                .option_reply(reply_type::ERR_INVALID, &[])
        },
    },
    Proof {
        name: "abort-refused",
        clause: id::ABORT_ACK_1,
        case: "neg.abort.ack",
        peer: || {
            Peer::new()
                .greet()
                .option(option::ABORT)
                .option_reply(reply_type::ERR_INVALID, &[])
        },
    },
    Proof {
        name: "structured-reply-with-data-accepted",
        clause: id::SR_NODATA_1,
        case: "neg.sr.with-data",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::STRUCTURED_REPLY)
                .ack()
        },
    },
    Proof {
        name: "info-with-an-unknown-type-refused",
        clause: id::GO_IGNORE_1,
        case: "neg.info.unknown-info-type-ignored",
        peer: || {
            Peer::new()
                .greet()
                .option(option::INFO)
                .option_reply(reply_type::ERR_UNSUP, &[])
        },
    },
    Proof {
        name: "go-to-an-unknown-export-gets-err-invalid",
        clause: id::GO_UNKNOWN_1,
        case: "neg.go.unknown-export",
        peer: || {
            Peer::new()
                .greet()
                .option(option::GO)
                .option_reply(reply_type::ERR_INVALID, &[])
        },
    },
    // Block-status replies: what the structure checks read on every reply.
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
    // Error replies, read where a case makes a correct server refuse.
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
                .reply(|r| {
                    let mut out = BytesMut::new();
                    error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None);
                    out.to_vec()
                })
                .pause(Duration::from_secs(5))
        },
    },
    // What advertised block sizes bind a server to (src/scripted/limits.rs).
    Proof {
        name: "unaligned-request-answered",
        clause: id::BS_REQ_ALIGN_1,
        case: "bs.min-block.unaligned-offset",
        peer: limits::unaligned_request_answered,
    },
    Proof {
        name: "descriptors-past-the-maximum-payload",
        clause: id::CHUNK_SRVCTL_1,
        case: MAX_PAYLOAD,
        peer: limits::descriptors_past_the_maximum,
    },
    Proof {
        name: "error-message-past-the-maximum-payload",
        clause: id::CHUNK_MAXPL_1,
        case: MAX_PAYLOAD,
        peer: limits::error_message_past_the_maximum,
    },
];

/// The case that reads status chunks and a refusal against the advertised maximum payload.
const MAX_PAYLOAD: &str = "bs.max-payload.chunks";

/// The case that reads one plain block-status reply for its structure.
const STRUCTURE: &str = "bs.reply.structure";

/// A case whose request a correct server refuses (it reaches past the end).
const REFUSED: &str = "bs.range.past-end";

const DONE: u16 = crate::wire::consts::reply_flag::DONE;

/// The whole handshake (base:allocation as context 1, an export of [`PLAIN_SIZE`]), then one
/// request answered with what `answer` writes, then a pause so that the case reads it all.
fn answered(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated(PLAIN_SIZE)
        .request()
        .reply(move |r| {
            let mut out = BytesMut::new();
            answer(r, &mut out);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}

/// As [`answered`], and the case's next request (the still-alive probe) answered right, so
/// that a refusal graded as a warning stays one.
fn refused(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated(PLAIN_SIZE)
        .request()
        .reply(move |r| {
            let mut out = BytesMut::new();
            answer(r, &mut out);
            out.to_vec()
        })
        .request()
        .reply(|r| {
            let mut out = BytesMut::new();
            status(&mut out, r, DONE, &[(r.length, 0)]);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}

/// A compact status chunk for context 1: (length, status) per descriptor.
fn status(out: &mut BytesMut, r: &Request, flags: u16, descriptors: &[(u64, u64)]) {
    let body = ChunkBody::BlockStatus {
        context_id: 1,
        descriptors: descriptors
            .iter()
            .map(|&(length, flags)| Descriptor { length, flags })
            .collect(),
    };
    encode_chunk(out, false, flags, r.cookie, 0, &body);
}

fn simple(out: &mut BytesMut, cookie: u64, error: u32) {
    ReplyHeader::Simple { error, cookie }.encode(out);
}

fn error_chunk(out: &mut BytesMut, r: &Request, kind: u16, error: u32, offset: Option<u64>) {
    let body = ChunkBody::Error {
        chunk_type: kind,
        error,
        message: String::new(),
        offset,
    };
    encode_chunk(out, false, DONE, r.cookie, 0, &body);
}

/// An error chunk without an offset, with `message`.
fn error_chunk_with(out: &mut BytesMut, r: &Request, kind: u16, error: u32, message: String) {
    let body = ChunkBody::Error {
        chunk_type: kind,
        error,
        message,
        offset: None,
    };
    encode_chunk(out, false, DONE, r.cookie, 0, &body);
}

/// Structured replies accepted, then a LIST answered with `contexts` (id, name) and ACK.
fn listed(contexts: &[(u32, &str)]) -> Peer {
    meta_context_answer(option::LIST_META_CONTEXT, contexts)
}

/// Structured replies accepted, then a SET answered with `contexts` (id, name) and ACK.
fn set_answered(contexts: &[(u32, &str)]) -> Peer {
    meta_context_answer(option::SET_META_CONTEXT, contexts)
}

fn meta_context_answer(opt: u32, contexts: &[(u32, &str)]) -> Peer {
    let mut peer = Peer::new()
        .greet()
        .option(option::STRUCTURED_REPLY)
        .ack()
        .option(opt);
    for (id, name) in contexts {
        peer = peer.meta_context(*id, name);
    }
    peer.ack()
}

/// The case that reads what GO says on a connection with simple replies.
const WHAT_GO_SAYS: &str = "neg.go.what-go-says";

/// The size of the exports the plain-GO peers announce.
const PLAIN_SIZE: u64 = 4 << 20;

fn sizes(minimum: u32, preferred: u32, maximum: u32) -> Info {
    Info::BlockSize(BlockSizes {
        minimum,
        preferred,
        maximum,
    })
}

fn plain_go_with_sizes(minimum: u32, preferred: u32, maximum: u32) -> Peer {
    Peer::new().plain_go(
        PLAIN_SIZE,
        tf::HAS_FLAGS,
        &[sizes(minimum, preferred, maximum)],
    )
}

/// GO acknowledged without NBD_INFO_EXPORT: the client cannot know the size.
fn go_without_the_export_size() -> Peer {
    Peer::new().greet().option(option::GO).ack()
}

/// A successful block status answered with a simple reply (it must be structured).
fn block_status_in_a_simple_reply() -> Peer {
    Peer::new()
        .negotiated(4 << 20)
        .request()
        .reply(|r| {
            let mut out = BytesMut::new();
            ReplyHeader::Simple {
                error: 0,
                cookie: r.cookie,
            }
            .encode(&mut out);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::case::{cases_dir, load_cases};

    /// A proof runs a case that names the clause it proves, so that what fires is what the
    /// case claims to check.
    #[test]
    fn every_proof_runs_a_case_that_names_its_clause() {
        let cases = load_cases(&cases_dir()).expect("the cases load");
        let mut names = std::collections::BTreeSet::new();
        for proof in PROOFS {
            assert!(names.insert(proof.name), "two proofs named {}", proof.name);
            let case = cases.iter().find(|c| c.id == proof.case);
            let case = case.unwrap_or_else(|| panic!("{}: no case {}", proof.name, proof.case));
            assert!(
                case.clauses.contains(&proof.clause),
                "{}: {} does not name {}",
                proof.name,
                case.id,
                proof.clause
            );
        }
    }
}
