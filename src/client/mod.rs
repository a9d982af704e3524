//! A client session: connect, negotiate, send requests with distinct cookies, and match replies
//! by cookie in whatever order they arrive.
//!
//! Every read has a timeout, every claimed length is checked against a fixed cap before anything
//! is read, and a server that stalls, lies about lengths or hangs up mid-reply yields a
//! [`ClientError`], never a hang or a panic. Rules the server broke without making the stream
//! unreadable are kept as [`Violation`]s on the reply.
//!
//! Layout: [`target`] (where the server is), `conn` (bytes and timeouts), [`negotiate`] (the
//! handshake), this module (transmission).

pub mod budget;
mod conn;
pub mod negotiate;
pub mod target;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::clauses::id;
use crate::wire::consts::{
    chunk_type, command, command_flag, draft, limit, reply_flag, transmission_flag,
};
use crate::wire::draft::{decode_descriptors, DraftDescriptor, DraftQuery};
use crate::wire::handshake::BlockSizes;
use crate::wire::reply::{scan_reply_header, ChunkBody, Descriptor, HeaderScan, ReplyHeader};
use crate::wire::request::{HeaderForm, Request};
use crate::wire::Violation;
use crate::Dialect;
use budget::ReplyBudget;
use conn::Conn;
pub use negotiate::{ExportInfo, Handshake, OptionReply};
pub use target::{Endpoint, Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("the server closed the connection while sending {what} ({had} bytes buffered)")]
    Closed { what: String, had: usize },
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("NBD_OPT_{option} refused with {reply}: {message}")]
    Refused {
        option: &'static str,
        reply: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotSupported(String),
    #[error("the server broke {0} and the stream cannot be read further")]
    Protocol(Violation),
    /// A reply the spec allows but that is larger than this client reads (a READ split into
    /// more chunks than `budget` keeps): not graded, the case cannot go on.
    #[error("not graded: {0}, past what this harness reads")]
    BeyondLimit(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The harness asked for a request the negotiated header cannot carry: its own bug, never
    /// the server's.
    #[error("not sent: {0}")]
    Unencodable(#[from] crate::wire::request::LengthTooLong),
}

/// Draft descriptors a GET_LBA_STATUS reply may carry: the draft gives no bound but 14 bytes
/// per requested byte; this cap (2^21, as before replies were budgeted) is what this client
/// reads of one reply.
const DRAFT_DESCRIPTORS_KEPT: u64 = 1 << 21;

/// How many finished cookies a session remembers, to tell a message after a reply's end from
/// one for a cookie never sent (a fixed bound: nothing grows with what a server sends).
const FINISHED_KEPT: usize = 1024;

/// How much longer a whole exchange may take than one message of it (at most: a timeout under
/// it adds itself, so that sub-second timeouts keep sub-second exchanges).
pub const EXCHANGE_GRACE: Duration = Duration::from_secs(1);

/// How long one whole exchange (a request's reply, an option's answer) may take when each
/// message of it may take `timeout`.
pub fn exchange_deadline(timeout: Duration) -> Duration {
    timeout + EXCHANGE_GRACE.min(timeout)
}

/// Reply messages for cookies not in flight a connection may send before the client stops
/// reading it: a correct server sends none, and each one is a finding already.
pub const MAX_STRAY_MESSAGES: usize = 64;

/// What to negotiate.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub timeout: Duration,
    pub structured: bool,
    pub extended: bool,
    pub contexts: Vec<String>,
    pub dialect: Dialect,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            timeout: Duration::from_secs(10),
            structured: true,
            extended: false,
            contexts: Vec::new(),
            dialect: Dialect::Standard,
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Negotiated {
    pub export: String,
    pub size: u64,
    pub transmission_flags: u16,
    pub block_sizes: Option<BlockSizes>,
    pub handshake_flags: u16,
    pub structured: bool,
    pub extended: bool,
    /// (context id, name) of every selected context.
    pub contexts: Vec<(u32, String)>,
    pub dialect: Dialect,
}

impl Negotiated {
    /// The advertised minimum block size, 1 when the server advertised none: every offset and
    /// length the client sends must be a multiple of it.
    pub fn minimum_block(&self) -> u64 {
        self.block_sizes.map_or(1, |b| u64::from(b.minimum)).max(1)
    }

    pub fn header_form(&self) -> HeaderForm {
        if self.extended {
            HeaderForm::Extended
        } else {
            HeaderForm::Compact
        }
    }

    pub fn context_name(&self, id: u32) -> Option<&str> {
        self.contexts
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.as_str())
    }

    /// Whether the draft's GET_LBA_STATUS bit is set (the same bit as today's SEND_DF).
    pub fn advertises_draft_status(&self) -> bool {
        self.transmission_flags & draft::SEND_GET_LBA_STATUS != 0
    }

    pub fn read_only(&self) -> bool {
        self.transmission_flags & transmission_flag::READ_ONLY != 0
    }
}

/// One chunk of a structured or extended reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub flags: u16,
    /// The offset field of an extended header (None for a 20-byte structured header).
    pub header_offset: Option<u64>,
    pub body: ChunkBody,
}

/// After a draft error, either the parameter length and its bytes, or a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftTrailer {
    Length(u32),
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    Simple {
        error: u32,
        data: Option<Bytes>,
    },
    Chunks(Vec<Chunk>),
    Draft {
        error: u32,
        trailer: DraftTrailer,
        descriptors: Vec<DraftDescriptor>,
    },
}

/// A complete reply, with the request it answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub request: Request,
    pub body: ReplyBody,
    pub violations: Vec<Violation>,
    /// The payload a BLOCK_STATUS request carried (its filter, in the payload form), as sent;
    /// empty for every other request.
    pub payload: Bytes,
}

impl Reply {
    /// The error the reply carries, if any (the first error chunk's value for chunked replies).
    pub fn error(&self) -> Option<u32> {
        match &self.body {
            ReplyBody::Simple { error, .. } | ReplyBody::Draft { error, .. } => {
                (*error != 0).then_some(*error)
            }
            ReplyBody::Chunks(chunks) => chunks.iter().find_map(|c| match c.body {
                ChunkBody::Error { error, .. } => Some(error),
                _ => None,
            }),
        }
    }

    /// The message of the first error chunk that carries one.
    pub fn error_message(&self) -> Option<&str> {
        let ReplyBody::Chunks(chunks) = &self.body else {
            return None;
        };
        chunks.iter().find_map(|c| match &c.body {
            ChunkBody::Error { message, .. } if !message.is_empty() => Some(message.as_str()),
            _ => None,
        })
    }

    /// Every block-status chunk as (context id, descriptors), compact or extended.
    pub fn status_chunks(&self) -> impl Iterator<Item = (u32, &[Descriptor])> {
        let chunks: &[Chunk] = match &self.body {
            ReplyBody::Chunks(c) => c,
            _ => &[],
        };
        chunks.iter().filter_map(|c| c.body.block_status())
    }

    /// The bytes a READ returned, assembled from OFFSET_DATA / OFFSET_HOLE chunks or the simple
    /// reply. `None` if the reply failed or left a byte unaccounted for.
    pub fn read_data(&self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.request.length).ok()?;
        match &self.body {
            ReplyBody::Simple {
                error: 0,
                data: Some(d),
            } => Some(d.to_vec()),
            ReplyBody::Chunks(chunks) if self.error().is_none() => {
                let mut out = vec![0u8; len];
                let mut covered = 0usize;
                for c in chunks {
                    let (at, n) = match &c.body {
                        ChunkBody::OffsetData { offset, data } => {
                            let at =
                                usize::try_from(offset.checked_sub(self.request.offset)?).ok()?;
                            out.get_mut(at..at.checked_add(data.len())?)?
                                .copy_from_slice(data);
                            (at, data.len())
                        }
                        ChunkBody::OffsetHole { offset, length } => {
                            let at =
                                usize::try_from(offset.checked_sub(self.request.offset)?).ok()?;
                            out.get(at..at.checked_add(*length as usize)?)?;
                            (at, *length as usize)
                        }
                        _ => continue,
                    };
                    let _ = at;
                    covered += n;
                }
                (covered == len).then_some(out)
            }
            _ => None,
        }
    }
}

struct Pending {
    request: Request,
    draft: bool,
    /// What is left of what the reply may carry.
    budget: ReplyBudget,
    chunks: Vec<Chunk>,
    violations: Vec<Violation>,
    payload: Bytes,
}

/// Cookies a session hands out start just above this base: distinctive, so that echo mistakes
/// are visible in transcripts (TX-COOKIE-1), and shown relative to it there.
pub const COOKIE_BASE: u64 = 0xC0FF_EE00_0000_0000;

/// A connection in the transmission phase.
pub struct Session {
    conn: Conn,
    pub negotiated: Negotiated,
    next_cookie: u64,
    inflight: HashMap<u64, Pending>,
    /// Replies that arrived while the caller waited for another cookie.
    ready: Vec<Reply>,
    /// The cookies of the last replies that ended (at most [`FINISHED_KEPT`]): a message for
    /// one of them came after its reply's final chunk (CHUNK-DONELAST-1), not for a cookie
    /// never in flight (TX-COOKIE-1).
    finished: std::collections::VecDeque<u64>,
    /// Rules broken outside any one reply (handshake, stray cookies).
    pub violations: Vec<Violation>,
    /// Reply messages for cookies not in flight so far (at most [`MAX_STRAY_MESSAGES`]).
    strays: usize,
}

impl Session {
    fn new(conn: Conn, negotiated: Negotiated, violations: Vec<Violation>) -> Session {
        Session {
            conn,
            negotiated,
            next_cookie: COOKIE_BASE + 1,
            inflight: HashMap::new(),
            ready: Vec::new(),
            finished: std::collections::VecDeque::new(),
            violations,
            strays: 0,
        }
    }

    /// Connects and negotiates as `options` say.
    pub async fn open(target: &Target, options: &SessionOptions) -> Result<Session, ClientError> {
        Handshake::negotiate(target, options).await
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.conn.timeout = timeout;
    }

    /// Bytes received but taken into no reply yet: after a reply header that did not decode,
    /// the bytes it started with (evidence of what the server sent instead).
    pub fn unread(&self) -> &[u8] {
        self.conn.buffered()
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// A cookie no request of this session has used yet.
    pub fn allocate_cookie(&mut self) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        cookie
    }

    /// Sends one request with a fresh cookie; returns the cookie.
    pub async fn send(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        length: u64,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let cookie = self.allocate_cookie();
        let request = Request::new(
            self.negotiated.header_form(),
            cmd,
            flags,
            cookie,
            offset,
            length,
        );
        self.send_request(request, payload).await?;
        Ok(cookie)
    }

    /// Sends a request built by hand (any header, malformed ones included) and waits for its
    /// whole reply.
    pub async fn exchange(&mut self, request: Request) -> Result<Reply, ClientError> {
        self.exchange_with(request, &[]).await
    }

    /// [`Session::exchange`] with `payload` after the header, as given (its length need not
    /// be the header's).
    pub async fn exchange_with(
        &mut self,
        request: Request,
        payload: &[u8],
    ) -> Result<Reply, ClientError> {
        self.send_request(request, payload).await?;
        self.wait_for(request.cookie).await
    }

    /// Sends any request header as given (malformed ones included) and tracks its cookie.
    pub async fn send_request(
        &mut self,
        request: Request,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(32 + payload.len());
        request.encode(self.negotiated.header_form(), &mut buf)?;
        let header_len = buf.len();
        buf.extend_from_slice(payload);
        let buf = buf.freeze();
        let draft = self.negotiated.dialect == Dialect::Draft
            && request.command == draft::CMD_GET_LBA_STATUS;
        // Kept for the checks, which judge a filtered reply by its filter (no copy).
        let kept = match request.command == command::BLOCK_STATUS && !draft {
            true => buf.slice(header_len..),
            false => Bytes::new(),
        };
        if request.command != command::DISC {
            self.inflight.insert(
                request.cookie,
                Pending {
                    request,
                    draft,
                    budget: ReplyBudget::for_request(
                        request.command,
                        request.length,
                        self.negotiated.contexts.len(),
                    ),
                    chunks: Vec::new(),
                    violations: Vec::new(),
                    payload: kept,
                },
            );
        }
        self.conn.write(&buf).await
    }

    /// Sends, then waits for that request's reply (keeping other replies for later).
    pub async fn request(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        length: u64,
    ) -> Result<Reply, ClientError> {
        let cookie = self.send(cmd, flags, offset, length, &[]).await?;
        self.wait_for(cookie).await
    }

    pub async fn block_status(
        &mut self,
        offset: u64,
        length: u64,
        flags: u16,
    ) -> Result<Reply, ClientError> {
        self.request(command::BLOCK_STATUS, flags, offset, length)
            .await
    }

    /// A draft GET_LBA_STATUS query: the selector travels in the flags field.
    pub async fn draft_status(
        &mut self,
        offset: u64,
        length: u64,
        query: DraftQuery,
    ) -> Result<Reply, ClientError> {
        self.request(draft::CMD_GET_LBA_STATUS, query.selector(), offset, length)
            .await
    }

    pub async fn read(&mut self, offset: u64, length: u32) -> Result<Reply, ClientError> {
        self.request(command::READ, 0, offset, length as u64).await
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<Reply, ClientError> {
        let (flags, length) = if self.negotiated.extended {
            (command_flag::PAYLOAD_LEN, data.len() as u64)
        } else {
            (0, data.len() as u64)
        };
        let cookie = self
            .send(command::WRITE, flags, offset, length, data)
            .await?;
        self.wait_for(cookie).await
    }

    /// Waits for the reply to `cookie`, all of it within the session's timeout (plus a grace
    /// second) however many messages it takes: a server that drips one chunk at a time cannot
    /// stretch an exchange. Each message still has the timeout of its own, which fires first
    /// when one message is what the server never finishes, so that the violation is named
    /// where it happened (a draft error without its trailer is DRAFT-ERR-1, not a timeout).
    /// After a timeout the stream may stand mid-message: drop the session.
    pub async fn wait_for(&mut self, cookie: u64) -> Result<Reply, ClientError> {
        let deadline = self.exchange_deadline();
        match tokio::time::timeout(deadline, self.wait_unbounded(cookie)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: format!("the whole reply to cookie {cookie:#x}"),
                after: deadline,
            }),
        }
    }

    /// How long one whole exchange may take: the per-message timeout plus a grace second.
    pub fn exchange_deadline(&self) -> Duration {
        exchange_deadline(self.conn.timeout)
    }

    async fn wait_unbounded(&mut self, cookie: u64) -> Result<Reply, ClientError> {
        loop {
            if let Some(i) = self.ready.iter().position(|r| r.request.cookie == cookie) {
                return Ok(self.ready.swap_remove(i));
            }
            let reply = self.recv_next().await?;
            if reply.request.cookie == cookie {
                return Ok(reply);
            }
            self.ready.push(reply);
        }
    }

    /// How many complete replies wait for requests sent after `cookie` (cookies rise).
    pub fn replies_after(&self, cookie: u64) -> usize {
        self.ready
            .iter()
            .filter(|r| r.request.cookie > cookie)
            .count()
    }

    /// The next complete reply, whichever request it answers, within one exchange's deadline
    /// (as [`Session::wait_for`]: a server that drips chunks cannot stretch it).
    pub async fn recv(&mut self) -> Result<Reply, ClientError> {
        if let Some(r) = self.ready.pop() {
            return Ok(r);
        }
        let deadline = self.exchange_deadline();
        match tokio::time::timeout(deadline, self.recv_next()).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: format!("a whole reply to any of {} requests", self.inflight.len()),
                after: deadline,
            }),
        }
    }

    async fn recv_next(&mut self) -> Result<Reply, ClientError> {
        loop {
            let header = self.read_reply_header().await?;
            if let Some(reply) = self.absorb(header).await? {
                if self.finished.len() == FINISHED_KEPT {
                    self.finished.pop_front();
                }
                self.finished.push_back(reply.request.cookie);
                return Ok(reply);
            }
        }
    }

    async fn read_reply_header(&mut self) -> Result<ReplyHeader, ClientError> {
        loop {
            match scan_reply_header(self.conn.buffered()) {
                HeaderScan::NeedMore(n) => self.conn.fill(n, "a reply header").await?,
                HeaderScan::Header(h, used) => {
                    self.conn.advance(used);
                    return Ok(h);
                }
                HeaderScan::BadMagic(m) => {
                    return Err(ClientError::Protocol(Violation::new(
                        id::TX_SIMPLE_1,
                        format!("reply starts with magic {m:#010x}, which no reply has"),
                    )))
                }
            }
        }
    }

    /// Takes one header (and its payload) into the pending table; returns a reply once complete.
    async fn absorb(&mut self, header: ReplyHeader) -> Result<Option<Reply>, ClientError> {
        let cookie = header.cookie();
        let mut header_violations = self.framing_violations(&header);
        let Some(mut pending) = self.inflight.remove(&cookie) else {
            // A reply nobody asked for: skip what its header says it carries and remember it.
            let skip = header.payload_len();
            if skip > limit::MAX_CHUNK_PAYLOAD {
                return Err(ClientError::Protocol(Violation::new(
                    id::TX_COOKIE_1,
                    format!("reply with unknown cookie {cookie:#x} claims {skip} bytes"),
                )));
            }
            self.conn.take(skip as usize, "a reply payload").await?;
            let ended = self.finished.contains(&cookie);
            let (clause, what) = if ended {
                (id::CHUNK_DONELAST_1, "after its final chunk")
            } else {
                (id::TX_COOKIE_1, "which no request in flight carries")
            };
            self.strays += 1;
            if self.strays > MAX_STRAY_MESSAGES {
                return Err(ClientError::Protocol(Violation::new(
                    clause,
                    format!(
                        "more than {MAX_STRAY_MESSAGES} reply messages for cookies not in \
                         flight (the last for {cookie:#x}, {what})"
                    ),
                )));
            }
            self.violations.push(Violation::new(
                clause,
                format!("a reply message for cookie {cookie:#x}, {what}"),
            ));
            return Ok(None);
        };
        pending.violations.append(&mut header_violations);
        match header {
            ReplyHeader::Simple { error, .. } if pending.draft => {
                self.finish_draft(pending, error).await.map(Some)
            }
            // "MUST NOT use a simple reply for NBD_CMD_READ (even for the case of an early
            // NBD_EINVAL due to bad flags)" once structured replies are on. A successful one
            // may be followed by data the client cannot delimit: the stream is lost.
            ReplyHeader::Simple { error, .. }
                if pending.request.command == command::READ
                    && self.negotiated.structured
                    && !self.negotiated.extended =>
            {
                let v = Violation::new(
                    id::SR_PAYLOAD_1,
                    format!(
                        "a simple reply ({}) to READ with structured replies negotiated",
                        crate::wire::consts::errno::name(error)
                    ),
                );
                if error == 0 {
                    return Err(ClientError::Protocol(v));
                }
                pending.violations.push(v);
                Ok(Some(Reply {
                    request: pending.request,
                    body: ReplyBody::Simple { error, data: None },
                    violations: pending.violations,
                    payload: pending.payload,
                }))
            }
            ReplyHeader::Simple { error, .. } => {
                let data = if error == 0
                    && pending.request.command == command::READ
                    && !self.negotiated.structured
                {
                    let n = pending.request.length.min(limit::MAX_IO_PAYLOAD as u64) as usize;
                    Some(self.conn.take(n, "READ data").await?)
                } else {
                    None
                };
                if !pending.chunks.is_empty() {
                    pending.violations.push(Violation::new(
                        id::CHUNK_DONE_1,
                        "a simple reply arrived for a cookie that already had chunks",
                    ));
                }
                Ok(Some(Reply {
                    request: pending.request,
                    body: ReplyBody::Simple { error, data },
                    violations: pending.violations,
                    payload: pending.payload,
                }))
            }
            ReplyHeader::Structured {
                flags,
                chunk_type,
                length,
                ..
            } => {
                self.take_chunk(pending, flags, chunk_type, None, length as u64)
                    .await
            }
            ReplyHeader::Extended {
                flags,
                chunk_type,
                offset,
                length,
                ..
            } => {
                self.take_chunk(pending, flags, chunk_type, Some(offset), length)
                    .await
            }
        }
    }

    /// Rules about which header form may appear at all on this connection.
    fn framing_violations(&self, header: &ReplyHeader) -> Vec<Violation> {
        let mut v = Vec::new();
        let n = &self.negotiated;
        match header {
            ReplyHeader::Simple { .. } if n.extended => v.push(Violation::new(
                id::EH_REP_1,
                "simple reply after extended headers were negotiated",
            )),
            ReplyHeader::Structured { .. } if n.extended => v.push(Violation::new(
                id::EH_REP_1,
                "20-byte structured chunk after extended headers were negotiated",
            )),
            ReplyHeader::Structured { .. } if !n.structured => v.push(Violation::new(
                id::SR_GATE_1,
                "structured chunk without negotiated structured replies",
            )),
            ReplyHeader::Extended { .. } if !n.extended => v.push(Violation::new(
                id::EH_WIRE_1,
                "extended chunk without negotiated extended headers",
            )),
            _ => {}
        }
        v
    }

    async fn take_chunk(
        &mut self,
        mut pending: Pending,
        flags: u16,
        chunk_type: u16,
        header_offset: Option<u64>,
        length: u64,
    ) -> Result<Option<Reply>, ClientError> {
        if length > limit::MAX_CHUNK_PAYLOAD {
            let clause = if header_offset.is_some() {
                id::EH_REP_3
            } else {
                id::CHUNK_INCONS_1
            };
            return Err(ClientError::Protocol(Violation::new(
                clause,
                format!(
                    "chunk claims {length} payload bytes, over the {} cap",
                    limit::MAX_CHUNK_PAYLOAD
                ),
            )));
        }
        // "If the client receives an unknown or unexpected type, other than an error chunk, it
        // MUST initiate a hard disconnect": what follows such a chunk cannot be trusted.
        if chunk_type::name_of(chunk_type).is_none() && chunk_type & chunk_type::ERROR_BIT == 0 {
            return Err(ClientError::Protocol(Violation::new(
                id::CHUNK_UNKTYPE_1,
                format!(
                    "a chunk of type {chunk_type:#06x} ({length} bytes) for cookie {:#x}: no type \
                     the protocol defines",
                    pending.request.cookie
                ),
            )));
        }
        // Before the payload is read, so that a chunk over the reply's budget costs nothing.
        pending
            .budget
            .charge(chunk_type, length, header_offset.is_some())?;
        let payload = self
            .conn
            .take(length as usize, "a reply chunk payload")
            .await?;
        let decoded = ChunkBody::decode(chunk_type, &payload);
        pending.violations.extend(decoded.violations);
        if let Some(offset) = header_offset {
            if offset != pending.request.offset {
                pending.violations.push(Violation::new(
                    id::EH_REP_2,
                    format!(
                        "extended reply offset {offset} differs from the request's {}",
                        pending.request.offset
                    ),
                ));
            }
        }
        pending.chunks.push(Chunk {
            flags,
            header_offset,
            body: decoded.value,
        });
        if flags & reply_flag::DONE == 0 {
            let cookie = pending.request.cookie;
            self.inflight.insert(cookie, pending);
            return Ok(None);
        }
        Ok(Some(Reply {
            request: pending.request,
            body: ReplyBody::Chunks(pending.chunks),
            violations: pending.violations,
            payload: pending.payload,
        }))
    }

    /// After a draft reply header: P, then P bytes of descriptors. On error the server may
    /// instead close the connection (DRAFT-ERR-1).
    async fn finish_draft(
        &mut self,
        mut pending: Pending,
        error: u32,
    ) -> Result<Reply, ClientError> {
        let p = match self.conn.take(4, "the draft parameter length").await {
            Ok(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            Err(ClientError::Closed { had: 0, .. }) if error != 0 => {
                return Ok(Reply {
                    request: pending.request,
                    body: ReplyBody::Draft {
                        error,
                        trailer: DraftTrailer::Closed,
                        descriptors: Vec::new(),
                    },
                    violations: pending.violations,
                    payload: pending.payload,
                });
            }
            Err(ClientError::Closed { .. }) if error == 0 => {
                return Err(ClientError::Protocol(Violation::new(
                    id::DRAFT_REP_1,
                    "successful reply without a parameter length before the connection closed",
                )));
            }
            Err(ClientError::Timeout { .. }) => {
                let clause = if error == 0 {
                    id::DRAFT_REP_1
                } else {
                    id::DRAFT_ERR_1
                };
                return Err(ClientError::Protocol(Violation::new(
                    clause,
                    "no parameter length followed the reply header",
                )));
            }
            Err(e) => return Err(e),
        };
        // P can never need more than 14 bytes per requested byte; a larger claim is a lie that
        // must not make us allocate (DRAFT-BOUND-1).
        // Capped (DRAFT_DESCRIPTORS_KEPT), so that P stays within ~29 MiB however long the
        // request.
        let bound = (pending.request.length.min(DRAFT_DESCRIPTORS_KEPT))
            .saturating_mul(draft::DESCRIPTOR_LEN as u64)
            .max(draft::DESCRIPTOR_LEN as u64);
        if p as u64 > bound {
            return Err(ClientError::Protocol(Violation::new(
                id::DRAFT_BOUND_1,
                format!("parameter length {p} exceeds the {bound} bytes the request could need"),
            )));
        }
        let params = match self.conn.take(p as usize, "draft descriptors").await {
            Ok(b) => b,
            Err(ClientError::Timeout { .. } | ClientError::Closed { .. }) => {
                let clause = if error == 0 {
                    id::DRAFT_REP_1
                } else {
                    id::DRAFT_ERR_1
                };
                return Err(ClientError::Protocol(Violation::new(
                    clause,
                    format!("fewer than the {p} announced parameter bytes arrived"),
                )));
            }
            Err(e) => return Err(e),
        };
        let descriptors = if error == 0 {
            let d = decode_descriptors(&params);
            pending.violations.extend(d.violations);
            d.value
        } else {
            Vec::new()
        };
        Ok(Reply {
            request: pending.request,
            body: ReplyBody::Draft {
                error,
                trailer: DraftTrailer::Length(p),
                descriptors,
            },
            violations: pending.violations,
            payload: pending.payload,
        })
    }

    /// Soft disconnect: NBD_CMD_DISC, then close.
    pub async fn disconnect(mut self) {
        let _ = self.send(command::DISC, 0, 0, 0, &[]).await;
        self.conn.shutdown().await;
    }

    /// True if the server closed the connection (waits up to the timeout).
    pub async fn closed_by_peer(&mut self) -> bool {
        self.conn.closed_by_peer().await
    }
}
