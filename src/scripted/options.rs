//! Proofs for option haggling: LIST and SET_META_CONTEXT answers, ABORT, repeated and
//! malformed options, extended headers negotiated or refused.

use std::time::Duration;

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno, option, reply_type, transmission_flag as tf};
use crate::wire::handshake::Info;

pub(super) static PROOFS: &[Proof] = &[
    // Freedoms the spec leaves a server (MAY: recorded as info), and derived rules.
    Proof {
        name: "list-before-structured-replies-refused-by-policy",
        clause: id::LMC_PRE_1,
        case: "neg.list.before-structured-replies",
        peer: || {
            Peer::new()
                .greet()
                .option(option::LIST_META_CONTEXT)
                .option_reply(reply_type::ERR_POLICY, &[])
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .answer_all(|r| answer_or_read(r, 0, 0))
        },
    },
    Proof {
        name: "repeated-structured-replies-refused-by-policy",
        clause: id::HS_REPEAT_1,
        case: "neg.sr.twice",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::STRUCTURED_REPLY)
                .option_reply(reply_type::ERR_POLICY, &[])
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .answer_all(|r| answer_or_read(r, 0, 0))
        },
    },
    Proof {
        name: "set-selects-an-unknown-namespace-too",
        clause: id::SMC_IGNORE_1,
        case: "neg.set.unknown-next-to-base",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "x-conformance-nonexistent:zzz")
                .meta_context(2, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .request()
                .answer(|r, out| {
                    status_of(out, r, 1, 0, &[(r.length, 0)]);
                    status_of(out, r, 2, DONE, &[(r.length, 0)]);
                })
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "list-forgets-the-selection",
        clause: id::LMC_NOSTATE_1,
        case: "neg.list.does-not-change-selection",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::LIST_META_CONTEXT)
                .ack()
                .option(option::LIST_META_CONTEXT)
                .meta_context(0, "base:allocation")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .request()
                .answer(|r, out| error_chunk(out, r, chunk_type::ERROR, errno::EINVAL, None))
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "failed-set-keeps-the-selection",
        clause: id::SMC_REPLACE_1,
        case: "neg.set.failed-set-clears-selection",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::SET_META_CONTEXT)
                .option_reply(reply_type::ERR_INVALID, &[])
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .answer_all(|r| answer_or_read(r, 0, 0))
        },
    },
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
        peer: || refuses(option::ABORT, reply_type::ERR_INVALID),
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
        peer: || refuses(option::ABORT, reply_type::ERR_INVALID),
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
];
