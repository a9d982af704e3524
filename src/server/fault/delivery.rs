//! How the replies to status queries reach the client under the faults that attack the
//! connection rather than what a reply says: the disconnect faults (a status query with
//! NBD_CMD_DISC right behind it is dropped, or cut short with EIO) and the hostile ones (never
//! answering, dripping, absurd lengths, garbage, hanging up mid-reply). Without them a reply
//! is simply sent.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::{Fault, Faults};
use crate::server::plan::{refuse, Refusal};
use crate::server::replies::ReplyForm;
use crate::wire::consts::{chunk_type, command as cmd, errno, reply_flag};
use crate::wire::reply::ReplyHeader;
use crate::wire::request::{HeaderForm, Request};

/// The lie told by `huge-length` and `draft-huge-length`: just under 4 GiB.
const HUGE_LENGTH: u32 = 0xFFFF_FFF0;
/// Bytes per write while streaming towards a huge claimed length.
const STREAM_PIECE: usize = 64 * 1024;
/// `drip`: one byte per this long.
const DRIP_INTERVAL: Duration = Duration::from_secs(1);
/// How long the disconnect faults wait for the request behind a status query to arrive.
const DISC_WAIT: Duration = Duration::from_millis(50);
/// What `disc-answers-eio` answers instead.
const CUT_SHORT: Refusal = refuse(errno::EIO, "cut short by the DISC behind it");

/// What the disconnect faults do to a status request that has NBD_CMD_DISC right behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeforeDisc {
    /// Close without answering it.
    Drop,
    /// Answer it with EIO.
    Eio,
}

/// How the hostile faults send a status reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Send nothing; read and discard until the client leaves.
    Hang,
    /// Send the reply one byte per second.
    Drip,
    /// A compact status chunk header claiming this many payload bytes, then zeros.
    HugeChunk(u32),
    /// A draft reply header and a P of this many bytes, then zeros.
    HugeDraftP(u32),
    /// Garbage before the first status reply of the connection.
    Garbage,
    /// Half the reply, then close.
    CloseMidReply,
}

/// Whether the connection goes on after a status reply was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    KeepOpen,
    Close,
}

/// How one connection's status replies reach the client.
#[derive(Debug)]
pub struct Delivery {
    before_disc: Option<BeforeDisc>,
    hostile: Option<Hostile>,
    /// The request header form, to recognise NBD_CMD_DISC in what the client has sent.
    header_form: HeaderForm,
    /// `garbage-after-handshake` has struck on this connection.
    garbled: bool,
}

impl Faults {
    /// How the status replies of a connection with these reply and request header forms are
    /// delivered (`draft`: the export speaks the 2016 draft).
    pub fn delivery(&self, form: ReplyForm, header_form: HeaderForm, draft: bool) -> Delivery {
        Delivery {
            before_disc: self.before_disc(),
            hostile: self.hostile(form, draft),
            header_form,
            garbled: false,
        }
    }

    fn before_disc(&self) -> Option<BeforeDisc> {
        if self.has(Fault::DiscDropsOutstanding) {
            Some(BeforeDisc::Drop)
        } else if self.has(Fault::DiscAnswersEio) {
            Some(BeforeDisc::Eio)
        } else {
            None
        }
    }

    fn hostile(&self, form: ReplyForm, draft: bool) -> Option<Hostile> {
        if self.has(Fault::Hang) {
            Some(Hostile::Hang)
        } else if self.has(Fault::Drip) {
            Some(Hostile::Drip)
        } else if self.has(Fault::HugeLength) && !draft && form == ReplyForm::Structured {
            Some(Hostile::HugeChunk(HUGE_LENGTH))
        } else if self.has(Fault::DraftHugeLength) && draft {
            Some(Hostile::HugeDraftP(HUGE_LENGTH))
        } else if self.has(Fault::GarbageAfterHandshake) {
            Some(Hostile::Garbage)
        } else if self.has(Fault::CloseMidReply) {
            Some(Hostile::CloseMidReply)
        } else {
            None
        }
    }
}

impl Delivery {
    /// Delivers `reply`, the reply to the status query `req`; `refusal` builds the reply that
    /// would refuse `req` instead.
    pub async fn deliver<S>(
        &mut self,
        io: &mut BufStream<S>,
        req: &Request,
        reply: BytesMut,
        refusal: impl FnOnce(Refusal) -> BytesMut,
    ) -> io::Result<Delivered>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut reply = reply;
        if let Some(how) = self.before_disc {
            if disc_waits_behind(io, self.header_form).await {
                match how {
                    BeforeDisc::Drop => return Ok(Delivered::Close),
                    BeforeDisc::Eio => reply = refusal(CUT_SHORT),
                }
            }
        }
        match self.hostile {
            Some(how) => self.misbehave(io, how, req, &reply).await,
            None => {
                send(io, &reply).await?;
                Ok(Delivered::KeepOpen)
            }
        }
    }

    /// A hostile fault's way of answering a status request whose real reply is `reply`.
    async fn misbehave<S>(
        &mut self,
        io: &mut BufStream<S>,
        how: Hostile,
        req: &Request,
        reply: &[u8],
    ) -> io::Result<Delivered>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match how {
            Hostile::Hang => {
                discard_until_eof(io).await;
                Ok(Delivered::Close)
            }
            Hostile::Drip => {
                for byte in reply {
                    send(io, std::slice::from_ref(byte)).await?;
                    tokio::time::sleep(DRIP_INTERVAL).await;
                }
                Ok(Delivered::KeepOpen)
            }
            Hostile::HugeChunk(length) => {
                let mut head = BytesMut::new();
                ReplyHeader::Structured {
                    flags: reply_flag::DONE,
                    chunk_type: chunk_type::BLOCK_STATUS,
                    cookie: req.cookie,
                    length,
                }
                .encode(&mut head);
                stream_claim(io, &head, length as u64).await
            }
            Hostile::HugeDraftP(p) => {
                let mut head = BytesMut::new();
                ReplyHeader::Simple {
                    error: 0,
                    cookie: req.cookie,
                }
                .encode(&mut head);
                head.extend_from_slice(&p.to_be_bytes());
                stream_claim(io, &head, p as u64).await
            }
            Hostile::Garbage => {
                if !self.garbled {
                    self.garbled = true;
                    send(io, &garbage()).await?;
                }
                send(io, reply).await?;
                Ok(Delivered::KeepOpen)
            }
            Hostile::CloseMidReply => {
                let half = (reply.len() / 2).max(1).min(reply.len());
                send(io, &reply[..half]).await?;
                Ok(Delivered::Close)
            }
        }
    }
}

/// For the disconnect faults: whether the next request, already sent or arriving within
/// [`DISC_WAIT`], is NBD_CMD_DISC. Only looks (`fill_buf` consumes nothing and may be
/// cancelled).
async fn disc_waits_behind<S>(io: &mut BufStream<S>, form: HeaderForm) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = form.header_len();
    match tokio::time::timeout(DISC_WAIT, io.fill_buf()).await {
        Ok(Ok(buffered)) if buffered.len() >= len => {
            Request::decode(form, &buffered[..len]).is_some_and(|r| r.command == cmd::DISC)
        }
        _ => false,
    }
}

/// Reads and drops whatever the client sends until it leaves.
async fn discard_until_eof<S>(io: &mut BufStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sink = [0u8; 4096];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Sends `head`, then zeros towards the `claimed` payload bytes, until the client hangs up.
async fn stream_claim<S>(io: &mut BufStream<S>, head: &[u8], claimed: u64) -> io::Result<Delivered>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(io, head).await?;
    let zeros = vec![0u8; STREAM_PIECE];
    let mut sent = 0u64;
    while sent < claimed {
        let n = (claimed - sent).min(STREAM_PIECE as u64) as usize;
        io.write_all(&zeros[..n]).await?;
        sent += n as u64;
    }
    io.flush().await?;
    Ok(Delivered::Close)
}

async fn send<S>(io: &mut BufStream<S>, bytes: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(bytes).await?;
    io.flush().await
}

/// `garbage-after-handshake`: 4 KiB that start with no reply magic.
fn garbage() -> Vec<u8> {
    b"\xde\xad\xbe\xef not an NBD reply; "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_just_send() {
        let delivery =
            Faults::default().delivery(ReplyForm::Structured, HeaderForm::Compact, false);
        assert_eq!((delivery.before_disc, delivery.hostile), (None, None));
    }

    #[test]
    fn huge_length_keeps_to_its_dialect_and_form() {
        let huge = Faults::new([Fault::HugeLength]);
        let on = |form, draft| huge.delivery(form, HeaderForm::Compact, draft).hostile;
        assert_eq!(
            on(ReplyForm::Structured, false),
            Some(Hostile::HugeChunk(HUGE_LENGTH))
        );
        assert_eq!(on(ReplyForm::Extended, false), None);
        assert_eq!(on(ReplyForm::Simple, true), None);
    }
}
