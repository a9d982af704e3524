//! The transmission phase: read requests, check them, run them against the export, reply.
//!
//! Requests are handled one at a time per connection (replies therefore come back in order,
//! which is legal, TX-OOO-1). Checking is a pure step ([`plan`](super::plan::plan)) that turns a
//! request into a [`Command`] or a [`Refusal`]; only then is the image touched, on the blocking
//! thread pool. Client mistakes get an error reply and the connection stays open (TX-NODROP-1);
//! only a wrong magic or an oversized payload, after which the stream cannot be trusted, closes
//! it.
//!
//! The export's faults (the tamper layer, [`super::fault`]) meet a request at three points
//! here: the verdict on it ([`Faults::review`]), the reply to a status query once built
//! ([`Faults::rewrite`], in `encode_status_reply`), and how that reply is delivered
//! ([`Delivery`]). What a status answer says is built, with its own points, in
//! [`super::status`]. Without faults each point hands back what it was given.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::export::Export;
use super::fault::{self, Delivered, Delivery, Faults};
use super::image::Image;
use super::negotiate::Session;
use super::plan::{payload_of, plan, refuse, Command, Payload, Refusal};
use super::replies::{ReplyForm, StatusReply};
use super::status;
use crate::wire::consts::{command as cmd, draft, errno, magic};
use crate::wire::reply::ReplyHeader;
use crate::wire::request::{HeaderForm, Request};

/// What the loop does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Continue,
    Close,
}

/// One connection in transmission.
struct Transmission<'a, S> {
    io: &'a mut BufStream<S>,
    export: &'a Arc<Export>,
    session: Session,
    header_form: HeaderForm,
    reply_form: ReplyForm,
    /// How this connection's status replies reach the client.
    delivery: Delivery,
    /// `slow-replies` has made this connection wait once.
    was_slow: bool,
    /// `draft-read-cookies-crossed`: a READ's reply waiting for the status reply behind it.
    held_read: Option<BytesMut>,
}

/// Serves requests until the client disconnects, sends DISC, or breaks the framing.
pub async fn serve<S>(
    io: &mut BufStream<S>,
    export: &Arc<Export>,
    session: Session,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let header_form = if session.extended {
        HeaderForm::Extended
    } else {
        HeaderForm::Compact
    };
    let reply_form = ReplyForm::new(session.structured, session.extended);
    let delivery = export
        .faults
        .delivery(reply_form, header_form, export.is_draft());
    let mut t = Transmission {
        io,
        export,
        session,
        header_form,
        reply_form,
        delivery,
        was_slow: false,
        held_read: None,
    };
    while t.next_request().await? == After::Continue {}
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transmission<'_, S> {
    async fn next_request(&mut self) -> io::Result<After> {
        let mut header = [0u8; magic::EXTENDED_REQUEST_LEN];
        let header = &mut header[..self.header_form.header_len()];
        match self.io.read_exact(header).await {
            Ok(_) => {}
            // A client leaving between requests is an ordinary end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(After::Close),
            Err(e) => return Err(e),
        }
        let Some(req) = Request::decode(self.header_form, header) else {
            return Ok(After::Close);
        };
        let expected_magic = match self.header_form {
            HeaderForm::Compact => magic::REQUEST,
            HeaderForm::Extended => magic::EXTENDED_REQUEST,
        };
        if req.magic != expected_magic {
            self.refuse(&req, refuse(errno::EINVAL, "bad request magic"))
                .await?;
            return Ok(After::Close);
        }
        self.handle(req).await
    }

    async fn handle(&mut self, req: Request) -> io::Result<After> {
        let advertised = self.export.block_sizes().maximum;
        let payload = match payload_of(&req, &self.session, advertised) {
            Payload::None => Vec::new(),
            Payload::Bytes(n) => {
                let mut data = vec![0u8; n];
                self.io.read_exact(&mut data).await?;
                data
            }
            Payload::TooBig => {
                let refusal = refuse(errno::EINVAL, "payload larger than the maximum");
                if self.export.faults.keeps_open_after_big_payload() {
                    // In large reads: a 32 MiB payload in tokio::io::copy's 8 KiB steps took
                    // over a second on a loaded machine, longer than the fault trials wait.
                    let mut scratch = vec![0u8; 1 << 20];
                    let mut left = req.length;
                    while left > 0 {
                        let n = left.min(scratch.len() as u64) as usize;
                        self.io.read_exact(&mut scratch[..n]).await?;
                        left -= n as u64;
                    }
                    self.refuse(&req, refusal).await?;
                    return Ok(After::Continue);
                }
                self.refuse(&req, refusal).await?;
                return Ok(After::Close);
            }
        };
        if req.command == cmd::DISC {
            // Earlier requests are already answered (one at a time), so just close (TX-DISC-1).
            return Ok(After::Close);
        }
        // A block-status payload is tiny (a filter); faults get to see it after the checks.
        let status_payload = match req.command {
            cmd::BLOCK_STATUS => payload.clone(),
            _ => Vec::new(),
        };
        let planned = plan(&req, payload, self.export, &self.session);
        let mut out = BytesMut::new();
        match self
            .export
            .faults
            .review(&req, &status_payload, self.export, planned)
        {
            Ok(command) => self.run(&req, command, &mut out).await,
            Err(refusal) if refusal.misuse && self.export.variants.closes_on_misuse() => {
                return Ok(After::Close);
            }
            Err(refusal) => encode_refusal(self.export, self.reply_form, &req, refusal, &mut out),
        }
        if !is_status_query(self.export, &req) {
            if req.command == cmd::READ
                && self.export.is_draft()
                && self.export.faults.crosses_read_and_status()
                && fault::status_waits_behind(self.io, self.header_form).await
            {
                self.held_read = Some(out);
                return Ok(After::Continue);
            }
            self.send(&out).await?;
            return Ok(After::Continue);
        }
        if let Some(mut read) = self.held_read.take() {
            fault::cross_cookies(&mut read, &mut out);
            self.send(&read).await?;
        }
        if let Some(delay) = self.export.variants.reply_delay() {
            // The first status reply of a connection is the slow one (a cold path: a plugin
            // starting, a disk spinning up); later ones come at once.
            if !self.was_slow {
                self.was_slow = true;
                tokio::time::sleep(delay).await;
            }
        }
        let (export, form) = (self.export, self.reply_form);
        let refuse_instead = |refusal| {
            let mut out = BytesMut::new();
            encode_refusal(export, form, &req, refusal, &mut out);
            out
        };
        match self
            .delivery
            .deliver(self.io, &req, out, refuse_instead)
            .await?
        {
            Delivered::KeepOpen => Ok(After::Continue),
            Delivered::Close => Ok(After::Close),
        }
    }

    async fn refuse(&mut self, req: &Request, refusal: Refusal) -> io::Result<()> {
        let mut out = BytesMut::new();
        encode_refusal(self.export, self.reply_form, req, refusal, &mut out);
        self.send(&out).await
    }

    async fn send(&mut self, out: &[u8]) -> io::Result<()> {
        self.io.write_all(out).await?;
        self.io.flush().await
    }

    /// Runs a checked command and writes its reply; I/O failures become EIO replies.
    async fn run(&self, req: &Request, command: Command, out: &mut BytesMut) {
        let (export, form) = (self.export, self.reply_form);
        let (cookie, offset) = (req.cookie, req.offset);
        let result = match command {
            Command::Read { offset, length } => export
                .image_io(move |image| image.read(offset, length))
                .await
                .map(|data| form.read_data(out, cookie, offset, data)),
            Command::BlockStatus {
                offset,
                length,
                req_one,
                only,
            } => {
                if export.failing_status {
                    let chunk =
                        form.backend_failure(cookie, offset, length, export.minimum_block());
                    encode_status_reply(&export.faults, StatusReply::ErrorChunk(chunk), out);
                    return;
                }
                let contexts = only.as_deref().unwrap_or(&self.session.contexts);
                let extended = form == ReplyForm::Extended;
                status::block_status(export, contexts, extended, offset, length, req_one)
                    .await
                    .map(|answer| {
                        let reply = form.block_status(cookie, offset, answer.into_chunks());
                        encode_status_reply(&export.faults, reply, out)
                    })
            }
            Command::LbaStatus {
                offset,
                length,
                query,
            } => status::lba_status(export, offset, length, query)
                .await
                .map(|answer| {
                    let reply = StatusReply::draft_answer(cookie, &answer.descriptors);
                    encode_status_reply(&export.faults, reply, out)
                }),
            other => self
                .modify(other)
                .await
                .map(|()| match export.faults.after_write(req) {
                    Some(refusal) => encode_refusal(export, form, req, refusal, out),
                    None => form.done(out, cookie, offset),
                }),
        };
        if let Err(e) = result {
            eprintln!(
                "nbd-conform serve: {} at offset {offset} failed: {e}",
                cmd::name(req.command)
            );
            let refusal = refuse(errno::EIO, "I/O error on the image");
            encode_refusal(export, form, req, refusal, out);
        }
    }

    /// Commands without reply data: writes, trims, flushes, cache hints.
    async fn modify(&self, command: Command) -> io::Result<()> {
        let export = self.export;
        // Bitmaps are marked before the change, so a failed or partial write still shows dirty.
        match command {
            Command::Write { offset, data, fua } => {
                export.mark_dirty(offset, data.len() as u64);
                export
                    .image_io(move |image| {
                        image.write(offset, &data)?;
                        sync_if(fua, image)
                    })
                    .await
            }
            Command::Trim {
                offset,
                length,
                fua,
            } => {
                export.mark_dirty(offset, length);
                // TRIM is advisory: a file system without hole punching simply keeps the data.
                export
                    .image_io(move |image| {
                        image.punch_hole(offset, length)?;
                        sync_if(fua, image)
                    })
                    .await
            }
            Command::WriteZeroes {
                offset,
                length,
                punch,
                fua,
            } => {
                export.mark_dirty(offset, length);
                export
                    .image_io(move |image| {
                        image.write_zeroes(offset, length, punch)?;
                        sync_if(fua, image)
                    })
                    .await
            }
            Command::Flush => export.image_io(|image| image.flush()).await,
            _ => Ok(()),
        }
    }
}

/// Block status, or the draft's GET_LBA_STATUS: the requests faults are about.
fn is_status_query(export: &Export, req: &Request) -> bool {
    if export.is_draft() {
        req.command == draft::CMD_GET_LBA_STATUS
    } else {
        req.command == cmd::BLOCK_STATUS
    }
}

/// The reply refusing `req` on a connection with reply form `form`.
fn encode_refusal(
    export: &Export,
    form: ReplyForm,
    req: &Request,
    refusal: Refusal,
    out: &mut BytesMut,
) {
    let (cookie, offset, errno) = (req.cookie, req.offset, refusal.errno);
    if export.is_draft() && req.command == draft::CMD_GET_LBA_STATUS {
        let reply = StatusReply::draft_refusal(cookie, errno);
        encode_status_reply(&export.faults, reply, out);
    } else if export.variants.simple_status_errors()
        && form == ReplyForm::Structured
        && req.command != cmd::READ
    {
        // Allowed for every command but READ under structured replies (SR-SIMPLEOK-1).
        ReplyHeader::Simple {
            error: errno,
            cookie,
        }
        .encode(out);
    } else if is_status_query(export, req) {
        match form.error_chunk(cookie, offset, errno, refusal.message) {
            Some(chunk) => encode_status_reply(&export.faults, StatusReply::ErrorChunk(chunk), out),
            None => form.error(out, cookie, offset, errno, refusal.message),
        }
    } else {
        form.error(out, cookie, offset, errno, refusal.message);
    }
}

/// Every reply to a status query is encoded here, after the one point where a fault may
/// rewrite what the clean server built.
fn encode_status_reply(faults: &Faults, mut reply: StatusReply, out: &mut BytesMut) {
    faults.rewrite(&mut reply);
    reply.encode(out);
}

fn sync_if(fua: bool, image: &Image) -> io::Result<()> {
    if fua {
        image.flush()
    } else {
        Ok(())
    }
}
