//! End-to-end tests: a real server on a loopback port, driven byte by byte with the wire codec.
//! They cover what no off-the-shelf client exercises: the draft dialect, extended-header edge
//! cases, and the framing errors after which the server must stay in sync or close.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BitmapSpec, Listen, ServeOptions, Server};
use crate::wire::consts::{command as cmd, command_flag as flag, errno, magic, option, reply_type};
use crate::wire::draft::{decode_descriptors, DraftDescriptor};
use crate::wire::handshake::{
    encode_option, info_request_payload, meta_context_payload, OptionReplyHeader,
};
use crate::wire::reply::{scan_reply_header, ChunkBody, HeaderScan, ReplyHeader};
use crate::wire::request::{HeaderForm, Request};
use crate::Dialect;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;

struct Running {
    addr: String,
    _image: tempfile::NamedTempFile,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An 8 MiB image with data at [1M, 1M+4K) (the rest is whatever the file system makes of
/// `set_len`, normally a hole), served writable.
async fn start(dialect: Dialect, bitmaps: &[&str]) -> Running {
    use std::os::unix::fs::FileExt;
    let image = tempfile::NamedTempFile::new().unwrap();
    image.as_file().set_len(SIZE).unwrap();
    image.as_file().write_all_at(&[0xEE; 4096], MIB).unwrap();
    let server = Server::bind(ServeOptions {
        image: image.path().to_owned(),
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        export_name: "disk".into(),
        dialect,
        bitmaps: bitmaps
            .iter()
            .map(|b| b.parse::<BitmapSpec>().unwrap())
            .collect(),
        writable: true,
        faults: vec![],
        variants: vec![],
        block_sizes: crate::server::negotiate::BLOCK_SIZES,
        failing_status: false,
        client_limits: crate::server::ClientLimits::default(),
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let task = tokio::spawn(async move {
        let _ = server.run().await;
    });
    Running {
        addr,
        _image: image,
        task,
    }
}

struct Client {
    s: TcpStream,
    form: HeaderForm,
}

impl Client {
    async fn connect(addr: &str) -> Client {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; magic::GREETING_LEN];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        s.write_u32(3).await.unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
        Client {
            s,
            form: HeaderForm::Compact,
        }
    }

    /// Sends an option and collects replies up to the final one (ACK or error).
    async fn option(&mut self, opt: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut b = BytesMut::new();
        encode_option(&mut b, opt, data);
        self.s.write_all(&b).await.unwrap();
        let mut replies = Vec::new();
        loop {
            let mut h = [0u8; magic::OPTION_REPLY_HEADER_LEN];
            self.s.read_exact(&mut h).await.unwrap();
            let h = OptionReplyHeader::decode(&h).unwrap();
            assert_eq!((h.magic, h.option), (magic::OPTION_REPLY, opt));
            let mut payload = vec![0u8; h.length as usize];
            self.s.read_exact(&mut payload).await.unwrap();
            replies.push((h.reply_type, payload));
            if h.reply_type == reply_type::ACK || h.is_error() {
                return replies;
            }
        }
    }

    async fn go(&mut self) {
        let r = self
            .option(option::GO, &info_request_payload("disk", &[]))
            .await;
        assert_eq!(r.last().unwrap().0, reply_type::ACK);
    }

    async fn request(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u64,
        payload: &[u8],
    ) {
        let mut b = BytesMut::new();
        Request::new(self.form, command, flags, 0xC0FFEE, offset, length)
            .encode(self.form, &mut b)
            .unwrap();
        b.extend_from_slice(payload);
        self.s.write_all(&b).await.unwrap();
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn header(&mut self) -> ReplyHeader {
        let mut buf = vec![0u8; 4];
        self.s.read_exact(&mut buf).await.unwrap();
        loop {
            match scan_reply_header(&buf) {
                HeaderScan::Header(h, _) => return h,
                HeaderScan::NeedMore(n) => {
                    let have = buf.len();
                    buf.resize(n, 0);
                    self.s.read_exact(&mut buf[have..]).await.unwrap();
                }
                HeaderScan::BadMagic(m) => panic!("bad reply magic {m:#x}"),
            }
        }
    }

    /// Reads one chunk (header + decoded body).
    async fn chunk(&mut self) -> (ReplyHeader, ChunkBody) {
        let h = self.header().await;
        let (kind, len) = match h {
            ReplyHeader::Structured {
                chunk_type, length, ..
            } => (chunk_type, length as usize),
            ReplyHeader::Extended {
                chunk_type, length, ..
            } => (chunk_type, length as usize),
            ReplyHeader::Simple { .. } => return (h, ChunkBody::None),
        };
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).await.unwrap();
        let decoded = ChunkBody::decode(kind, &payload);
        assert!(decoded.violations.is_empty(), "{:?}", decoded.violations);
        (h, decoded.value)
    }

    async fn draft_reply(&mut self) -> (u32, Vec<DraftDescriptor>) {
        let ReplyHeader::Simple { error, cookie } = self.header().await else {
            panic!("draft replies are simple")
        };
        assert_eq!(cookie, 0xC0FFEE);
        let p = self.s.read_u32().await.unwrap();
        let mut params = vec![0u8; p as usize];
        self.s.read_exact(&mut params).await.unwrap();
        (error, decode_descriptors(&params).value)
    }

    async fn expect_eof(&mut self) {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut b))
            .await
            .expect("server should close")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

fn covered(d: &[DraftDescriptor], offset: u64, length: u64) {
    let mut at = offset;
    for x in d {
        assert_eq!(x.offset, at, "contiguous ascending descriptors");
        assert!(x.length > 0);
        at += x.length as u64;
    }
    assert_eq!(at, offset + length, "the request is covered exactly");
}

#[tokio::test]
async fn draft_dialect_end_to_end() {
    let server = start(Dialect::Draft, &["dirt:4K"]).await;
    let mut c = Client::connect(&server.addr).await;
    assert_eq!(
        c.option(option::STRUCTURED_REPLY, &[]).await[0].0,
        reply_type::ERR_UNSUP
    );
    c.go().await;

    // GET_ALLOCATED over [0, 2M): hole, data, hole.
    c.request(cmd::BLOCK_STATUS, 0, 0, 2 * MIB, &[]).await;
    let (error, d) = c.draft_reply().await;
    assert_eq!(error, 0);
    covered(&d, 0, 2 * MIB);
    let data = d
        .iter()
        .find(|x| x.offset == MIB)
        .expect("data starts at 1M");
    assert_eq!((data.length, data.status), (4096, 0));
    assert!(d.iter().all(|x| x.status <= 2));

    // Dirty query: clean until written, then dirty at granule boundaries (DIRTY = 0).
    c.request(cmd::WRITE, 0, 5000, 10, &[1; 10]).await;
    assert!(matches!(
        c.header().await,
        ReplyHeader::Simple { error: 0, .. }
    ));
    c.request(cmd::BLOCK_STATUS, 1, 0, 16384, &[]).await;
    let (error, d) = c.draft_reply().await;
    assert_eq!(error, 0);
    let summary: Vec<_> = d.iter().map(|x| (x.offset, x.length, x.status)).collect();
    assert_eq!(
        summary,
        vec![(0, 4096, 1), (4096, 4096, 0), (8192, 8192, 1)]
    );

    // Unknown selector: exactly one descriptor equal to the request, status 0.
    c.request(cmd::BLOCK_STATUS, 0x40, 512, 1000, &[]).await;
    let (_, d) = c.draft_reply().await;
    assert_eq!(
        d,
        vec![DraftDescriptor {
            offset: 512,
            length: 1000,
            status: 0
        }]
    );

    // Errors carry P = 0, so the stream stays in sync for the next request.
    c.request(cmd::BLOCK_STATUS, 0, SIZE, 512, &[]).await;
    assert_eq!(c.draft_reply().await, (errno::EINVAL, vec![]));
    c.request(cmd::BLOCK_STATUS, 0, 0, 0, &[]).await;
    assert_eq!(c.draft_reply().await, (errno::EINVAL, vec![]));
    c.request(cmd::READ, 0, MIB, 4, &[]).await;
    assert!(matches!(
        c.header().await,
        ReplyHeader::Simple { error: 0, .. }
    ));
    let mut data = [0u8; 4];
    c.s.read_exact(&mut data).await.unwrap();
    assert_eq!(data, [0xEE; 4]);
}

#[tokio::test]
async fn extended_headers_end_to_end() {
    let server = start(Dialect::Standard, &["b0"]).await;
    let mut c = Client::connect(&server.addr).await;
    assert_eq!(
        c.option(option::EXTENDED_HEADERS, &[]).await[0].0,
        reply_type::ACK
    );
    let set = meta_context_payload("disk", &["base:allocation", "qemu:dirty-bitmap:b0"]);
    let r = c.option(option::SET_META_CONTEXT, &set).await;
    assert_eq!(r.len(), 3);
    c.go().await;
    c.form = HeaderForm::Extended;

    // Block status: one type-6 chunk per context, DONE on the last, offset echoed.
    c.request(cmd::BLOCK_STATUS, 0, MIB, 2 * MIB, &[]).await;
    let (h1, b1) = c.chunk().await;
    let (h2, b2) = c.chunk().await;
    assert!(matches!(h1, ReplyHeader::Extended { flags: 0, offset, .. } if offset == MIB));
    assert!(matches!(h2, ReplyHeader::Extended { flags: 1, .. }));
    let ChunkBody::BlockStatusExt {
        context_id: 0,
        descriptors,
        ..
    } = b1
    else {
        panic!("{b1:?}")
    };
    assert_eq!((descriptors[0].length, descriptors[0].flags), (4096, 0));
    assert!(descriptors.iter().map(|d| d.length).sum::<u64>() <= 2 * MIB);
    let ChunkBody::BlockStatusExt {
        context_id: 1,
        descriptors,
        ..
    } = b2
    else {
        panic!("{b2:?}")
    };
    assert_eq!(descriptors.len(), 1);

    // Payload-free success is a NONE chunk; PAYLOAD_LEN write works.
    c.request(cmd::WRITE, flag::PAYLOAD_LEN, 0, 3, b"abc").await;
    let (h, body) = c.chunk().await;
    assert!(matches!(
        h,
        ReplyHeader::Extended {
            flags: 1,
            chunk_type: 0,
            ..
        }
    ));
    assert_eq!(body, ChunkBody::None);

    // A payload on BLOCK_STATUS is read, discarded, and refused; the link survives.
    c.request(cmd::BLOCK_STATUS, flag::PAYLOAD_LEN, 0, 12, &[0; 12])
        .await;
    let (_, body) = c.chunk().await;
    assert!(matches!(
        body,
        ChunkBody::Error {
            error: errno::EINVAL,
            ..
        }
    ));

    // REQ_ONE: one descriptor per context, within the request.
    c.request(cmd::BLOCK_STATUS, flag::REQ_ONE, 100, 50, &[])
        .await;
    for _ in 0..2 {
        let (_, body) = c.chunk().await;
        let ChunkBody::BlockStatusExt { descriptors, .. } = body else {
            panic!("{body:?}")
        };
        assert_eq!(descriptors.len(), 1);
        assert!(descriptors[0].length <= 50);
    }

    // READ returns one OFFSET_DATA chunk.
    c.request(cmd::READ, 0, 0, 3, &[]).await;
    let (_, body) = c.chunk().await;
    assert!(matches!(body, ChunkBody::OffsetData { offset: 0, ref data } if &data[..] == b"abc"));

    // A compact header on an extended connection has the wrong magic: error, then close.
    let mut b = BytesMut::new();
    Request::new(HeaderForm::Compact, cmd::READ, 0, 9, 0, 512)
        .encode(HeaderForm::Compact, &mut b)
        .unwrap();
    b.extend_from_slice(&[0; 4]);
    c.raw(&b).await;
    let (_, body) = c.chunk().await;
    assert!(matches!(
        body,
        ChunkBody::Error {
            error: errno::EINVAL,
            ..
        }
    ));
    c.expect_eof().await;
}

#[tokio::test]
async fn structured_errors_and_context_rules() {
    let server = start(Dialect::Standard, &[]).await;
    let mut c = Client::connect(&server.addr).await;
    assert_eq!(
        c.option(option::STRUCTURED_REPLY, &[]).await[0].0,
        reply_type::ACK
    );
    c.option(
        option::SET_META_CONTEXT,
        &meta_context_payload("disk", &["base:allocation"]),
    )
    .await;
    // A malformed SET fails and clears the selection.
    assert_eq!(
        c.option(option::SET_META_CONTEXT, &[0, 0, 0, 200]).await[0].0,
        reply_type::ERR_INVALID
    );
    c.go().await;
    c.request(cmd::BLOCK_STATUS, 0, 0, 512, &[]).await;
    let (_, body) = c.chunk().await;
    assert!(matches!(
        body,
        ChunkBody::Error {
            error: errno::EINVAL,
            ..
        }
    ));
    // Success without payload may be simple in structured mode.
    c.request(cmd::FLUSH, 0, 0, 0, &[]).await;
    assert!(matches!(
        c.header().await,
        ReplyHeader::Simple { error: 0, .. }
    ));
    // A WRITE over the maximum payload ends the connection.
    c.request(cmd::WRITE, 0, 0, 64 * MIB, &[]).await;
    let (_, body) = c.chunk().await;
    assert!(matches!(
        body,
        ChunkBody::Error {
            error: errno::EINVAL,
            ..
        }
    ));
    c.expect_eof().await;
}

#[tokio::test]
async fn handshake_violations_close_and_many_clients_are_served() {
    let server = start(Dialect::Standard, &[]).await;
    // Unknown client flag bit: closed before any option reply.
    let mut s = TcpStream::connect(&server.addr).await.unwrap();
    let mut greeting = [0u8; magic::GREETING_LEN];
    s.read_exact(&mut greeting).await.unwrap();
    s.write_u32(4).await.unwrap();
    let mut c = Client {
        s,
        form: HeaderForm::Compact,
    };
    c.expect_eof().await;

    // Oversized option length: closed without reading it.
    let mut c = Client::connect(&server.addr).await;
    let mut b = BytesMut::new();
    crate::wire::handshake::encode_option_raw(&mut b, magic::IHAVEOPT, option::GO, u32::MAX, &[]);
    c.raw(&b).await;
    c.expect_eof().await;

    // Many concurrent clients, each doing a full negotiation and a read.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = server.addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&addr).await;
            c.go().await;
            c.request(cmd::READ, 0, MIB, 8, &[]).await;
            assert!(matches!(
                c.header().await,
                ReplyHeader::Simple { error: 0, .. }
            ));
            let mut data = [0u8; 8];
            c.s.read_exact(&mut data).await.unwrap();
            assert_eq!(data, [0xEE; 8]);
            c.request(cmd::DISC, 0, 0, 0, &[]).await;
            c.expect_eof().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
