//! `server_options` and `server_requests`: the reference server against a fuzzed client.
//!
//! Both serve one small sparse image (1 MiB: data, allocated zeros, holes), created once per
//! process, made read-only, opened read-only and then unlinked, so nothing a fuzz input does
//! can change it or leave it behind. Two exports share it: the standard dialect and the 2016
//! draft, each with one dirty bitmap (`b0`).

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use nbd_conform::server::admission::{Admission, Notices};
use nbd_conform::server::bitmap::BitmapSpec;
use nbd_conform::server::connection::serve_connection;
use nbd_conform::server::export::Export;
use nbd_conform::server::image::Image;
use nbd_conform::server::negotiate::{client_flags_acceptable, Negotiation, Next, Session};
use nbd_conform::server::transmit;
use nbd_conform::wire::consts::{limit, magic, option, reply_type};
use nbd_conform::wire::handshake::{
    decode_meta_context_reply, decode_server_reply, Info, OptionHeader, OptionReplyHeader,
};
use nbd_conform::wire::reply::{scan_reply_header, ChunkBody, HeaderScan, ReplyHeader};
use nbd_conform::Dialect;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use crate::runtime::run_bounded;

pub const IMAGE_SIZE: u64 = 1 << 20;

pub struct Fixture {
    pub standard: Arc<Export>,
    pub draft: Arc<Export>,
}

/// The two exports, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("nbd-conform-fuzz-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        write_image(&path).expect("cannot write the fuzz image");
        let open = || Image::open(&path, false).expect("cannot open the fuzz image");
        let bitmaps = [BitmapSpec {
            name: "b0".into(),
            granularity: 65536,
        }];
        let standard = Export::new("disk".into(), Dialect::Standard, open(), &bitmaps);
        let draft = Export::new("disk".into(), Dialect::Draft, open(), &bitmaps);
        // The open descriptors keep the file alive; the name goes now.
        let _ = std::fs::remove_file(&path);
        Fixture {
            standard: Arc::new(standard),
            draft: Arc::new(draft),
        }
    })
}

/// 1 MiB: data at [0, 64K) and [512K, 516K), allocated zeros at [128K, 192K), holes elsewhere;
/// then mode 0444.
fn write_image(path: &std::path::Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.set_len(IMAGE_SIZE)?;
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 | 1).collect();
    f.write_all(&pattern)?;
    f.seek(SeekFrom::Start(128 << 10))?;
    f.write_all(&vec![0u8; 64 << 10])?;
    f.seek(SeekFrom::Start(512 << 10))?;
    f.write_all(&pattern[..4096])?;
    f.sync_all()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
}

// ---- server_options -----------------------------------------------------------------------

/// `server_options`: the input is the client's side of a connection from its first byte (the
/// 32-bit client flags, then options, then possibly transmission requests).
///
/// 1. Sans IO: the option loop of `connection.rs` replayed over [`Negotiation::handle`] for both
///    exports, with every reply checked (framing, echo, one final reply, payloads that decode
///    cleanly with the client's own decoders).
/// 2. End to end: [`serve_connection`] over an in-memory duplex with the same bytes (the
///    standard export), so the socket side and, when the input reaches it, transmission run too.
pub fn run_options(data: &[u8]) {
    let fx = fixture();
    negotiate_sans_io(&fx.standard, data);
    negotiate_sans_io(&fx.draft, data);
    let export = fx.standard.clone();
    run_bounded("server_options (serve_connection)", async move {
        let (client, server) = tokio::io::duplex(64 << 10);
        let ticket = Admission::new(1).admit().await;
        let serve = serve_connection(server, export, ticket, "fuzz".into());
        tokio::join!(serve, fake_client(client, data, None));
    });
}

/// Replays the option loop of `server::connection::negotiate` sans IO; returns the session if
/// the input got as far as transmission.
pub fn negotiate_sans_io(export: &Export, data: &[u8]) -> Option<Session> {
    let (flags, mut rest) = data.split_first_chunk::<4>()?;
    let flags = u32::from_be_bytes(*flags);
    if !client_flags_acceptable(flags) {
        return None;
    }
    let mut n = Negotiation::new(export, flags);
    loop {
        let header = OptionHeader::decode(rest)?;
        if header.magic != magic::IHAVEOPT || header.length > limit::MAX_OPTION_PAYLOAD {
            return None;
        }
        let body = &rest[magic::OPTION_HEADER_LEN..];
        let len = header.length as usize;
        if body.len() < len {
            return None;
        }
        let (payload, after) = body.split_at(len);
        rest = after;
        let mut out = BytesMut::new();
        let next = n.handle(header.option, payload, &mut out);
        check_option_answer(header.option, &next, &out, flags);
        match next {
            Next::Continue => {}
            Next::Close => return None,
            Next::Transmit(session) => {
                assert!(
                    header.option == option::GO || header.option == option::EXPORT_NAME,
                    "transmission after option {}",
                    header.option
                );
                assert!(!session.extended || session.structured, "{session:?}");
                assert!(
                    session.contexts.is_empty() || session.structured,
                    "{session:?}"
                );
                assert!(
                    !export.is_draft() || session == Session::default(),
                    "{session:?}"
                );
                return Some(session);
            }
        }
    }
}

/// What the server wrote for one option must be what a strict client accepts.
fn check_option_answer(opt: u32, next: &Next, out: &[u8], client_flags: u32) {
    if opt == option::EXPORT_NAME {
        // No option reply framing here: size, flags, and the padding unless NO_ZEROES.
        match next {
            Next::Close => assert!(out.is_empty()),
            Next::Transmit(_) => {
                let no_zeroes = client_flags & 2 != 0;
                let expected = if no_zeroes { 10 } else { 10 + 124 };
                assert_eq!(out.len(), expected, "EXPORT_NAME reply length");
            }
            Next::Continue => panic!("EXPORT_NAME cannot go on haggling"),
        }
        return;
    }
    let mut buf = out;
    let mut finals = 0;
    let mut count = 0;
    while !buf.is_empty() {
        let h = OptionReplyHeader::decode(buf).expect("truncated option reply header");
        assert_eq!(h.magic, magic::OPTION_REPLY);
        assert_eq!(h.option, opt, "the reply must echo the option");
        let payload = &buf[magic::OPTION_REPLY_HEADER_LEN..];
        assert!(
            payload.len() >= h.length as usize,
            "reply overruns the buffer"
        );
        let payload = &payload[..h.length as usize];
        assert_eq!(finals, 0, "a reply after the final one");
        if h.is_error() {
            finals += 1;
            assert!(
                std::str::from_utf8(payload).is_ok(),
                "error message not UTF-8"
            );
        } else {
            match h.reply_type {
                reply_type::ACK => {
                    finals += 1;
                    assert!(payload.is_empty(), "ACK with a payload");
                }
                reply_type::INFO => {
                    let d = Info::decode(payload).expect("INFO payload too short");
                    assert!(d.violations.is_empty(), "{:?}", d.violations);
                }
                reply_type::META_CONTEXT => {
                    let d = decode_meta_context_reply(payload).expect("META_CONTEXT too short");
                    assert!(d.violations.is_empty(), "{:?}", d.violations);
                }
                reply_type::SERVER => {
                    let d = decode_server_reply(payload).expect("SERVER too short");
                    assert!(d.violations.is_empty(), "{:?}", d.violations);
                }
                other => panic!("unexpected reply type {other:#x}"),
            }
        }
        count += 1;
        buf = &buf[magic::OPTION_REPLY_HEADER_LEN + payload.len()..];
    }
    // Every option but EXPORT_NAME gets exactly one final reply (ACK or an error), last.
    assert_eq!(finals, 1, "{count} replies to option {opt}, {finals} final");
}

// ---- server_requests ----------------------------------------------------------------------

/// What a `server_requests` input's first byte selects: the export and the session that a
/// (fixed, valid) negotiation would have produced.
pub fn session_for(selector: u8) -> (Arc<Export>, Session) {
    let fx = fixture();
    if selector & 0x10 != 0 {
        // The draft refuses structured replies, extended headers and contexts.
        return (fx.draft.clone(), Session::default());
    }
    let extended = selector & 0x02 != 0;
    let structured = extended || selector & 0x01 != 0;
    let mut contexts = Vec::new();
    if structured {
        if selector & 0x04 != 0 {
            contexts.push(0); // base:allocation
        }
        if selector & 0x08 != 0 {
            contexts.push(1); // qemu:dirty-bitmap:b0
        }
    }
    // As negotiation offers it: extended headers and a selection (bit 12, the payload form).
    let status_payload = extended && !contexts.is_empty();
    (
        fx.standard.clone(),
        Session {
            structured,
            extended,
            contexts,
            status_payload,
        },
    )
}

/// `server_requests`: byte 0 picks the session ([`session_for`]), the rest is the request
/// stream that follows the handshake. The server runs `transmit::serve` over an in-memory
/// duplex; on structured and extended sessions every reply it writes is checked with the
/// client's decoders: the right header form, and chunk payloads without a single violation.
pub fn run_requests(data: &[u8]) {
    let Some((&selector, requests)) = data.split_first() else {
        return;
    };
    let (export, session) = session_for(selector);
    let checked = session.structured;
    let extended = session.extended;
    let output = run_bounded("server_requests", async move {
        let (client, server) = tokio::io::duplex(64 << 10);
        let serve = async move {
            let mut io = BufStream::new(server);
            let _ = transmit::serve(&mut io, &export, session, &Notices::default()).await;
            let _ = io.shutdown().await;
        };
        let keep = if checked {
            Some(MAX_CHECKED_OUTPUT)
        } else {
            None
        };
        tokio::join!(serve, fake_client(client, requests, keep)).1
    });
    if checked {
        check_replies(&output, extended);
    }
}

/// Replies beyond this many bytes are drained but not checked (a READ answer can be 1 MiB).
const MAX_CHECKED_OUTPUT: usize = 8 << 20;

/// Writes `bytes`, closes the sending side, and reads until the server closes; returns what
/// it read (up to `keep` bytes) when asked to.
async fn fake_client<S>(stream: S, bytes: &[u8], keep: Option<usize>) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let send = async {
        let _ = wr.write_all(bytes).await;
        let _ = wr.shutdown().await;
    };
    let recv = async {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Some(limit) = keep {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    };
    tokio::join!(send, recv).1
}

/// Every reply of a structured or extended session: a header of the negotiated form and, for
/// chunks, a payload that decodes without violations.
fn check_replies(mut buf: &[u8], extended: bool) {
    while !buf.is_empty() {
        match scan_reply_header(buf) {
            // The kept output may stop mid-reply.
            HeaderScan::NeedMore(_) => return,
            HeaderScan::BadMagic(m) => panic!("server reply starts with magic {m:#010x}"),
            HeaderScan::Header(h, used) => {
                buf = &buf[used..];
                match h {
                    ReplyHeader::Simple { .. } => {
                        assert!(!extended, "simple reply after extended headers (EH-REP-1)")
                    }
                    ReplyHeader::Structured { .. } => {
                        assert!(
                            !extended,
                            "structured chunk after extended headers (EH-REP-1)"
                        )
                    }
                    ReplyHeader::Extended { .. } => {
                        assert!(
                            extended,
                            "extended chunk without extended headers (EH-WIRE-1)"
                        )
                    }
                }
                let kind = match h {
                    ReplyHeader::Simple { .. } => continue,
                    ReplyHeader::Structured { chunk_type, .. }
                    | ReplyHeader::Extended { chunk_type, .. } => chunk_type,
                };
                let n = h.payload_len() as usize;
                if n > buf.len() {
                    return;
                }
                let d = ChunkBody::decode(kind, &buf[..n]);
                assert!(
                    d.violations.is_empty(),
                    "the reference server sent a {} chunk its own client grades as {:?}",
                    nbd_conform::wire::consts::chunk_type::name(kind),
                    d.violations
                );
                buf = &buf[n..];
            }
        }
    }
}
