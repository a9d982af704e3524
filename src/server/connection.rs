//! One client connection from greeting to close: the socket side of negotiation, then the
//! transmission loop.
//!
//! Every length read from the wire is checked before anything is allocated for it. Protocol
//! violations close the connection quietly (HS-VIOL-1, TX-VIOL-1); only unexpected socket errors
//! are logged, one line each.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::export::Export;
use super::negotiate::{client_flags_acceptable, Negotiation, Next, Session};
use super::transmit;
use crate::wire::consts::{handshake_flag, limit, magic};
use crate::wire::handshake::{Greeting, OptionHeader};

/// Serves one client until it leaves; never panics, never returns an error.
pub async fn serve_connection<S>(stream: S, export: Arc<Export>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = BufStream::new(stream);
    if let Err(e) = drive(&mut io, &export).await {
        if !is_ordinary_disconnect(&e) {
            eprintln!("nbd-conform serve: connection from {peer}: {e}");
        }
    }
    // Best effort: the peer may already be gone.
    let _ = io.shutdown().await;
}

async fn drive<S>(io: &mut BufStream<S>, export: &Arc<Export>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    Greeting::new(handshake_flag::FIXED_NEWSTYLE | handshake_flag::NO_ZEROES).encode(&mut out);
    send(io, &out).await?;
    let client_flags = io.read_u32().await?;
    if !client_flags_acceptable(client_flags) {
        return Ok(());
    }
    match negotiate(io, export, client_flags).await? {
        Some(session) => transmit::serve(io, export, session).await,
        None => Ok(()),
    }
}

/// The option loop; `None` when the connection should close instead of transmitting.
async fn negotiate<S>(
    io: &mut BufStream<S>,
    export: &Export,
    client_flags: u32,
) -> io::Result<Option<Session>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut negotiation = Negotiation::new(export, client_flags);
    loop {
        let mut header = [0u8; magic::OPTION_HEADER_LEN];
        io.read_exact(&mut header).await?;
        let Some(header) = OptionHeader::decode(&header) else {
            return Ok(None);
        };
        if header.magic != magic::IHAVEOPT || header.length > limit::MAX_OPTION_PAYLOAD {
            return Ok(None);
        }
        let mut data = vec![0u8; header.length as usize];
        io.read_exact(&mut data).await?;
        let mut out = BytesMut::new();
        let next = negotiation.handle(header.option, &data, &mut out);
        send(io, &out).await?;
        match next {
            Next::Continue => {}
            Next::Close => return Ok(None),
            Next::Transmit(session) => return Ok(Some(session)),
        }
    }
}

async fn send<S>(io: &mut BufStream<S>, bytes: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(bytes).await?;
    io.flush().await
}

/// Errors that only mean "the client went away".
fn is_ordinary_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}
