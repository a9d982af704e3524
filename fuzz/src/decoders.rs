//! `client_decoders`: every sans-IO decoder of `nbd_conform::wire` on arbitrary bytes.
//!
//! One input is used three ways:
//! 1. every decoder is run on the whole input;
//! 2. the first two bytes pick a chunk type and the rest is decoded as that chunk's payload;
//! 3. the input is walked as a server byte stream, the way a client reads one: greeting (if the
//!    input starts with NBDMAGIC), option replies (payload decoded by reply type), then reply
//!    headers with their chunk payloads (and draft parameter blocks after simple replies). This
//!    is what makes captured server→client streams useful seeds.
//!
//! Invariants checked besides "no panic" (the wire module's own promises, ARCHITECTURE.md):
//! - no decoder returns more items than its input can hold (descriptors: 8, 16 or 14 bytes each);
//! - a header scan asks for more bytes only when it needs them, and never claims more than given;
//! - decode(encode(x)) round trip: where a decoder reports no violation, encoding what it
//!   returned gives back exactly the bytes it was given.

use bytes::BytesMut;

use nbd_conform::wire::consts::{chunk_type, magic, reply_type};
use nbd_conform::wire::draft::{decode_descriptors, encode_descriptors};
use nbd_conform::wire::handshake::{
    decode_meta_context_reply, decode_server_reply, encode_meta_context_reply, encode_server_reply,
    info_request_payload, meta_context_payload, parse_info_request, parse_meta_context_request,
    Greeting, Info, OptionHeader, OptionReplyHeader,
};
use nbd_conform::wire::reply::{scan_reply_header, ChunkBody, HeaderScan, ReplyHeader};
use nbd_conform::wire::request::{HeaderForm, Request};

/// Chunk types every input is decoded as: all the known ones plus an unknown error type and an
/// unknown plain type.
const CHUNK_TYPES: [u16; 9] = [
    chunk_type::NONE,
    chunk_type::OFFSET_DATA,
    chunk_type::OFFSET_HOLE,
    chunk_type::BLOCK_STATUS,
    chunk_type::BLOCK_STATUS_EXT,
    chunk_type::ERROR,
    chunk_type::ERROR_OFFSET,
    chunk_type::ERROR_BIT | 0x7f,
    3,
];

pub fn run(data: &[u8]) {
    every_decoder(data);
    if let [a, b, rest @ ..] = data {
        check_chunk(u16::from_be_bytes([*a, *b]), rest);
    }
    walk_server_stream(data);
}

/// Each decoder on the whole buffer.
pub fn every_decoder(buf: &[u8]) {
    check_greeting(buf);
    check_option_headers(buf);
    check_info(buf);
    check_meta_context_reply(buf);
    check_server_reply(buf);
    check_scan(buf);
    for kind in CHUNK_TYPES {
        check_chunk(kind, buf);
    }
    check_draft(buf);
    check_requests(buf);
    check_server_side_parsers(buf);
}

pub fn check_greeting(buf: &[u8]) {
    let decoded = Greeting::decode(buf);
    assert_eq!(decoded.is_some(), buf.len() >= magic::GREETING_LEN);
    if let Some(d) = decoded {
        let mut out = BytesMut::new();
        d.value.encode(&mut out);
        assert_eq!(&out[..], &buf[..magic::GREETING_LEN], "greeting round trip");
        let magics_ok =
            d.value.nbd_magic == magic::NBDMAGIC && d.value.option_magic == magic::IHAVEOPT;
        if !magics_ok {
            assert!(
                !d.violations.is_empty(),
                "a wrong greeting magic went unreported"
            );
        }
    }
}

fn check_option_headers(buf: &[u8]) {
    if let Some(h) = OptionHeader::decode(buf) {
        assert!(buf.len() >= magic::OPTION_HEADER_LEN);
        let mut out = BytesMut::new();
        nbd_conform::wire::handshake::encode_option_raw(&mut out, h.magic, h.option, h.length, &[]);
        assert_eq!(&out[..], &buf[..magic::OPTION_HEADER_LEN]);
    } else {
        assert!(buf.len() < magic::OPTION_HEADER_LEN);
    }
    if let Some(h) = OptionReplyHeader::decode(buf) {
        assert!(buf.len() >= magic::OPTION_REPLY_HEADER_LEN);
        assert_eq!(h.is_error(), h.reply_type & reply_type::ERROR_BIT != 0);
        let mut out = BytesMut::new();
        out.extend_from_slice(&h.magic.to_be_bytes());
        out.extend_from_slice(&h.option.to_be_bytes());
        out.extend_from_slice(&h.reply_type.to_be_bytes());
        out.extend_from_slice(&h.length.to_be_bytes());
        assert_eq!(&out[..], &buf[..magic::OPTION_REPLY_HEADER_LEN]);
    } else {
        assert!(buf.len() < magic::OPTION_REPLY_HEADER_LEN);
    }
}

pub fn check_info(buf: &[u8]) {
    let Some(d) = Info::decode(buf) else {
        return;
    };
    if d.violations.is_empty() && !matches!(d.value, Info::Unknown(_)) {
        let mut out = BytesMut::new();
        d.value.encode(&mut out);
        assert_eq!(&out[..], buf, "NBD_REP_INFO round trip of {:?}", d.value);
    }
}

pub fn check_meta_context_reply(buf: &[u8]) {
    let Some(d) = decode_meta_context_reply(buf) else {
        assert!(buf.len() < 4);
        return;
    };
    if d.violations.is_empty() {
        let mut out = BytesMut::new();
        encode_meta_context_reply(&mut out, d.value.0, &d.value.1);
        assert_eq!(&out[..], buf, "NBD_REP_META_CONTEXT round trip");
    }
}

pub fn check_server_reply(buf: &[u8]) {
    let Some(d) = decode_server_reply(buf) else {
        return;
    };
    if d.violations.is_empty() {
        let mut out = BytesMut::new();
        encode_server_reply(&mut out, &d.value.0, &d.value.1);
        assert_eq!(&out[..], buf, "NBD_REP_SERVER round trip");
    }
}

/// The header scan: `NeedMore(n)` only when fewer than `n` bytes are there, `Header(h, used)`
/// uses bytes that exist and re-encodes to them, `BadMagic` echoes the first word.
pub fn check_scan(buf: &[u8]) -> HeaderScan {
    let scan = scan_reply_header(buf);
    match scan {
        HeaderScan::NeedMore(n) => {
            assert!(
                n > buf.len(),
                "NeedMore({n}) with {} bytes buffered",
                buf.len()
            );
            assert!(
                [
                    4,
                    magic::SIMPLE_REPLY_LEN,
                    magic::STRUCTURED_REPLY_LEN,
                    magic::EXTENDED_REPLY_LEN
                ]
                .contains(&n),
                "NeedMore({n})"
            );
        }
        HeaderScan::Header(h, used) => {
            assert!(used <= buf.len());
            let mut out = BytesMut::new();
            h.encode(&mut out);
            assert_eq!(&out[..], &buf[..used], "reply header round trip");
        }
        HeaderScan::BadMagic(m) => {
            assert_eq!(
                m.to_be_bytes(),
                buf[..4],
                "BadMagic must echo the first word"
            );
        }
    }
    scan
}

/// Decodes `payload` as a chunk of type `kind` and checks the decoder's promises.
pub fn check_chunk(kind: u16, payload: &[u8]) -> bool {
    let d = ChunkBody::decode(kind, payload);
    assert_eq!(
        d.value.chunk_type(),
        kind,
        "decoded body changed the chunk type"
    );
    match &d.value {
        ChunkBody::BlockStatus { descriptors, .. } => {
            assert!(descriptors.len() <= payload.len() / 8, "descriptor count");
            assert!(descriptors
                .iter()
                .all(|x| x.length <= u32::MAX as u64 && x.flags <= u32::MAX as u64));
        }
        ChunkBody::BlockStatusExt { descriptors, .. } => {
            assert!(descriptors.len() <= payload.len() / 16, "descriptor count");
        }
        ChunkBody::OffsetData { data, .. } => assert_eq!(data.len() + 8, payload.len()),
        ChunkBody::Error { message, .. } => assert!(message.len() <= 3 * payload.len()),
        ChunkBody::Unknown { length, .. } => assert_eq!(*length, payload.len()),
        ChunkBody::None | ChunkBody::OffsetHole { .. } => {}
    }
    let clean = d.violations.is_empty();
    if clean && !matches!(d.value, ChunkBody::Unknown { .. }) {
        let mut out = BytesMut::new();
        d.value.encode_payload(&mut out);
        // An error chunk type this decoder does not know may carry type-specific fields after
        // the message: only the common part (error, length, message) must round-trip.
        let exact = kind == chunk_type::ERROR
            || kind & chunk_type::ERROR_BIT == 0
            || kind == chunk_type::ERROR_OFFSET;
        let expected = if exact {
            payload
        } else {
            &payload[..out.len().min(payload.len())]
        };
        assert_eq!(
            &out[..],
            expected,
            "chunk type {kind:#06x} decoded without violations to {:?}, which encodes differently",
            d.value
        );
    }
    clean
}

/// The draft's parameter block (the P bytes after the parameter length).
pub fn check_draft(params: &[u8]) {
    let d = decode_descriptors(params);
    assert!(d.value.len() <= params.len() / 14, "draft descriptor count");
    if d.violations.is_empty() {
        let mut out = BytesMut::new();
        encode_descriptors(&mut out, &d.value);
        assert_eq!(&out[4..], params, "draft descriptors round trip");
        assert_eq!(out[..4], (params.len() as u32).to_be_bytes());
    }
}

fn check_requests(buf: &[u8]) {
    for form in [HeaderForm::Compact, HeaderForm::Extended] {
        match Request::decode(form, buf) {
            Some(r) => {
                let mut out = BytesMut::new();
                r.encode(form, &mut out)
                    .expect("a decoded header re-encodes");
                assert_eq!(&out[..], &buf[..form.header_len()], "request round trip");
            }
            None => assert!(buf.len() < form.header_len()),
        }
    }
}

/// The option payload parsers the server uses: whatever they accept re-encodes to the input
/// (they reject trailing bytes, so acceptance means every byte was accounted for).
fn check_server_side_parsers(buf: &[u8]) {
    if let Ok((name, requests)) = parse_info_request(buf) {
        assert_eq!(&info_request_payload(&name, &requests)[..], buf);
    }
    if let Ok((name, queries)) = parse_meta_context_request(buf) {
        let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
        assert_eq!(&meta_context_payload(&name, &queries)[..], buf);
    }
}

fn starts_with_reply_magic(buf: &[u8]) -> bool {
    buf.len() >= 4
        && [
            magic::SIMPLE_REPLY,
            magic::STRUCTURED_REPLY,
            magic::EXTENDED_REPLY,
        ]
        .contains(&u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
}

/// Reads `buf` as a server's side of a connection, with every decoder a client would use.
pub fn walk_server_stream(mut buf: &[u8]) {
    if buf.len() >= magic::GREETING_LEN && buf[..8] == magic::NBDMAGIC.to_be_bytes() {
        check_greeting(&buf[..magic::GREETING_LEN]);
        buf = &buf[magic::GREETING_LEN..];
    }
    // Option phase: as long as option replies follow one another.
    while buf.len() >= magic::OPTION_REPLY_HEADER_LEN
        && buf[..8] == magic::OPTION_REPLY.to_be_bytes()
    {
        let Some(h) = OptionReplyHeader::decode(buf) else {
            break;
        };
        let rest = &buf[magic::OPTION_REPLY_HEADER_LEN..];
        let n = (h.length as usize).min(rest.len());
        let payload = &rest[..n];
        match h.reply_type {
            reply_type::INFO => check_info(payload),
            reply_type::META_CONTEXT => check_meta_context_reply(payload),
            reply_type::SERVER => check_server_reply(payload),
            _ => {}
        }
        buf = &rest[n..];
    }
    // Transmission phase. Each step consumes at least one byte, so this ends.
    while !buf.is_empty() {
        match check_scan(buf) {
            HeaderScan::NeedMore(_) => break,
            HeaderScan::BadMagic(_) => buf = &buf[1..],
            HeaderScan::Header(ReplyHeader::Simple { .. }, used) => {
                buf = &buf[used..];
                // A draft reply's parameter length and descriptors, unless a header follows.
                if buf.len() >= 4 && !starts_with_reply_magic(buf) {
                    let p = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    let n = p.min(buf.len() - 4);
                    check_draft(&buf[4..4 + n]);
                    buf = &buf[4 + n..];
                }
            }
            HeaderScan::Header(h, used) => {
                buf = &buf[used..];
                let kind = match h {
                    ReplyHeader::Structured { chunk_type, .. }
                    | ReplyHeader::Extended { chunk_type, .. } => chunk_type,
                    ReplyHeader::Simple { .. } => unreachable!(),
                };
                let n = usize::try_from(h.payload_len())
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                check_chunk(kind, &buf[..n]);
                buf = &buf[n..];
            }
        }
    }
}
