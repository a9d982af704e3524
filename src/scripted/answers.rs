//! What the proofs' peers are built from: the handshakes they play, the replies they send.

use std::time::Duration;

use bytes::BytesMut;

use super::Peer;
use crate::wire::consts::{chunk_type, draft, errno, option, transmission_flag as tf};
use crate::wire::draft::{encode_descriptors, DraftDescriptor};
use crate::wire::handshake::{BlockSizes, Info};
use crate::wire::reply::{encode_chunk, ChunkBody, Descriptor, ReplyHeader};
use crate::wire::request::Request;

/// The case that reads one plain block-status reply for its structure.
pub(super) const STRUCTURE: &str = "bs.reply.structure";

/// The case that reads one plain block-status reply under extended headers.
pub(super) const EXTENDED_STRUCTURE: &str = "eh.bs.reply-structure";

/// A case whose request a correct server refuses (it reaches past the end).
pub(super) const REFUSED: &str = "bs.range.past-end";

pub(super) const DONE: u16 = crate::wire::consts::reply_flag::DONE;

/// The whole handshake (base:allocation as context 1, an export of [`PLAIN_SIZE`]), then one
/// request answered with what `answer` writes, then a pause so that the case reads it all.
pub(super) fn answered(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated(PLAIN_SIZE)
        .request()
        .answer(move |r, out| {
            answer(r, out);
        })
        .pause(Duration::from_secs(5))
}

/// As [`answered`], and the case's next request (the still-alive probe) answered right, so
/// that a refusal graded as a warning stays one.
pub(super) fn refused(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated(PLAIN_SIZE)
        .request()
        .answer(move |r, out| {
            answer(r, out);
        })
        .request()
        .answer(|r, out| {
            status(out, r, DONE, &[(r.length, 0)]);
        })
        .pause(Duration::from_secs(5))
}

/// As [`answered`], with extended headers.
pub(super) fn extended_answer(answer: fn(&Request, &mut BytesMut)) -> Peer {
    Peer::new()
        .negotiated_extended(PLAIN_SIZE)
        .extended_request()
        .answer(move |r, out| {
            answer(r, out);
        })
        .pause(Duration::from_secs(5))
}

/// An extended status chunk for context 1, final: (length, status) per descriptor.
pub(super) fn extended_status(out: &mut BytesMut, r: &Request, descriptors: &[(u64, u64)]) {
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

/// The whole handshake on an export that advertises `flags` (and is writable), then requests
/// answered with the simple replies `errors` lists (0: success), then a pause.
pub(super) fn writable(flags: u16, errors: &'static [u32]) -> Peer {
    let mut peer = Peer::new()
        .haggled()
        .export_info(PLAIN_SIZE, tf::HAS_FLAGS | flags)
        .ack();
    for &error in errors {
        peer = peer.request().answer(move |r, out| {
            simple(out, r.cookie, error);
        });
    }
    peer.pause(Duration::from_secs(5))
}

/// A 2016-draft server: GO on an export that advertises GET_LBA_STATUS (bit 7), then one
/// GET_LBA_STATUS answer per entry of `answers`, each written from its request, then a pause.
pub(super) fn draft(answers: &[fn(&Request, &mut BytesMut)]) -> Peer {
    let mut peer = Peer::new()
        .greet()
        .option(option::GO)
        .export_info(PLAIN_SIZE, tf::HAS_FLAGS | draft::SEND_GET_LBA_STATUS)
        .ack();
    for &answer in answers {
        peer = peer.request().answer(move |r, out| {
            answer(r, out);
        });
    }
    peer.pause(Duration::from_secs(5))
}

/// A successful draft answer: the simple header, then P and the descriptors
/// (offset, length, status).
pub(super) fn draft_status(out: &mut BytesMut, r: &Request, descriptors: &[(u64, u32, u16)]) {
    simple(out, r.cookie, 0);
    let descriptors: Vec<DraftDescriptor> = descriptors
        .iter()
        .map(|&(offset, length, status)| DraftDescriptor {
            offset,
            length,
            status,
        })
        .collect();
    encode_descriptors(out, &descriptors);
}

/// A draft answer that is right: one status-0 (allocated) descriptor over the request's part
/// inside the export.
pub(super) fn draft_right(r: &Request, out: &mut BytesMut) {
    let end = (r.offset + r.length).min(PLAIN_SIZE);
    draft_status(out, r, &[(r.offset, (end - r.offset) as u32, 0)]);
}

/// A block status answered with one descriptor of `status` over the request, a READ with
/// bytes of `byte`: for peers that answer however many requests a map walk makes.
pub(super) fn answer_or_read(r: &Request, status: u64, byte: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    if r.command == crate::wire::consts::command::READ {
        let body = ChunkBody::OffsetData {
            offset: r.offset,
            data: vec![byte; r.length as usize].into(),
        };
        encode_chunk(&mut out, false, DONE, r.cookie, 0, &body);
    } else {
        self::status(&mut out, r, DONE, &[(r.length, status)]);
    }
    out.to_vec()
}

/// The whole handshake, then `requests` requests each answered with success: one descriptor
/// over the request (a server that refuses nothing).
pub(super) fn accepting(requests: usize) -> Peer {
    let mut peer = Peer::new().negotiated(PLAIN_SIZE);
    for _ in 0..requests {
        peer = peer.request().answer(|r, out| {
            status(out, r, DONE, &[(r.length.max(1), 0)]);
        });
    }
    peer.pause(Duration::from_secs(5))
}

/// A compact status chunk for context `id`: (length, status) per descriptor.
pub(super) fn status_of(
    out: &mut BytesMut,
    r: &Request,
    id: u32,
    flags: u16,
    descriptors: &[(u64, u64)],
) {
    let body = ChunkBody::BlockStatus {
        context_id: id,
        descriptors: descriptors
            .iter()
            .map(|&(length, flags)| Descriptor { length, flags })
            .collect(),
    };
    encode_chunk(out, false, flags, r.cookie, 0, &body);
}

/// Any request refused with a final EINVAL error chunk.
pub(super) fn einval(r: &Request) -> Vec<u8> {
    let mut out = BytesMut::new();
    error_chunk(&mut out, r, chunk_type::ERROR, errno::EINVAL, None);
    out.to_vec()
}

/// A compact status chunk for context 1: (length, status) per descriptor.
pub(super) fn status(out: &mut BytesMut, r: &Request, flags: u16, descriptors: &[(u64, u64)]) {
    status_of(out, r, 1, flags, descriptors);
}

pub(super) fn simple(out: &mut BytesMut, cookie: u64, error: u32) {
    ReplyHeader::Simple { error, cookie }.encode(out);
}

pub(super) fn error_chunk(
    out: &mut BytesMut,
    r: &Request,
    kind: u16,
    error: u32,
    offset: Option<u64>,
) {
    let body = ChunkBody::Error {
        chunk_type: kind,
        error,
        message: String::new(),
        offset,
    };
    encode_chunk(out, false, DONE, r.cookie, 0, &body);
}

/// A final extended ERROR chunk with `error` and no message.
pub(super) fn extended_error(out: &mut BytesMut, r: &Request, error: u32) {
    let body = ChunkBody::Error {
        chunk_type: chunk_type::ERROR,
        error,
        message: String::new(),
        offset: None,
    };
    encode_chunk(out, true, DONE, r.cookie, r.offset, &body);
}

/// A greeting, then the option `opt` answered with `reply` and nothing more.
pub(super) fn refuses(opt: u32, reply: u32) -> Peer {
    Peer::new().greet().option(opt).option_reply(reply, &[])
}

/// An error chunk without an offset, with `message`.
pub(super) fn error_chunk_with(
    out: &mut BytesMut,
    r: &Request,
    kind: u16,
    error: u32,
    message: String,
) {
    let body = ChunkBody::Error {
        chunk_type: kind,
        error,
        message,
        offset: None,
    };
    encode_chunk(out, false, DONE, r.cookie, 0, &body);
}

/// Structured replies accepted, then a LIST answered with `contexts` (id, name) and ACK.
pub(super) fn listed(contexts: &[(u32, &str)]) -> Peer {
    meta_context_answer(option::LIST_META_CONTEXT, contexts)
}

/// Structured replies accepted, then a SET answered with `contexts` (id, name) and ACK.
pub(super) fn set_answered(contexts: &[(u32, &str)]) -> Peer {
    meta_context_answer(option::SET_META_CONTEXT, contexts)
}

pub(super) fn meta_context_answer(opt: u32, contexts: &[(u32, &str)]) -> Peer {
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
pub(super) const WHAT_GO_SAYS: &str = "neg.go.what-go-says";

/// The size of the exports the plain-GO peers announce.
pub(super) const PLAIN_SIZE: u64 = 4 << 20;

pub(super) fn sizes(minimum: u32, preferred: u32, maximum: u32) -> Info {
    Info::BlockSize(BlockSizes {
        minimum,
        preferred,
        maximum,
    })
}

pub(super) fn plain_go_with_sizes(minimum: u32, preferred: u32, maximum: u32) -> Peer {
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
pub(super) fn backing_called_local() -> Peer {
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
        .answer(|r, out| {
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
            status(out, r, DONE, &depths);
        })
        .pause(Duration::from_secs(5))
}

/// `dirty-fine` with `qemu:dirty-bitmap:bm512` as context 1, whose map is one dirty extent:
/// every write is covered, and so is the data written before the bitmap.
pub(super) fn everything_dirty() -> Peer {
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
        .answer(|r, out| {
            status(out, r, DONE, &[(r.length, 1)]);
        })
        .pause(Duration::from_secs(5))
}

/// GO acknowledged without NBD_INFO_EXPORT: the client cannot know the size.
pub(super) fn go_without_the_export_size() -> Peer {
    Peer::new().greet().option(option::GO).ack()
}

/// A successful block status answered with a simple reply (it must be structured).
pub(super) fn block_status_in_a_simple_reply() -> Peer {
    Peer::new()
        .negotiated(4 << 20)
        .request()
        .answer(|r, out| {
            ReplyHeader::Simple {
                error: 0,
                cookie: r.cookie,
            }
            .encode(out);
        })
        .pause(Duration::from_secs(5))
}
