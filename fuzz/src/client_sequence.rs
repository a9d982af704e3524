//! `client_sequence`: the client's option-reply loop and reply assembler against a server that
//! sends one sequence of messages again and again, forever.
//!
//! Input: byte 0 picks the exchange ([`Exchange`]); the rest is one cycle of server bytes (any
//! number of messages, whole or not). The fake server sends what leads up to the exchange (the
//! greeting; for transmission, a whole correct handshake), then the cycle, repeated until the
//! client hangs up.
//!
//! Such a server never stalls, so no exchange with it may end by waiting out its deadline: each
//! ends with a final reply, a complete reply, or a cap (replies per option, chunks and
//! descriptors per request, stray replies per connection). A client that waits out a deadline
//! there has met an endless stream no cap ends, and that is reported as a crash, with the input.
//! Memory is left to libFuzzer's `-rss_limit_mb`: a cap that is missing grows at hundreds of
//! MB/s until the deadline, which that limit sees.

use std::time::Duration;

use bytes::BytesMut;
use nbd_conform::client::negotiate::GO_INFO_REQUESTS;
use nbd_conform::client::{ClientError, Endpoint, Handshake, Session, Target};
use nbd_conform::wire::consts::{command, option, reply_type};
use nbd_conform::wire::handshake::{
    encode_meta_context_reply, encode_option_reply, Greeting, Info,
};
use nbd_conform::Dialect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::runtime::{rig, run_bounded};

/// Per-message client timeout: long, so that only an exchange no cap ends reaches its
/// deadline (this plus a second) within the iteration's bound.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

/// The size of the export the handshake announces.
const EXPORT_SIZE: u64 = 1 << 20;

/// Which exchange the cycle answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// One option, answered by the cycle: its replies until a final one.
    Option(u32),
    /// Three requests (block status, READ, block status) after a correct handshake, with or
    /// without extended headers: the cycle is their replies.
    Requests { extended: bool },
}

impl Exchange {
    pub fn from_selector(s: u8) -> Exchange {
        match s & 0x07 {
            0 => Exchange::Option(option::STRUCTURED_REPLY),
            1 => Exchange::Option(option::LIST_META_CONTEXT),
            2 => Exchange::Option(option::SET_META_CONTEXT),
            3 => Exchange::Option(option::INFO),
            4 => Exchange::Option(option::GO),
            _ => Exchange::Requests {
                extended: s & 0x08 != 0,
            },
        }
    }

    /// What the server sends before the cycle.
    fn prefix(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        Greeting::new(3).encode(&mut out);
        if let Exchange::Requests { extended } = *self {
            let first = if extended {
                option::EXTENDED_HEADERS
            } else {
                option::STRUCTURED_REPLY
            };
            encode_option_reply(&mut out, first, reply_type::ACK, &[]);
            let mut context = BytesMut::new();
            encode_meta_context_reply(&mut context, 1, "base:allocation");
            let set = option::SET_META_CONTEXT;
            encode_option_reply(&mut out, set, reply_type::META_CONTEXT, &context);
            encode_option_reply(&mut out, set, reply_type::ACK, &[]);
            let mut info = BytesMut::new();
            Info::Export {
                size: EXPORT_SIZE,
                flags: 1,
            }
            .encode(&mut info);
            encode_option_reply(&mut out, option::GO, reply_type::INFO, &info);
            encode_option_reply(&mut out, option::GO, reply_type::ACK, &[]);
        }
        out.to_vec()
    }
}

pub fn run(data: &[u8]) {
    let Some((&selector, cycle)) = data.split_first() else {
        return;
    };
    if cycle.is_empty() {
        return;
    }
    let exchange = Exchange::from_selector(selector);
    let rig = rig();
    let target = Target {
        endpoint: Endpoint::Unix(rig.socket.clone()),
        export: String::new(),
    };
    let ended = run_bounded("client_sequence", async {
        let server = endless_server(&rig.listener, exchange.prefix(), cycle);
        let client = drive(&target, exchange);
        tokio::join!(server, client).1
    });
    if let Err(ClientError::Timeout { what, after }) = ended {
        panic!(
            "the client waited {after:?} for {what} from a server that never stops sending: \
             an endless stream no cap ends"
        );
    }
}

/// Runs the one exchange; the first error ends it.
async fn drive(target: &Target, exchange: Exchange) -> Result<(), ClientError> {
    let opt = match exchange {
        Exchange::Option(opt) => opt,
        Exchange::Requests { extended } => {
            let options = nbd_conform::client::SessionOptions {
                timeout: CLIENT_TIMEOUT,
                structured: true,
                extended,
                contexts: vec!["base:allocation".to_owned()],
                dialect: Dialect::Standard,
            };
            return requests(Session::open(target, &options).await?).await;
        }
    };
    let mut hs = Handshake::start(target, CLIENT_TIMEOUT, None).await?;
    match opt {
        option::LIST_META_CONTEXT => hs.list_meta_context("", &["base:"]).await.map(drop),
        option::SET_META_CONTEXT => hs
            .set_meta_context("", &["base:allocation"])
            .await
            .map(drop),
        option::INFO | option::GO => hs.info_or_go(opt, "", &GO_INFO_REQUESTS).await.map(drop),
        _ => hs.structured_reply().await.map(drop),
    }
}

/// Three requests in flight, then each reply waited for.
async fn requests(mut session: Session) -> Result<(), ClientError> {
    let asked = [
        (command::BLOCK_STATUS, 0, 64 << 10),
        (command::READ, 0, 4096),
        (command::BLOCK_STATUS, 64 << 10, 64 << 10),
    ];
    let mut cookies = Vec::new();
    for (cmd, offset, length) in asked {
        cookies.push(session.send(cmd, 0, offset, length, &[]).await?);
    }
    for cookie in cookies {
        session.wait_for(cookie).await?;
    }
    Ok(())
}

/// Accepts one connection, sends `prefix`, then `cycle` again and again until the client
/// leaves; drains what the client sends meanwhile.
async fn endless_server(listener: &UnixListener, prefix: Vec<u8>, cycle: &[u8]) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let (mut rd, mut wr) = stream.into_split();
    // Whole cycles per write, so that a short cycle costs few writes.
    let mut batch = Vec::with_capacity(64 << 10);
    while batch.len() < 64 << 10 {
        batch.extend_from_slice(cycle);
    }
    let send = async {
        // The client hangs up once it is done: that ends the flood (EPIPE).
        if wr.write_all(&prefix).await.is_err() {
            return;
        }
        while wr.write_all(&batch).await.is_ok() {}
    };
    let drain = async {
        let mut sink = [0u8; 4096];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    // The flood ends when the client hangs up, and so does the drain.
    tokio::select! {
        _ = send => {}
        _ = drain => {}
    }
}
