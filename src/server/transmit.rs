//! The transmission phase: read requests, check them, run them against the export, reply.
//!
//! Requests are handled one at a time per connection (replies therefore come back in order,
//! which is legal, TX-OOO-1). Checking is a pure step ([`plan`](super::plan::plan)) that turns a
//! request into a [`Command`] or a [`Refusal`]; only then is the image touched, on the blocking
//! thread pool.
//! Client mistakes get an error reply and the connection stays open (TX-NODROP-1); only a wrong
//! magic or an oversized payload, after which the stream cannot be trusted, closes it.
//!
//! Block-status and GET_LBA_STATUS replies pass the export's [`Faults`](super::fault::Faults) at
//! each step (what to scan, the states, the descriptors, the chunks, their framing), and the
//! hostile faults decide how such a reply is sent, if at all ([`Hostile`]). Without faults
//! every hook leaves the reply as it was.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

use super::contexts::ContextKind;
use super::export::Export;
use super::extents::{
    allocation_status, dirty_bitmap_status, draft_allocation_status, draft_dirty_status, shape,
    to_descriptors, to_draft_descriptors, Allocation, Dirtiness, Extent, ReplyLimits,
    MAX_COMPACT_DESCRIPTOR,
};
use super::fault::{garbage, BeforeDisc, DescriptorScope, Hostile, DRIP_INTERVAL, STREAM_PIECE};
use super::image::{AfterBudget, ScanLimits};
use super::negotiate::Session;
use super::plan::{payload_of, plan, refuse, Command, Payload, Refusal};
use super::replies::ReplyForm;
use crate::wire::consts::{chunk_type, command as cmd, draft, errno, limit, magic, reply_flag};
use crate::wire::draft::{DraftDescriptor, DraftQuery};
use crate::wire::reply::{Descriptor, ReplyHeader};
use crate::wire::request::{HeaderForm, Request};
use crate::Dialect;

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
    /// `garbage-after-handshake` has struck on this connection.
    garbled: bool,
    /// `slow-replies` has made this connection wait once.
    was_slow: bool,
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
    let mut t = Transmission {
        io,
        export,
        session,
        header_form,
        reply_form,
        garbled: false,
        was_slow: false,
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
        let payload = match payload_of(&req, &self.session) {
            Payload::None => Vec::new(),
            Payload::Bytes(n) => {
                let mut data = vec![0u8; n];
                self.io.read_exact(&mut data).await?;
                data
            }
            Payload::TooBig => {
                self.refuse(
                    &req,
                    refuse(errno::EINVAL, "payload larger than the maximum"),
                )
                .await?;
                return Ok(After::Close);
            }
        };
        if req.command == cmd::DISC {
            // Earlier requests are already answered (one at a time), so just close (TX-DISC-1).
            return Ok(After::Close);
        }
        let mut out = BytesMut::new();
        match plan(&req, payload, self.export, &self.session) {
            Ok(command) => self.run(&req, command, &mut out).await,
            Err(refusal) if refusal.misuse && self.export.variants.closes_on_misuse() => {
                return Ok(After::Close);
            }
            Err(refusal) => self.encode_refusal(&req, refusal, &mut out),
        }
        if let Some(delay) = self.export.variants.reply_delay() {
            // The first status reply of a connection is the slow one (a cold path: a plugin
            // starting, a disk spinning up); later ones come at once.
            if self.is_status_query(&req) && !self.was_slow {
                self.was_slow = true;
                tokio::time::sleep(delay).await;
            }
        }
        if let Some(how) = self.export.faults.before_disc() {
            if self.is_status_query(&req) && self.disc_waits_behind().await {
                match how {
                    BeforeDisc::Drop => return Ok(After::Close),
                    BeforeDisc::Eio => {
                        out.clear();
                        let refusal = refuse(errno::EIO, "cut short by the DISC behind it");
                        self.encode_refusal(&req, refusal, &mut out);
                    }
                }
            }
        }
        let hostile = self
            .export
            .faults
            .hostile(self.reply_form, self.export.is_draft());
        match hostile {
            Some(how) if self.is_status_query(&req) => self.misbehave(how, &req, &out).await,
            _ => {
                self.send(&out).await?;
                Ok(After::Continue)
            }
        }
    }

    /// For the disconnect faults: whether the next request, already sent or arriving within
    /// 50 ms, is NBD_CMD_DISC. Only looks (`fill_buf` consumes nothing and may be cancelled).
    async fn disc_waits_behind(&mut self) -> bool {
        let len = self.header_form.header_len();
        let form = self.header_form;
        match tokio::time::timeout(Duration::from_millis(50), self.io.fill_buf()).await {
            Ok(Ok(buffered)) if buffered.len() >= len => {
                Request::decode(form, &buffered[..len]).is_some_and(|r| r.command == cmd::DISC)
            }
            _ => false,
        }
    }

    /// Block status, or the draft's GET_LBA_STATUS: the requests faults are about.
    fn is_status_query(&self, req: &Request) -> bool {
        if self.export.is_draft() {
            req.command == draft::CMD_GET_LBA_STATUS
        } else {
            req.command == cmd::BLOCK_STATUS
        }
    }

    async fn refuse(&mut self, req: &Request, refusal: Refusal) -> io::Result<()> {
        let mut out = BytesMut::new();
        self.encode_refusal(req, refusal, &mut out);
        self.send(&out).await
    }

    fn encode_refusal(&self, req: &Request, refusal: Refusal, out: &mut BytesMut) {
        let faults = &self.export.faults;
        if self.export.is_draft() && req.command == draft::CMD_GET_LBA_STATUS {
            faults.draft_error(out, req.cookie, refusal.errno);
        } else if self.export.variants.simple_status_errors()
            && self.reply_form == ReplyForm::Structured
            && req.command != cmd::READ
        {
            // Allowed for every command but READ under structured replies (SR-SIMPLEOK-1).
            ReplyHeader::Simple {
                error: refusal.errno,
                cookie: req.cookie,
            }
            .encode(out);
        } else if self.is_status_query(req) {
            let (cookie, offset) = (req.cookie, req.offset);
            faults.status_error(
                self.reply_form,
                out,
                cookie,
                offset,
                refusal.errno,
                refusal.message,
            );
        } else {
            self.reply_form
                .error(out, req.cookie, req.offset, refusal.errno, refusal.message);
        }
    }

    async fn send(&mut self, out: &[u8]) -> io::Result<()> {
        self.io.write_all(out).await?;
        self.io.flush().await
    }

    /// A hostile fault's way of answering a status request whose real reply is `reply`.
    async fn misbehave(&mut self, how: Hostile, req: &Request, reply: &[u8]) -> io::Result<After> {
        match how {
            Hostile::Hang => {
                self.discard_until_eof().await;
                Ok(After::Close)
            }
            Hostile::Drip => {
                for byte in reply {
                    self.send(std::slice::from_ref(byte)).await?;
                    tokio::time::sleep(DRIP_INTERVAL).await;
                }
                Ok(After::Continue)
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
                self.stream_claim(&head, length as u64).await
            }
            Hostile::HugeDraftP(p) => {
                let mut head = BytesMut::new();
                ReplyHeader::Simple {
                    error: 0,
                    cookie: req.cookie,
                }
                .encode(&mut head);
                head.extend_from_slice(&p.to_be_bytes());
                self.stream_claim(&head, p as u64).await
            }
            Hostile::Garbage => {
                if !self.garbled {
                    self.garbled = true;
                    self.send(&garbage()).await?;
                }
                self.send(reply).await?;
                Ok(After::Continue)
            }
            Hostile::CloseMidReply => {
                let half = (reply.len() / 2).max(1).min(reply.len());
                self.send(&reply[..half]).await?;
                Ok(After::Close)
            }
        }
    }

    /// Reads and drops whatever the client sends until it leaves.
    async fn discard_until_eof(&mut self) {
        let mut sink = [0u8; 4096];
        while let Ok(n) = self.io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Sends `head`, then zeros towards the `claimed` payload bytes, until the client hangs up.
    async fn stream_claim(&mut self, head: &[u8], claimed: u64) -> io::Result<After> {
        self.send(head).await?;
        let zeros = vec![0u8; STREAM_PIECE];
        let mut sent = 0u64;
        while sent < claimed {
            let n = (claimed - sent).min(STREAM_PIECE as u64) as usize;
            self.io.write_all(&zeros[..n]).await?;
            sent += n as u64;
        }
        self.io.flush().await?;
        Ok(After::Close)
    }

    /// Runs a checked command and writes its reply; I/O failures become EIO replies.
    async fn run(&self, req: &Request, command: Command, out: &mut BytesMut) {
        let (cookie, offset) = (req.cookie, req.offset);
        let form = self.reply_form;
        let result = match command {
            Command::Read { offset, length } => {
                let image = self.export.image.clone();
                blocking(move || image.read(offset, length))
                    .await
                    .map(|data| form.read_data(out, cookie, offset, data))
            }
            Command::BlockStatus {
                offset,
                length,
                req_one,
            } => self
                .block_status(offset, length, req_one)
                .await
                .map(|chunks| self.write_status(out, cookie, offset, chunks)),
            Command::LbaStatus {
                offset,
                length,
                query,
            } => self
                .lba_status(offset, length, query)
                .await
                .map(|descriptors| self.export.faults.draft_status(out, cookie, &descriptors)),
            other => self
                .modify(other)
                .await
                .map(|()| form.done(out, cookie, offset)),
        };
        if let Err(e) = result {
            eprintln!(
                "nbd-conform serve: {} at offset {offset} failed: {e}",
                cmd::name(req.command)
            );
            self.encode_refusal(req, refuse(errno::EIO, "I/O error on the image"), out);
        }
    }

    /// A successful block-status reply: one status chunk per context, DONE on the last.
    fn write_status(
        &self,
        out: &mut BytesMut,
        cookie: u64,
        offset: u64,
        chunks: Vec<(u32, Vec<Descriptor>)>,
    ) {
        let faults = &self.export.faults;
        let mut bodies = self.reply_form.status_bodies(chunks);
        faults.bodies(&mut bodies);
        let mut frames = self.reply_form.frames(cookie, offset, bodies);
        faults.frames(&mut frames);
        for frame in &frames {
            frame.encode(out);
        }
    }

    /// Commands without reply data: writes, trims, flushes, cache hints.
    async fn modify(&self, command: Command) -> io::Result<()> {
        let image = self.export.image.clone();
        // Bitmaps are marked before the change, so a failed or partial write still shows dirty.
        match command {
            Command::Write { offset, data, fua } => {
                self.export.mark_dirty(offset, data.len() as u64);
                blocking(move || {
                    image.write(offset, &data)?;
                    sync_if(fua, &image)
                })
                .await
            }
            Command::Trim {
                offset,
                length,
                fua,
            } => {
                self.export.mark_dirty(offset, length);
                // TRIM is advisory: a file system without hole punching simply keeps the data.
                blocking(move || {
                    image.punch_hole(offset, length)?;
                    sync_if(fua, &image)
                })
                .await
            }
            Command::WriteZeroes {
                offset,
                length,
                punch,
                fua,
            } => {
                self.export.mark_dirty(offset, length);
                blocking(move || {
                    image.write_zeroes(offset, length, punch)?;
                    sync_if(fua, &image)
                })
                .await
            }
            Command::Flush => blocking(move || image.flush()).await,
            _ => Ok(()),
        }
    }

    /// One descriptor list per selected context, shaped for the connection's reply form.
    async fn block_status(
        &self,
        offset: u64,
        length: u64,
        req_one: bool,
    ) -> io::Result<Vec<(u32, Vec<Descriptor>)>> {
        let faults = &self.export.faults;
        let (asked_length, asked_req_one) = (length, req_one);
        // What the answer covers: the request, unless a fault looks further.
        let room = self.export.size().saturating_sub(offset);
        let variants = &self.export.variants;
        let length = variants.status_scan(length, req_one, room);
        let (length, req_one) = faults.status_scan(length, req_one, room);
        let limits = ReplyLimits {
            request_length: length,
            max_descriptor_length: match self.reply_form {
                ReplyForm::Extended => u64::MAX,
                _ => MAX_COMPACT_DESCRIPTOR,
            },
            max_descriptors: limit::MAX_DESCRIPTORS_PER_CHUNK,
            req_one,
        };
        let max_extents = if req_one {
            1
        } else {
            limit::MAX_DESCRIPTORS_PER_CHUNK
        };
        let mut chunks = Vec::with_capacity(self.session.contexts.len());
        for &id in &self.session.contexts {
            let kind = self.export.contexts.kind(id);
            let mut descriptors = match kind {
                Some(ContextKind::Allocation) => {
                    let mut raw = self
                        .allocation(
                            offset,
                            length,
                            ScanLimits::new(max_extents, AfterBudget::Stop),
                        )
                        .await?;
                    variants.restate_allocation(&mut raw);
                    faults.restate_allocation(Dialect::Standard, &mut raw);
                    let shaped = at_least_one(shape(raw, &limits), &limits, Allocation::Data);
                    to_descriptors(&shaped, allocation_status)
                }
                Some(ContextKind::DirtyBitmap(i)) => {
                    let mut raw = self.dirtiness(i, offset, length, max_extents);
                    variants.restate_dirtiness(&mut raw);
                    faults.restate_dirtiness(Dialect::Standard, &mut raw);
                    // If in doubt, dirty is the safe answer for a bitmap (QEMU-DIRTY0-1).
                    let shaped = at_least_one(shape(raw, &limits), &limits, Dirtiness::Dirty);
                    to_descriptors(&shaped, dirty_bitmap_status)
                }
                None => continue,
            };
            let scope = DescriptorScope {
                request_length: asked_length,
                req_one: asked_req_one,
                extended: self.reply_form == ReplyForm::Extended,
                base_allocation: kind == Some(ContextKind::Allocation),
            };
            variants.descriptors(
                &mut descriptors,
                asked_length,
                asked_req_one,
                scope.base_allocation,
            );
            faults.descriptors(&mut descriptors, scope);
            chunks.push((id, descriptors));
        }
        variants.chunks(&mut chunks);
        faults.chunks(&mut chunks);
        Ok(chunks)
    }

    /// The draft's answer: absolute-offset descriptors covering the request.
    async fn lba_status(
        &self,
        offset: u64,
        length: u64,
        query: DraftQuery,
    ) -> io::Result<Vec<DraftDescriptor>> {
        let limits = ReplyLimits {
            request_length: length,
            max_descriptor_length: u32::MAX as u64,
            max_descriptors: limit::MAX_DESCRIPTORS_PER_CHUNK,
            req_one: false,
        };
        let max_extents = limit::MAX_DESCRIPTORS_PER_CHUNK;
        let faults = &self.export.faults;
        let mut descriptors = match query {
            DraftQuery::Allocated => {
                let mut raw = self
                    .allocation(
                        offset,
                        length,
                        ScanLimits::new(max_extents, AfterBudget::AssumeData),
                    )
                    .await?;
                faults.restate_allocation(Dialect::Draft, &mut raw);
                let shaped = at_least_one(shape(raw, &limits), &limits, Allocation::Data);
                to_draft_descriptors(offset, &shaped, draft_allocation_status)
            }
            DraftQuery::Dirty => {
                let mut raw = self.dirtiness(0, offset, length, max_extents);
                faults.restate_dirtiness(Dialect::Draft, &mut raw);
                let shaped = at_least_one(shape(raw, &limits), &limits, Dirtiness::Dirty);
                to_draft_descriptors(offset, &shaped, draft_dirty_status)
            }
            // The unknown-query fallback: the request itself, status 0 (DRAFT-UNK-1).
            DraftQuery::Other(_) => {
                return Ok(faults.draft_fallback(DraftDescriptor {
                    offset,
                    length: u32::try_from(length).unwrap_or(u32::MAX),
                    status: 0,
                }))
            }
        };
        faults.draft_descriptors(&mut descriptors, query, offset, length);
        Ok(descriptors)
    }

    async fn allocation(
        &self,
        offset: u64,
        length: u64,
        limits: ScanLimits,
    ) -> io::Result<Vec<Extent<Allocation>>> {
        let image = self.export.image.clone();
        blocking(move || image.allocation(offset, length, limits)).await
    }

    fn dirtiness(
        &self,
        bitmap: usize,
        offset: u64,
        length: u64,
        max_extents: usize,
    ) -> Vec<Extent<Dirtiness>> {
        self.export
            .bitmaps
            .get(bitmap)
            .map(|b| b.extents(offset, length, max_extents))
            .unwrap_or_default()
    }
}

/// A reply always carries at least one descriptor (BS-REP-ATLEAST1-1); should a source come back
/// empty, answer the safe state for as much of the request as one descriptor may cover.
fn at_least_one<S: Copy>(shaped: Vec<Extent<S>>, limits: &ReplyLimits, safe: S) -> Vec<Extent<S>> {
    if shaped.is_empty() {
        vec![Extent::new(
            limits.request_length.min(limits.max_descriptor_length),
            safe,
        )]
    } else {
        shaped
    }
}

fn sync_if(fua: bool, image: &super::image::Image) -> io::Result<()> {
    if fua {
        image.flush()
    } else {
        Ok(())
    }
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("I/O task failed: {e}"))))
}
