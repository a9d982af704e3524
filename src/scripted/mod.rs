//! Scripted servers that each break one rule no fault of the reference server breaks (a GO
//! without the export's size, a status reply that is simple): the proof that a check fires for
//! clauses the reference server is built never to break (design §7). [`PROOFS`] is the one list
//! of them. A peer's script is written for its case's fixture, so the trial grades it with that
//! fixture's truth, as it would a server the harness launched on it; the `selftest::scripted::` trials of `cargo test` run each proof's case against its
//! peer and assert the clause is reported, graded as its level says, and `nbd-conform list
//! --coverage` counts them.

mod peer;

use std::time::Duration;

use bytes::{BufMut, BytesMut};

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
    Proof {
        name: "list-names-an-unregistered-namespace",
        clause: id::MC_NS_1,
        case: "neg.list.no-queries-lists-all",
        peer: || listed(&[(0, "base:allocation"), (0, "vendor:thing")]),
    },
    Proof {
        name: "list-with-an-info-reply-among-its-contexts",
        clause: id::LMC_SHAPE_1,
        case: "neg.list.no-queries-lists-all",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::LIST_META_CONTEXT)
                .meta_context(0, "base:allocation")
                .info(Info::Name("conform".into()))
                .ack()
        },
    },
    Proof {
        name: "list-names-a-context-with-a-nul",
        clause: id::GEN_STR_1,
        case: "neg.list.no-queries-lists-all",
        peer: || listed(&[(0, "base:allocation"), (0, "x-vendor:a\0b")]),
    },
    Proof {
        name: "starttls-answered-tls-required",
        clause: id::TLS_NOTLS_1,
        case: "neg.option.starttls-without-tls",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STARTTLS)
                .option_reply(reply_type::ERR_TLS_REQD, &[])
        },
    },
    Proof {
        name: "go-unsupported-after-extended-headers",
        clause: id::GO_UNSUP_2,
        case: "eh.neg.go-after-eh",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::GO)
                .option_reply(reply_type::ERR_UNSUP, &[])
        },
    },
    Proof {
        name: "go-says-other-flags-than-info",
        clause: id::GO_SAME_1,
        case: "neg.info.then-go",
        peer: || {
            Peer::new()
                .greet()
                .option(option::INFO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS | tf::READ_ONLY)
                .ack()
        },
    },
    Proof {
        name: "go-demands-block-sizes-it-was-asked-for",
        clause: id::GO_BSREQD_1,
        case: WHAT_GO_SAYS,
        peer: || {
            Peer::new()
                .greet()
                .option(option::GO)
                .option_reply(reply_type::ERR_BLOCK_SIZE_REQD, &[])
        },
    },
    Proof {
        name: "go-insists-on-extended-headers",
        clause: id::EH_REQD_1,
        case: WHAT_GO_SAYS,
        peer: || {
            Peer::new()
                .greet()
                .option(option::GO)
                .option_reply(reply_type::ERR_EXT_HEADER_REQD, &[])
        },
    },
    Proof {
        name: "go-sends-the-export-info-twice",
        clause: id::GO_ONCE_1,
        case: WHAT_GO_SAYS,
        peer: || {
            Peer::new().plain_go(
                PLAIN_SIZE,
                tf::HAS_FLAGS,
                &[Info::Export {
                    size: PLAIN_SIZE,
                    flags: tf::HAS_FLAGS,
                }],
            )
        },
    },
    Proof {
        name: "list-names-a-context-of-300-bytes",
        clause: id::GEN_STR_2,
        case: "neg.list.no-queries-lists-all",
        peer: || {
            let long = format!("x-vendor:{}", "a".repeat(300));
            let mut peer = Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::LIST_META_CONTEXT)
                .meta_context(0, "base:allocation");
            peer = peer.meta_context(0, &long);
            peer.ack()
        },
    },
    Proof {
        name: "unknown-client-flag-not-hung-up-on",
        clause: id::HS_CFLAGS_3,
        case: "neg.client-flags.unknown-bit-closes",
        peer: || Peer::new().greet().any_option().ack(),
    },
    Proof {
        name: "hangs-up-after-err-unsup",
        clause: id::HS_NOHARD_1,
        case: "neg.option.unknown-gets-unsup",
        peer: || {
            Peer::new()
                .greet()
                .any_option()
                .option_reply(reply_type::ERR_UNSUP, &[])
        },
    },
    Proof {
        name: "abort-with-data-refused",
        clause: id::ABORT_DATA_1,
        case: "neg.abort.with-data",
        peer: || {
            Peer::new()
                .greet()
                .option(option::ABORT)
                .option_reply(reply_type::ERR_INVALID, &[])
        },
    },
    Proof {
        name: "structured-replies-refused-as-invalid",
        clause: id::SR_REPLY_1,
        case: "neg.list.exact-name",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .option_reply(reply_type::ERR_INVALID, &[])
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "structured-replies-accepted-after-extended-headers",
        clause: id::SR_EHREQD_1,
        case: "eh.neg.sr-after-eh",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::STRUCTURED_REPLY)
                .ack()
        },
    },
    Proof {
        name: "extended-headers-with-data-accepted",
        clause: id::EH_NODATA_1,
        case: "eh.neg.with-data",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::EXTENDED_HEADERS)
                .ack()
        },
    },
    Proof {
        name: "extended-headers-refused-as-invalid",
        clause: id::EH_NOSR_1,
        case: "eh.neg.go-after-eh",
        peer: || {
            Peer::new()
                .greet()
                .option(option::EXTENDED_HEADERS)
                .option_reply(reply_type::ERR_INVALID, &[])
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
        },
    },
    Proof {
        name: "go-unsupported-with-extended-headers",
        clause: id::EH_GO_1,
        case: "eh.neg.sr-then-eh",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::EXTENDED_HEADERS)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .option_reply(reply_type::ERR_UNSUP, &[])
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "list-of-a-query-reaching-past-the-option-accepted",
        clause: id::LMC_SYNTAX_1,
        case: "neg.list.malformed-query-length",
        peer: || listed(&[]),
    },
    Proof {
        name: "list-of-one-name-answers-two",
        clause: id::LMC_MATCH_1,
        case: "neg.list.exact-name",
        peer: || listed(&[(0, "base:allocation"), (0, "x-vendor:extra")]),
    },
    Proof {
        name: "list-of-the-base-wildcard-answers-nothing",
        clause: id::BASE_LISTWILD_1,
        case: "neg.list.base-wildcard",
        peer: || listed(&[]),
    },
    Proof {
        name: "list-of-an-unknown-base-leaf-answers-it",
        clause: id::BASE_UNKLEAF_1,
        case: "neg.list.base-unknown-leaf",
        peer: || listed(&[(0, "base:no-such-leaf")]),
    },
    Proof {
        name: "set-of-the-qemu-wildcard-selects-a-context",
        clause: id::QEMU_SETWILD_1,
        case: "neg.set.qemu-wildcard-selects-nothing",
        peer: || set_answered(&[(1, "qemu:allocation-depth")]),
    },
    Proof {
        name: "set-before-structured-replies-accepted",
        clause: id::SMC_PRE_1,
        case: "neg.set.before-structured-replies",
        peer: || {
            Peer::new()
                .greet()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
        },
    },
    Proof {
        name: "list-without-extended-headers-refused",
        clause: id::EH_LIST_1,
        case: "eh.neg.base-list-compact",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::LIST_META_CONTEXT)
                .option_reply(reply_type::ERR_INVALID, &[])
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
        },
    },
    Proof {
        name: "set-without-extended-headers-refused",
        clause: id::EH_SET_1,
        case: "eh.neg.base-list-compact",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::LIST_META_CONTEXT)
                .meta_context(0, "base:allocation")
                .ack()
                .option(option::SET_META_CONTEXT)
                .option_reply(reply_type::ERR_INVALID, &[])
        },
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
    // Extended status chunks.
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
    // Requests a correct server refuses, accepted: each case's expectation, shown to fire.
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
                .reply(|r| {
                    let mut out = BytesMut::new();
                    error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None);
                    out.to_vec()
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "allocation-depth-calls-backing-local",
        clause: id::QEMU_AD_1,
        case: "oracle.backing-chain.allocation-depth",
        peer: backing_called_local,
    },
    Proof {
        name: "dirty-bitmap-calls-everything-dirty",
        clause: id::QEMU_DB_PREC_1,
        case: "oracle.dirty-fine.dirty-bm512",
        peer: everything_dirty,
    },
];

/// The case that reads one plain block-status reply for its structure.
const STRUCTURE: &str = "bs.reply.structure";

/// The case that reads one plain block-status reply under extended headers.
const EXTENDED_STRUCTURE: &str = "eh.bs.reply-structure";

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

/// As [`answered`], with extended headers.
fn extended_answer(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated_extended(PLAIN_SIZE)
        .extended_request()
        .reply(move |r| {
            let mut out = BytesMut::new();
            answer(r, &mut out);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}

/// An extended status chunk for context 1, final: (length, status) per descriptor.
fn extended_status(out: &mut BytesMut, r: &Request, descriptors: &[(u64, u64)]) {
    let body = ChunkBody::BlockStatusExt {
        context_id: 1,
        count: descriptors.len() as u32,
        descriptors: descriptors
            .iter()
            .map(|&(length, flags)| Descriptor { length, flags })
            .collect(),
    };
    encode_chunk(out, true, DONE, r.cookie, r.offset, &body);
}

/// The whole handshake, then `requests` requests each answered with success: one descriptor
/// over the request (a server that refuses nothing).
fn accepting(requests: usize) -> Peer {
    let mut peer = Peer::new().negotiated(PLAIN_SIZE);
    for _ in 0..requests {
        peer = peer.request().reply(|r| {
            let mut out = BytesMut::new();
            status(&mut out, r, DONE, &[(r.length.max(1), 0)]);
            out.to_vec()
        });
    }
    peer.pause(Duration::from_secs(5))
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

/// `backing-chain` with `qemu:allocation-depth` as context 1, whose one whole-export map
/// request is answered as qemu-nbd does (tests/snapshots/oracle.backing-chain.allocation-depth
/// @qemu-nbd.snap) except that the backing file's first 512K are called local (1, not 2):
/// data still never absent, but a depth the fixture's layers do not give.
fn backing_called_local() -> Peer {
    const K: u64 = 1024;
    Peer::new()
        .greet()
        .option(option::STRUCTURED_REPLY)
        .ack()
        .option(option::SET_META_CONTEXT)
        .meta_context(1, "qemu:allocation-depth")
        .ack()
        .option(option::GO)
        .export_info(4 << 20, tf::HAS_FLAGS | tf::READ_ONLY)
        .ack()
        .request()
        .reply(|r| {
            let mut out = BytesMut::new();
            let depths = [
                (576 * K, 1),
                (192 * K, 2),
                (64 * K, 1),
                (192 * K, 2),
                (1024 * K, 0),
                (64 * K, 1),
                (960 * K, 0),
                (64 * K, 1),
                (960 * K, 0),
            ];
            status(&mut out, r, DONE, &depths);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}

/// `dirty-fine` with `qemu:dirty-bitmap:bm512` as context 1, whose map is one dirty extent:
/// every write is covered, and so is the data written before the bitmap.
fn everything_dirty() -> Peer {
    Peer::new()
        .greet()
        .option(option::STRUCTURED_REPLY)
        .ack()
        .option(option::SET_META_CONTEXT)
        .meta_context(1, "qemu:dirty-bitmap:bm512")
        .ack()
        .option(option::GO)
        .export_info(1 << 20, tf::HAS_FLAGS | tf::READ_ONLY)
        .ack()
        .request()
        .reply(|r| {
            let mut out = BytesMut::new();
            status(&mut out, r, DONE, &[(r.length, 1)]);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
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
