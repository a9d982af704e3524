//! The sans-IO codec and the client's defences, without any real server.
//!
//! Property tests: every encoder round-trips through its decoder, and no byte sequence makes a
//! decoder panic. Scripted hostile peers: a server that stalls, lies about a length, hangs up in
//! the middle of a reply or sends garbage gives the client an error value, promptly.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;

use nbd_conform::scripted::Peer;

use nbd_conform::client::{ClientError, Session, SessionOptions, Target};
use nbd_conform::wire::consts::{chunk_type, magic, option, reply_flag, reply_type};
use nbd_conform::wire::draft::{decode_descriptors, encode_descriptors, DraftDescriptor};
use nbd_conform::wire::handshake::{self, Greeting, Info, OptionHeader, OptionReplyHeader};
use nbd_conform::wire::reply::{
    encode_chunk, scan_reply_header, ChunkBody, Descriptor, HeaderScan, ReplyHeader,
};
use nbd_conform::wire::request::{HeaderForm, Request};
use nbd_conform::wire::state::state_name;

fn descriptors(max: usize) -> impl Strategy<Value = Vec<Descriptor>> {
    prop::collection::vec(
        (1u64..=u32::MAX as u64, 0u64..=u32::MAX as u64)
            .prop_map(|(length, flags)| Descriptor { length, flags }),
        1..max,
    )
}

fn message() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 :,.-]{0,64}"
}

fn chunk_body() -> impl Strategy<Value = ChunkBody> {
    prop_oneof![
        Just(ChunkBody::None),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(offset, d)| {
            ChunkBody::OffsetData {
                offset,
                data: d.into(),
            }
        }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(offset, length)| ChunkBody::OffsetHole { offset, length }),
        (any::<u32>(), descriptors(40)).prop_map(|(context_id, descriptors)| {
            ChunkBody::BlockStatus {
                context_id,
                descriptors,
            }
        }),
        (
            any::<u32>(),
            prop::collection::vec(
                (1u64.., any::<u64>()).prop_map(|(length, flags)| Descriptor { length, flags }),
                1..40
            )
        )
            .prop_map(|(context_id, descriptors)| ChunkBody::BlockStatusExt {
                context_id,
                count: descriptors.len() as u32,
                descriptors
            }),
        (1u32.., message(), prop::option::of(any::<u64>())).prop_map(|(error, message, offset)| {
            ChunkBody::Error {
                chunk_type: if offset.is_some() {
                    chunk_type::ERROR_OFFSET
                } else {
                    chunk_type::ERROR
                },
                error,
                message,
                offset,
            }
        }),
    ]
}

proptest! {
    fn requests_round_trip(flags: u16, command: u16, cookie: u64, offset: u64, length: u64, extended: bool) {
        let form = if extended { HeaderForm::Extended } else { HeaderForm::Compact };
        let length = if extended { length } else { length & 0xffff_ffff };
        let request = Request::new(form, command, flags, cookie, offset, length);
        let mut buf = BytesMut::new();
        prop_assert!(request.encode(form, &mut buf).is_ok());
        prop_assert_eq!(buf.len(), form.header_len());
        prop_assert_eq!(Request::decode(form, &buf), Some(request));
    }

    fn compact_headers_refuse_lengths_past_32_bits(length in (1u64 << 32)..) {
        // 8 GiB cut to its low 32 bits would be a 0-length request the transcript never showed.
        let request = Request::new(HeaderForm::Compact, 7, 0, 1, 0, length);
        let mut buf = BytesMut::new();
        prop_assert!(request.encode(HeaderForm::Compact, &mut buf).is_err());
        prop_assert!(buf.is_empty());
    }

    fn chunks_round_trip_without_violations(body in chunk_body(), cookie: u64, extended: bool, done: bool) {
        let mut buf = BytesMut::new();
        let flags = if done { reply_flag::DONE } else { 0 };
        encode_chunk(&mut buf, extended, flags, cookie, 4096, &body);
        let HeaderScan::Header(header, used) = scan_reply_header(&buf) else { panic!("no header") };
        prop_assert_eq!(header.cookie(), cookie);
        prop_assert_eq!(header.payload_len() as usize, buf.len() - used);
        let kind = match header { ReplyHeader::Structured { chunk_type, .. } | ReplyHeader::Extended { chunk_type, .. } => chunk_type, _ => panic!("simple") };
        let decoded = ChunkBody::decode(kind, &buf[used..]);
        prop_assert!(decoded.violations.is_empty(), "{:?}", decoded.violations);
        prop_assert_eq!(decoded.value, body);
    }

    fn simple_reply_headers_round_trip(error: u32, cookie: u64) {
        let mut buf = BytesMut::new();
        ReplyHeader::Simple { error, cookie }.encode(&mut buf);
        prop_assert_eq!(scan_reply_header(&buf), HeaderScan::Header(ReplyHeader::Simple { error, cookie }, 16));
        prop_assert_eq!(scan_reply_header(&buf[..15]), HeaderScan::NeedMore(16));
    }

    fn draft_descriptors_round_trip(list in prop::collection::vec((any::<u64>(), any::<u32>(), any::<u16>()), 0..50)) {
        let list: Vec<DraftDescriptor> = list.into_iter().map(|(offset, length, status)| DraftDescriptor { offset, length, status }).collect();
        let mut buf = BytesMut::new();
        encode_descriptors(&mut buf, &list);
        let p = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        prop_assert_eq!(p, list.len() * 14);
        let decoded = decode_descriptors(&buf[4..]);
        prop_assert!(decoded.violations.is_empty());
        prop_assert_eq!(decoded.value, list);
    }

    fn option_payloads_round_trip(export in "[a-z0-9/]{0,40}", queries in prop::collection::vec("[a-z]{1,8}:[a-z-]{0,20}", 0..8), infos in prop::collection::vec(any::<u16>(), 0..6)) {
        let q: Vec<&str> = queries.iter().map(String::as_str).collect();
        let payload = handshake::meta_context_payload(&export, &q);
        prop_assert_eq!(handshake::parse_meta_context_request(&payload), Ok((export.clone(), queries.clone())));
        let payload = handshake::info_request_payload(&export, &infos);
        prop_assert_eq!(handshake::parse_info_request(&payload), Ok((export, infos)));
    }

    fn infos_round_trip(size: u64, flags: u16, min in 0u32..20, pref in 0u32..30, max: u32) {
        for info in [Info::Export { size, flags }, Info::BlockSize(handshake::BlockSizes { minimum: 1 << min, preferred: 1 << pref, maximum: max }), Info::Name("disk".into())] {
            let mut buf = BytesMut::new();
            info.encode(&mut buf);
            let decoded = Info::decode(&buf).expect("decodes");
            prop_assert!(decoded.violations.is_empty());
            prop_assert_eq!(decoded.value, info);
        }
    }

    fn no_input_makes_a_decoder_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), kind: u16) {
        let _ = Greeting::decode(&bytes);
        let _ = OptionHeader::decode(&bytes);
        let _ = OptionReplyHeader::decode(&bytes);
        let _ = Info::decode(&bytes);
        let _ = handshake::decode_meta_context_reply(&bytes);
        let _ = handshake::decode_server_reply(&bytes);
        let _ = handshake::parse_info_request(&bytes);
        let _ = handshake::parse_meta_context_request(&bytes);
        let _ = Request::decode(HeaderForm::Compact, &bytes);
        let _ = Request::decode(HeaderForm::Extended, &bytes);
        let _ = scan_reply_header(&bytes);
        for t in [kind, chunk_type::BLOCK_STATUS, chunk_type::BLOCK_STATUS_EXT, chunk_type::ERROR, chunk_type::ERROR_OFFSET, chunk_type::OFFSET_DATA, chunk_type::OFFSET_HOLE, chunk_type::NONE] {
            let d = ChunkBody::decode(t, &bytes);
            // Decoding never allocates beyond the input: descriptors are at least 8 bytes each.
            if let ChunkBody::BlockStatus { descriptors, .. } | ChunkBody::BlockStatusExt { descriptors, .. } = d.value {
                prop_assert!(descriptors.len() <= bytes.len() / 8);
            }
        }
        let _ = decode_descriptors(&bytes);
        let _ = state_name("base:allocation", kind as u64);
    }
}

fn decode(kind: u16, payload: &[u8]) -> Vec<&'static str> {
    ChunkBody::decode(kind, payload)
        .violations
        .iter()
        .map(|v| v.clause.as_str())
        .collect()
}

fn malformed_chunks_name_their_clause() {
    // context id + 7 bytes: not 4 + 8n.
    assert_eq!(
        decode(chunk_type::BLOCK_STATUS, &[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0]),
        ["BS-REP-LEN-1"]
    );
    // A zero-length descriptor.
    assert_eq!(
        decode(
            chunk_type::BLOCK_STATUS,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3]
        ),
        ["BS-REP-NZ-1"]
    );
    // BLOCK_STATUS_EXT whose count says 2 but holds 1 descriptor.
    let mut ext = vec![0, 0, 0, 1, 0, 0, 0, 2];
    ext.extend_from_slice(&[0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    assert_eq!(
        decode(chunk_type::BLOCK_STATUS_EXT, &ext),
        ["BS-EXT-COUNT-1"]
    );
    // ERROR whose message length overruns the chunk, and ERROR with error value 0.
    assert_eq!(
        decode(chunk_type::ERROR, &[0, 0, 0, 22, 0, 200, b'x']),
        ["ERRCHUNK-ERR-1"]
    );
    assert_eq!(
        decode(chunk_type::ERROR, &[0, 0, 0, 0, 0, 0]),
        ["ERRCHUNK-NONZERO-1"]
    );
    assert_eq!(decode(chunk_type::NONE, &[1]), ["CHUNK-NONE-1"]);
    let d = decode_descriptors(&[0; 15]);
    assert_eq!(d.violations[0].clause, "DRAFT-DESC-LEN-1");
}

fn malformed_frames_can_be_built_on_purpose() {
    let mut buf = BytesMut::new();
    let mut bad = Request::new(HeaderForm::Compact, 7, 0, 1, 0, 4096);
    bad.magic = 0x1234_5678;
    bad.encode(HeaderForm::Compact, &mut buf).unwrap();
    assert_eq!(&buf[..4], &[0x12, 0x34, 0x56, 0x78]);
    let mut opt = BytesMut::new();
    handshake::encode_option_raw(
        &mut opt,
        magic::IHAVEOPT,
        option::SET_META_CONTEXT,
        1000,
        b"short",
    );
    assert_eq!(OptionHeader::decode(&opt).unwrap().length, 1000);
    assert_eq!(
        handshake::parse_meta_context_request(&[0, 0, 3, 232, b'a'])
            .unwrap_err()
            .to_string(),
        "name length 1000 runs past the option payload"
    );
}

// ---- scripted hostile servers -------------------------------------------------------------

/// How the scripted server misbehaves once a block-status request arrives.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    Silence,
    HugeChunkClaim,
    HangUpMidChunk,
    GarbageMagic,
    HugeOptionReply,
}

/// A server that negotiates base:allocation properly, then misbehaves.
fn hostile_server(how: Misbehaviour) -> Peer {
    let chunk_header = |length: u32| {
        move |r: &Request| {
            let mut out = BytesMut::new();
            ReplyHeader::Structured {
                flags: 1,
                chunk_type: chunk_type::BLOCK_STATUS,
                cookie: r.cookie,
                length,
            }
            .encode(&mut out);
            out.to_vec()
        }
    };
    let stall = Duration::from_secs(30);
    match how {
        Misbehaviour::HugeOptionReply => {
            let mut reply = BytesMut::new();
            reply.extend_from_slice(&magic::OPTION_REPLY.to_be_bytes());
            reply.extend_from_slice(&option::STRUCTURED_REPLY.to_be_bytes());
            reply.extend_from_slice(&reply_type::ACK.to_be_bytes());
            reply.extend_from_slice(&u32::MAX.to_be_bytes());
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .send(&reply)
                .pause(stall)
        }
        Misbehaviour::Silence => Peer::new().negotiated(1 << 20).request().pause(stall),
        Misbehaviour::HugeChunkClaim => Peer::new()
            .negotiated(1 << 20)
            .request()
            .reply(chunk_header(u32::MAX))
            .pause(stall),
        Misbehaviour::HangUpMidChunk => Peer::new()
            .negotiated(1 << 20)
            .request()
            .reply(chunk_header(1 << 20))
            .send(&[0u8; 10]),
        Misbehaviour::GarbageMagic => Peer::new()
            .negotiated(1 << 20)
            .request()
            .send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .pause(stall),
    }
}

/// Runs the client against a misbehaving server; returns the error and how long it took.
fn against(how: Misbehaviour) -> (ClientError, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let peer = hostile_server(how).listen().expect("a scripted peer");
        let target = peer.target.clone();
        let options = SessionOptions {
            timeout: Duration::from_millis(500),
            contexts: vec!["base:allocation".into()],
            ..SessionOptions::default()
        };
        let started = Instant::now();
        let result = async {
            let mut s = Session::open(&target, &options).await?;
            s.block_status(0, 1 << 20, 0).await
        }
        .await;
        drop(peer);
        (
            result.expect_err("a hostile server must give an error"),
            started.elapsed(),
        )
    })
}

fn hostile_servers_give_errors_not_hangs() {
    let (e, took) = against(Misbehaviour::Silence);
    assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    let (e, took) = against(Misbehaviour::HugeChunkClaim);
    assert!(
        matches!(&e, ClientError::Protocol(v) if v.clause == "CHUNK-INCONS-1"),
        "{e}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    let (e, _) = against(Misbehaviour::HangUpMidChunk);
    assert!(matches!(e, ClientError::Closed { .. }), "{e}");

    let (e, _) = against(Misbehaviour::GarbageMagic);
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");

    let (e, took) = against(Misbehaviour::HugeOptionReply);
    assert!(
        matches!(&e, ClientError::Protocol(v) if v.clause == "HS-OPTREP-1"),
        "{e}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

fn unreachable_servers_fail_fast() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target: Target = format!(
        "nbd+unix:///?socket={}",
        dir.path().join("nobody.sock").display()
    )
    .parse()
    .unwrap();
    let e = rt
        .block_on(Session::open(&target, &SessionOptions::default()))
        .err()
        .expect("must fail");
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    // A TCP port nobody listens on: bind one, learn its number, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: Target = format!("127.0.0.1:{port}").parse().unwrap();
    let e = rt
        .block_on(Session::open(&target, &SessionOptions::default()))
        .err()
        .expect("must fail");
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}

pub fn trials() -> Vec<libtest_mimic::Trial> {
    vec![
        libtest_mimic::Trial::test("selftest::wire::requests_round_trip", || {
            requests_round_trip();
            Ok(())
        }),
        libtest_mimic::Trial::test(
            "selftest::wire::compact_headers_refuse_lengths_past_32_bits",
            || {
                compact_headers_refuse_lengths_past_32_bits();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "selftest::wire::chunks_round_trip_without_violations",
            || {
                chunks_round_trip_without_violations();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test("selftest::wire::simple_reply_headers_round_trip", || {
            simple_reply_headers_round_trip();
            Ok(())
        }),
        libtest_mimic::Trial::test("selftest::wire::draft_descriptors_round_trip", || {
            draft_descriptors_round_trip();
            Ok(())
        }),
        libtest_mimic::Trial::test("selftest::wire::option_payloads_round_trip", || {
            option_payloads_round_trip();
            Ok(())
        }),
        libtest_mimic::Trial::test("selftest::wire::infos_round_trip", || {
            infos_round_trip();
            Ok(())
        }),
        libtest_mimic::Trial::test("selftest::wire::no_input_makes_a_decoder_panic", || {
            no_input_makes_a_decoder_panic();
            Ok(())
        }),
        libtest_mimic::Trial::test("selftest::wire::malformed_chunks_name_their_clause", || {
            malformed_chunks_name_their_clause();
            Ok(())
        }),
        libtest_mimic::Trial::test(
            "selftest::wire::malformed_frames_can_be_built_on_purpose",
            || {
                malformed_frames_can_be_built_on_purpose();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "selftest::wire::hostile_servers_give_errors_not_hangs",
            || {
                hostile_servers_give_errors_not_hangs();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test("selftest::wire::unreachable_servers_fail_fast", || {
            unreachable_servers_fail_fast();
            Ok(())
        }),
    ]
}
