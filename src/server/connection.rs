//! One client connection from greeting to close: the socket side of negotiation, then the
//! transmission loop.
//!
//! Every length read from the wire is checked before anything is allocated for it. Protocol
//! violations close the connection quietly (HS-VIOL-1, TX-VIOL-1); only unexpected socket errors
//! are logged, one line each. Negotiation has a deadline (`--handshake-timeout`) and ends early
//! when the connection's slot is taken for a newer client ([`Ticket::evicted`]); both close the
//! connection, which the spec allows a server against a client it takes for a denial of service
//! while haggling (`client_limits`).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::admission::{Notice, Ticket};
use super::export::Export;
use super::negotiate::{client_flags_acceptable, Negotiation, Next, Session};
use super::transmit;
use crate::wire::consts::{handshake_flag, limit, magic};
use crate::wire::handshake::{Greeting, OptionHeader};

/// Serves one client until it leaves; never panics, never returns an error. `ticket` is its
/// connection slot, given back when this returns.
pub async fn serve_connection<S>(stream: S, export: Arc<Export>, ticket: Ticket, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = BufStream::new(stream);
    if let Err(e) = drive(&mut io, &export, &ticket).await {
        if !is_ordinary_disconnect(&e) {
            eprintln!("nbd-conform serve: connection from {peer}: {e}");
        }
    }
    // Best effort: the peer may already be gone.
    let _ = io.shutdown().await;
}

async fn drive<S>(io: &mut BufStream<S>, export: &Arc<Export>, ticket: &Ticket) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = export.client_limits.handshake_timeout;
    let negotiated = tokio::select! {
        negotiated = tokio::time::timeout(deadline, handshake(io, export, ticket)) => match negotiated {
            Ok(negotiated) => negotiated?,
            Err(_) => {
                ticket.notices().say(Notice::HandshakeTimeout, || format!(
                    "closed a client still negotiating after {}s (--handshake-timeout)",
                    deadline.as_secs_f64()
                ));
                None
            }
        },
        () = ticket.evicted() => None,
    };
    ticket.negotiated();
    match negotiated {
        Some(session) => transmit::serve(io, export, session, ticket.notices()).await,
        None => Ok(()),
    }
}

/// Greeting, client flags and options; `None` when the connection should close instead of
/// transmitting.
async fn handshake<S>(
    io: &mut BufStream<S>,
    export: &Arc<Export>,
    ticket: &Ticket,
) -> io::Result<Option<Session>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    Greeting::new(handshake_flag::FIXED_NEWSTYLE | handshake_flag::NO_ZEROES).encode(&mut out);
    send(io, &out).await?;
    let client_flags = io.read_u32().await?;
    ticket.heard_from();
    if !client_flags_acceptable(client_flags) {
        return Ok(None);
    }
    negotiate(io, export, client_flags, ticket).await
}

/// The option loop; `None` when the connection should close instead of transmitting.
async fn negotiate<S>(
    io: &mut BufStream<S>,
    export: &Export,
    client_flags: u32,
    ticket: &Ticket,
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
        ticket.heard_from();
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
