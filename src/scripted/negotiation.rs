//! Proofs for the ways into transmission besides GO, and what haggling must leave alone:
//! NBD_OPT_EXPORT_NAME's bytes (size, flags, padding or none), the close that is its only
//! refusal, and a selection that an EXPORT_NAME or an INFO must not lose.

use std::time::Duration;

use bytes::BytesMut;

use super::answers::{error_chunk, simple, PLAIN_SIZE};
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{chunk_type, errno, option, reply_type};
use crate::wire::request::Request;

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "export-name-padding-not-zero",
        clause: id::EXPNAME_REPLY_1,
        case: "neg.export-name.enters",
        peer: || {
            entered(Some(padding(0x5a)))
                .request()
                .reply(read_ok)
                .pause(LINGER)
        },
    },
    Proof {
        name: "export-name-padding-after-no-zeroes",
        clause: id::EXPNAME_NOZERO_1,
        case: "neg.export-name.no-zeroes",
        // The client agreed NO_ZEROES (the greeting offers it); the zeros come all the same,
        // so the READ's reply reaches the client 124 bytes late.
        peer: || {
            entered(Some(padding(0)))
                .request()
                .reply(read_ok)
                .pause(LINGER)
        },
    },
    Proof {
        name: "export-name-unknown-answered",
        clause: id::EXPNAME_FAIL_1,
        case: "neg.export-name.unknown-closes",
        peer: || {
            Peer::new()
                .greet()
                .option(option::INFO)
                .option_reply(reply_type::ERR_UNKNOWN, &[])
                .option(option::EXPORT_NAME)
                .send(&size_and_flags())
                .pause(LINGER)
        },
    },
    Proof {
        name: "export-name-forgets-the-selection",
        clause: id::BS_REP_PERCTX_1,
        case: "neg.export-name.keeps-contexts",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::EXPORT_NAME)
                .send(&size_and_flags())
                .request()
                .reply(read_ok_structured)
                .request()
                .reply(no_context_selected)
                .pause(LINGER)
        },
    },
    Proof {
        name: "info-clears-the-selection",
        clause: id::LMC_NOSTATE_1,
        case: "neg.info.leaves-selection",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "base:allocation")
                .ack()
                .option(option::INFO)
                .export_info(PLAIN_SIZE, 1)
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, 1)
                .ack()
                .request()
                .reply(no_context_selected)
                .pause(LINGER)
        },
    },
];

/// Long enough for the case to read everything the peer sent.
const LINGER: Duration = Duration::from_secs(5);

/// What EXPORT_NAME answers with: the export's size and HAS_FLAGS.
fn size_and_flags() -> Vec<u8> {
    let mut out = PLAIN_SIZE.to_be_bytes().to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

/// The 124 reserved bytes, all `byte` but the first (always 0, so that a zero `byte` makes
/// them the zeros the spec means).
fn padding(byte: u8) -> Vec<u8> {
    let mut pad = vec![byte; crate::wire::consts::magic::EXPORT_NAME_PADDING];
    pad[0] = 0;
    pad
}

/// A greeting, then EXPORT_NAME answered with size, flags and `padding`.
fn entered(padding: Option<Vec<u8>>) -> Peer {
    let mut bytes = size_and_flags();
    bytes.extend(padding.unwrap_or_default());
    Peer::new().greet().option(option::EXPORT_NAME).send(&bytes)
}

/// A simple READ reply with the request's length of zeros.
fn read_ok(r: &Request) -> Vec<u8> {
    let mut out = BytesMut::new();
    simple(&mut out, r.cookie, 0);
    out.extend_from_slice(&vec![0u8; r.length as usize]);
    out.to_vec()
}

/// With structured replies, a READ answered as one hole.
fn read_ok_structured(r: &Request) -> Vec<u8> {
    use crate::wire::reply::{encode_chunk, ChunkBody};
    let mut out = BytesMut::new();
    let body = ChunkBody::OffsetHole {
        offset: r.offset,
        length: r.length as u32,
    };
    encode_chunk(&mut out, false, super::answers::DONE, r.cookie, 0, &body);
    out.to_vec()
}

/// What a server that lost the selection answers block status with (MC-NOCTX-1's EINVAL).
fn no_context_selected(r: &Request) -> Vec<u8> {
    let mut out = BytesMut::new();
    error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None);
    out.to_vec()
}
