//! Proofs for the greeting, GO and INFO: what a server says on the way into transmission.

use std::time::Duration;

use bytes::BytesMut;

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{option, reply_type, transmission_flag as tf};
use crate::wire::handshake::{self, Greeting, Info};

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "block-size-info-of-12-bytes",
        clause: id::GO_BLKSZ_1,
        case: WHAT_GO_SAYS,
        peer: || {
            // NBD_INFO_BLOCK_SIZE is exactly 14 bytes; this one lacks its maximum's last half.
            let data = [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0x10, 0, 0];
            Peer::new()
                .greet()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .option_reply(reply_type::INFO, &data[..12])
                .ack()
        },
    },
    Proof {
        name: "go-answered-as-another-option",
        clause: id::HS_OPTREP_1,
        case: WHAT_GO_SAYS,
        peer: || {
            let mut ack = BytesMut::new();
            handshake::encode_option_reply(&mut ack, option::INFO, reply_type::ACK, &[]);
            Peer::new()
                .greet()
                .option(option::GO)
                .send(&ack)
                .pause(Duration::from_secs(5))
        },
    },
    Proof {
        name: "go-without-the-export-size",
        clause: id::GO_ACK_1,
        case: WHAT_GO_SAYS,
        peer: go_without_the_export_size,
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
    Proof {
        name: "info-with-an-unknown-type-refused",
        clause: id::GO_IGNORE_1,
        case: "neg.info.unknown-info-type-ignored",
        peer: || refuses(option::INFO, reply_type::ERR_UNSUP),
    },
    Proof {
        name: "go-to-an-unknown-export-gets-err-invalid",
        clause: id::GO_UNKNOWN_1,
        case: "neg.go.unknown-export",
        peer: || refuses(option::GO, reply_type::ERR_INVALID),
    },
    Proof {
        name: "starttls-answered-tls-required",
        clause: id::TLS_NOTLS_1,
        case: "neg.option.starttls-without-tls",
        peer: || refuses(option::STARTTLS, reply_type::ERR_TLS_REQD),
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
        peer: || refuses(option::GO, reply_type::ERR_BLOCK_SIZE_REQD),
    },
    Proof {
        name: "go-insists-on-extended-headers",
        clause: id::EH_REQD_1,
        case: WHAT_GO_SAYS,
        peer: || refuses(option::GO, reply_type::ERR_EXT_HEADER_REQD),
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
        name: "unknown-client-flag-not-hung-up-on",
        clause: id::HS_CFLAGS_3,
        case: "neg.client-flags.unknown-bit-closes",
        peer: || Peer::new().greet().any_option().ack(),
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
];
