//! The transmission phase: read requests, check them, run them against the export, reply.
//!
//! Requests are handled one at a time per connection (replies therefore come back in order,
//! which is legal, TX-OOO-1), so a connection never has more than one reply in memory: the next
//! request is not read until the last reply is written. Checking is a pure step
//! ([`plan`]) that turns a request into a [`Command`] or a [`Refusal`]; only
//! then is the image touched, on the blocking thread pool. Client mistakes get an error reply
//! and the connection stays open (TX-NODROP-1); only a wrong magic or an oversized payload,
//! after which the stream cannot be trusted, closes it.
//!
//! Memory: a WRITE's payload is read only once the write passed its checks, into bytes held
//! from the server's [`budget`](super::budget); a refused write's payload is read and dropped
//! in pieces as it arrives. A READ reply is read from the image and written in pieces
//! ([`Budget::piece`]), never whole. With `--idle-timeout`, the wait for a request and the rest
//! of a request (its payload, its reply) each have that deadline.
//!
//! The export's faults (the tamper layer, [`super::fault`]) meet a request at three points
//! here: the verdict on it ([`Faults::review`]), the reply to a status query once built
//! ([`Faults::rewrite`], in `encode_status_reply`), and how that reply is delivered
//! ([`Delivery`]). What a status answer says is built, with its own points, in
//! [`super::status`]. Without faults each point hands back what it was given.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::admission::{Notice, Notices};
use super::budget::{Budget, Held, FLOOR_PIECE};
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

/// Serves requests until the client disconnects, sends DISC, breaks the framing, or (with
/// `--idle-timeout`) keeps the server waiting too long.
pub async fn serve<S>(
    io: &mut BufStream<S>,
    export: &Arc<Export>,
    session: Session,
    notices: &Notices,
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
    let idle = export.client_limits.idle_timeout;
    let timed_out = || {
        notices.say(Notice::IdleTimeout, || {
            format!(
                "closed a client that kept the server waiting over {}s (--idle-timeout)",
                idle.unwrap_or_default().as_secs_f64()
            )
        })
    };
    loop {
        let Some(next) = within(idle, t.next_request()).await else {
            timed_out();
            return Ok(());
        };
        let Some(req) = next? else {
            return Ok(());
        };
        let Some(after) = within(idle, t.handle(req)).await else {
            timed_out();
            return Ok(());
        };
        if after? == After::Close {
            return Ok(());
        }
    }
}

/// `work`, or `None` when it outlasted `deadline`.
async fn within<T>(deadline: Option<Duration>, work: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout(deadline, work).await.ok(),
        None => Some(work.await),
    }
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Transmission<'a, S> {
    /// The next request's header; `None` when the connection should close instead.
    async fn next_request(&mut self) -> io::Result<Option<Request>> {
        let mut header = [0u8; magic::EXTENDED_REQUEST_LEN];
        let header = &mut header[..self.header_form.header_len()];
        match self.io.read_exact(header).await {
            Ok(_) => {}
            // A client leaving between requests is an ordinary end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let Some(req) = Request::decode(self.header_form, header) else {
            return Ok(None);
        };
        let expected_magic = match self.header_form {
            HeaderForm::Compact => magic::REQUEST,
            HeaderForm::Extended => magic::EXTENDED_REQUEST,
        };
        if req.magic != expected_magic {
            self.refuse(&req, refuse(errno::EINVAL, "bad request magic"))
                .await?;
            return Ok(None);
        }
        Ok(Some(req))
    }

    async fn handle(&mut self, req: Request) -> io::Result<After> {
        let export: &'a Arc<Export> = self.export;
        let advertised = export.block_sizes().maximum;
        let carried = match payload_of(&req, &self.session, advertised) {
            Payload::None => 0,
            Payload::Bytes(n) => n,
            Payload::TooBig => {
                let refusal = refuse(errno::EINVAL, "payload larger than the maximum");
                if export.faults.keeps_open_after_big_payload() {
                    self.discard(req.length).await?;
                    self.refuse(&req, refusal).await?;
                    return Ok(After::Continue);
                }
                self.refuse(&req, refusal).await?;
                return Ok(After::Close);
            }
        };
        if req.command == cmd::DISC {
            // Earlier requests are already answered (one at a time), so just close (TX-DISC-1),
            // once any payload is out of the way (unread bytes would turn the close into a
            // reset).
            self.discard(carried as u64).await?;
            return Ok(After::Close);
        }
        // A block-status payload is a filter the checks read (tiny when valid); faults get to
        // see it after the checks. Any other payload is a write's data, read below if at all.
        let is_filter = req.command == cmd::BLOCK_STATUS && carried > 0;
        let (status_payload, _filter_bytes) = if is_filter {
            let held = export.budget.hold(carried).await;
            let mut filter = vec![0u8; carried];
            self.io.read_exact(&mut filter).await?;
            (filter, Some(held))
        } else {
            (Vec::new(), None)
        };
        let unread = if is_filter { 0 } else { carried };
        let planned = plan(&req, status_payload.clone(), export, &self.session);
        let reviewed = export.faults.review(&req, &status_payload, export, planned);
        let (reviewed, _write_bytes) = self.take_payload(&req, unread, reviewed).await?;
        let mut out = BytesMut::new();
        match reviewed {
            Ok(Command::Read { offset, length }) if !self.holds_reads() => {
                self.stream_read(&req, offset, length).await?;
                return Ok(After::Continue);
            }
            Ok(command) => self.run(&req, command, &mut out).await,
            Err(refusal) if refusal.misuse && export.variants.closes_on_misuse() => {
                return Ok(After::Close);
            }
            Err(refusal) => encode_refusal(export, self.reply_form, &req, refusal, &mut out),
        }
        if !is_status_query(export, &req) {
            if req.command == cmd::READ
                && self.holds_reads()
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
        if let Some(delay) = export.variants.reply_delay() {
            // The first status reply of a connection is the slow one (a cold path: a plugin
            // starting, a disk spinning up); later ones come at once.
            if !self.was_slow {
                self.was_slow = true;
                tokio::time::sleep(delay).await;
            }
        }
        let form = self.reply_form;
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

    /// `draft-read-cookies-crossed`: a READ's whole reply may have to wait for the status reply
    /// behind it, so READs are answered whole rather than streamed.
    fn holds_reads(&self) -> bool {
        self.export.is_draft() && self.export.faults.crosses_read_and_status()
    }

    /// The `unread` payload bytes of `req`: the data of a WRITE that is to run (held from the
    /// budget, returned with it), or discarded as they arrive.
    async fn take_payload(
        &mut self,
        req: &Request,
        unread: usize,
        reviewed: Result<Command, Refusal>,
    ) -> io::Result<(Result<Command, Refusal>, Option<Held<'a>>)> {
        let budget: &'a Budget = &self.export.budget;
        match reviewed {
            Ok(Command::Write { offset, fua, .. }) if req.command == cmd::WRITE && unread > 0 => {
                let held = budget.hold(unread).await;
                let mut data = vec![0u8; unread];
                self.io.read_exact(&mut data).await?;
                Ok((Ok(Command::Write { offset, data, fua }), Some(held)))
            }
            reviewed => {
                self.discard(unread as u64).await?;
                Ok((reviewed, None))
            }
        }
    }

    /// Reads and drops `length` payload bytes in pieces of [`FLOOR_PIECE`].
    async fn discard(&mut self, length: u64) -> io::Result<()> {
        if length == 0 {
            return Ok(());
        }
        let mut scratch = vec![0u8; FLOOR_PIECE.min(length as usize)];
        let mut left = length;
        while left > 0 {
            let n = left.min(scratch.len() as u64) as usize;
            self.io.read_exact(&mut scratch[..n]).await?;
            left -= n as u64;
        }
        Ok(())
    }

    /// A READ's reply, read from the image and written in pieces. An error on the first piece is
    /// an EIO reply; after the header has promised the data, the only honest end is a close
    /// (the spec's "MUST immediately initiate a hard disconnect" for simple replies).
    async fn stream_read(&mut self, req: &Request, offset: u64, length: usize) -> io::Result<()> {
        let export: &'a Arc<Export> = self.export;
        let mut head = BytesMut::new();
        let mut sent = 0;
        let mut piece = None;
        if length > 0 {
            let (size, held) = export.budget.piece(length);
            match export.image_io(move |i| i.read(offset, size)).await {
                Ok(data) => piece = Some((data, held)),
                Err(e) => {
                    log_io_error(req, &e);
                    let refusal = refuse(errno::EIO, "I/O error on the image");
                    encode_refusal(export, self.reply_form, req, refusal, &mut head);
                    return self.send(&head).await;
                }
            }
        }
        self.reply_form
            .read_head(&mut head, req.cookie, offset, length);
        self.io.write_all(&head).await?;
        while let Some((data, held)) = piece.take() {
            self.io.write_all(&data).await?;
            sent += data.len();
            drop((data, held));
            if sent < length {
                let (size, held) = export.budget.piece(length - sent);
                let at = offset + sent as u64;
                let data = export.image_io(move |i| i.read(at, size)).await;
                piece = Some((data.inspect_err(|e| log_io_error(req, e))?, held));
            }
        }
        self.io.flush().await
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
            log_io_error(req, &e);
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

fn log_io_error(req: &Request, e: &io::Error) {
    eprintln!(
        "nbd-conform serve: {} at offset {} failed: {e}",
        cmd::name(req.command),
        req.offset
    );
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
