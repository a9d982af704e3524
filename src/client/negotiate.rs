//! The handshake phase of a client connection, one option at a time.
//!
//! Cases drive this step by step (send any option, read every reply); [`Handshake::negotiate`]
//! strings the usual steps together for tools such as `map`.

use bytes::{Bytes, BytesMut};

use super::conn::Conn;
use super::target::Target;
use super::{exchange_deadline, ClientError, Negotiated, Session, SessionOptions};
use crate::clauses::id;
use crate::wire::consts::{
    client_flag, handshake_flag, info, limit, magic, option, reply_type, transmission_flag,
};
use crate::wire::handshake::{
    self, decode_meta_context_reply, BlockSizes, Greeting, Info, OptionReplyHeader,
};
use crate::wire::Violation;
use crate::Dialect;

/// The info types this client asks for in GO: block sizes (so it can obey them) and the name.
pub const GO_INFO_REQUESTS: [u16; 2] = [info::BLOCK_SIZE, info::NAME];

/// Replies to one option the client keeps, and their bytes: far more than any option needs
/// (an export list, the contexts of a LIST, INFO's few types), so that a server that never
/// sends the final reply costs a fixed amount of memory.
pub const MAX_KEPT_REPLIES: usize = 4096;
pub const MAX_KEPT_REPLY_BYTES: usize = 4 << 20;

/// Replies to one option read at most, kept or not (a SET's contexts in namespaces no query
/// named are read and dropped): bounds the time an endless stream of them takes.
pub const MAX_OPTION_REPLIES: usize = 1 << 18;
/// Bytes of replies to one option read at most, kept or not: replies dropped one by one (each
/// breaking a rule) may be large, and 2^18 of them would take longer to read than any deadline
/// allows, so the bytes are capped too. Far above any real answer (the kept ones stop at
/// MAX_KEPT_REPLY_BYTES).
pub const MAX_OPTION_BYTES_READ: usize = 16 << 20;

/// Violations kept per option; past them, one line says how many more there were.
pub const MAX_VIOLATIONS_PER_OPTION: usize = 32;

/// One option reply: its header and payload.
#[derive(Debug, Clone)]
pub struct OptionReply {
    pub header: OptionReplyHeader,
    pub data: Bytes,
}

impl OptionReply {
    pub fn is_final(&self) -> bool {
        self.header.is_error() || self.header.reply_type == reply_type::ACK
    }
}

/// What `NBD_OPT_INFO` / `NBD_OPT_GO` told us about an export.
#[derive(Debug, Clone, Default)]
pub struct ExportInfo {
    /// The type of every NBD_REP_INFO reply, in order.
    pub kinds: Vec<u16>,
    pub size: Option<u64>,
    pub transmission_flags: u16,
    pub block_sizes: Option<BlockSizes>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// A connection in the option-haggling phase.
pub struct Handshake {
    conn: Conn,
    pub greeting: Greeting,
    pub no_zeroes: bool,
    pub structured: bool,
    pub extended: bool,
    /// Contexts selected by the last SET_META_CONTEXT, and the export it named.
    pub contexts: Vec<(u32, String)>,
    pub contexts_export: Option<String>,
    /// Everything the server got wrong so far, by clause.
    pub violations: Vec<Violation>,
}

impl Handshake {
    /// Connects, reads the greeting and answers with client flags: fixed newstyle, plus
    /// NO_ZEROES when offered, unless `client_flags` overrides them.
    pub async fn start(
        target: &Target,
        timeout: std::time::Duration,
        client_flags: Option<u32>,
    ) -> Result<Handshake, ClientError> {
        let mut conn = Conn::connect(target, timeout).await?;
        let raw = conn
            .take(magic::GREETING_LEN, "the server greeting")
            .await?;
        let decoded = Greeting::decode(&raw).ok_or(ClientError::Closed {
            what: "the server greeting".into(),
            had: raw.len(),
        })?;
        let greeting = decoded.value;
        // Past a broken greeting nothing can be negotiated: the server's fault, reported as
        // the violation it is.
        if greeting.nbd_magic != magic::NBDMAGIC || greeting.option_magic != magic::IHAVEOPT {
            let v = decoded.violations.into_iter().next();
            return Err(ClientError::Protocol(v.unwrap_or_else(|| {
                Violation::new(id::HS_GREET_1, "a greeting without NBDMAGIC and IHAVEOPT")
            })));
        }
        if greeting.flags & handshake_flag::FIXED_NEWSTYLE == 0 {
            return Err(ClientError::Protocol(Violation::new(
                id::HS_FIXED_1,
                format!(
                    "handshake flags {:#06x} lack FIXED_NEWSTYLE: no option can be negotiated",
                    greeting.flags
                ),
            )));
        }
        let offered_no_zeroes = greeting.flags & handshake_flag::NO_ZEROES != 0;
        let flags = client_flags.unwrap_or(
            client_flag::FIXED_NEWSTYLE
                | if offered_no_zeroes {
                    client_flag::NO_ZEROES
                } else {
                    0
                },
        );
        conn.write(&flags.to_be_bytes()).await?;
        Ok(Handshake {
            conn,
            greeting,
            no_zeroes: flags & client_flag::NO_ZEROES != 0,
            structured: false,
            extended: false,
            contexts: Vec::new(),
            contexts_export: None,
            violations: decoded.violations,
        })
    }

    /// The deadline for each message from here on (the greeting had the connect deadline;
    /// option replies may take as long as the server's real work takes).
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.conn.timeout = timeout;
    }

    pub async fn send_option(&mut self, opt: u32, data: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::new();
        handshake::encode_option(&mut buf, opt, data);
        self.conn.write(&buf).await
    }

    /// Sends bytes as they are, for malformed options.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.conn.write(bytes).await
    }

    /// Reads one option reply to `opt`.
    pub async fn read_option_reply(&mut self, opt: u32) -> Result<OptionReply, ClientError> {
        let what = format!("a reply to NBD_OPT_{}", option::name(opt));
        let raw = self
            .conn
            .take(magic::OPTION_REPLY_HEADER_LEN, &what)
            .await?;
        let header = OptionReplyHeader::decode(&raw).ok_or(ClientError::Closed {
            what: what.clone(),
            had: raw.len(),
        })?;
        if header.magic != magic::OPTION_REPLY {
            return Err(ClientError::Protocol(Violation::new(
                id::HS_OPTREP_1,
                format!("option reply magic {:#x}", header.magic),
            )));
        }
        if header.option != opt {
            self.violations.push(Violation::new(
                id::HS_OPTREP_1,
                format!("reply to option {opt} echoes option {}", header.option),
            ));
        }
        if header.length > limit::MAX_OPTION_PAYLOAD {
            return Err(ClientError::Protocol(Violation::new(
                id::HS_OPTREP_1,
                format!("option reply claims {} payload bytes", header.length),
            )));
        }
        let data = self.conn.take(header.length as usize, &what).await?;
        Ok(OptionReply { header, data })
    }

    /// Reads replies to `opt` up to and including the final one (ACK or an error), all within
    /// one exchange's deadline (the per-message timeout plus a grace second) and at most
    /// [`MAX_KEPT_REPLIES`] of them: a server that never ends an option is cut off, under the
    /// rule that says how the option's answer ends.
    pub async fn read_option_replies(&mut self, opt: u32) -> Result<Vec<OptionReply>, ClientError> {
        self.read_option_replies_keeping(opt, |_| Ok(())).await
    }

    /// As [`Handshake::read_option_replies`], keeping only the non-final replies `keep`
    /// accepts; what it refuses is recorded (at most [`MAX_VIOLATIONS_PER_OPTION`] lines).
    async fn read_option_replies_keeping(
        &mut self,
        opt: u32,
        mut keep: impl FnMut(&OptionReply) -> Result<(), Violation>,
    ) -> Result<Vec<OptionReply>, ClientError> {
        let deadline = exchange_deadline(self.conn.timeout);
        let mut overflow = Overflow {
            kept_from: self.violations.len(),
            dropped: 0,
            clause: None,
        };
        let collected = self.collect_option_replies(opt, &mut keep, &mut overflow);
        let result = match tokio::time::timeout(deadline, collected).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: format!("the final reply to NBD_OPT_{}", option::name(opt)),
                after: deadline,
            }),
        };
        overflow.trim(&mut self.violations);
        if let Some(clause) = overflow.clause {
            self.violations.push(Violation::new(
                clause,
                format!(
                    "and {} more violations in the replies to NBD_OPT_{}",
                    overflow.dropped,
                    option::name(opt)
                ),
            ));
        }
        result
    }

    async fn collect_option_replies(
        &mut self,
        opt: u32,
        keep: &mut impl FnMut(&OptionReply) -> Result<(), Violation>,
        overflow: &mut Overflow,
    ) -> Result<Vec<OptionReply>, ClientError> {
        let mut replies = Vec::new();
        let mut bytes = 0usize;
        let mut read = 0usize;
        for _ in 0..MAX_OPTION_REPLIES {
            let reply = self.read_option_reply(opt).await?;
            if reply.is_final() {
                replies.push(reply);
                return Ok(replies);
            }
            read += reply.data.len();
            if read > MAX_OPTION_BYTES_READ {
                return Err(ClientError::Protocol(Violation::new(
                    how_answers_end(opt),
                    format!(
                        "more than {MAX_OPTION_BYTES_READ} bytes of replies to NBD_OPT_{} and no \
                         final one yet",
                        option::name(opt)
                    ),
                )));
            }
            match keep(&reply) {
                Err(v) => self.violations.push(v),
                Ok(()) => {
                    bytes += reply.data.len();
                    if replies.len() >= MAX_KEPT_REPLIES || bytes > MAX_KEPT_REPLY_BYTES {
                        return Err(ClientError::Protocol(Violation::new(
                            how_answers_end(opt),
                            format!(
                                "more than {} replies ({bytes} bytes) to NBD_OPT_{} and no \
                                 final one yet",
                                replies.len(),
                                option::name(opt)
                            ),
                        )));
                    }
                    replies.push(reply);
                }
            }
            // Bounded as they come: a million replies may each break a rule.
            overflow.trim(&mut self.violations);
        }
        Err(ClientError::Protocol(Violation::new(
            how_answers_end(opt),
            format!(
                "no final reply among the first {MAX_OPTION_REPLIES} replies to NBD_OPT_{}",
                option::name(opt)
            ),
        )))
    }

    /// Sends an option without data and returns the final reply type.
    async fn simple_option(&mut self, opt: u32) -> Result<u32, ClientError> {
        self.send_option(opt, &[]).await?;
        let replies = self.read_option_replies(opt).await?;
        Ok(replies.last().map_or(0, |r| r.header.reply_type))
    }

    pub async fn structured_reply(&mut self) -> Result<u32, ClientError> {
        let reply = self.simple_option(option::STRUCTURED_REPLY).await?;
        self.accepted(option::STRUCTURED_REPLY, reply, "", Vec::new());
        Ok(reply)
    }

    pub async fn extended_headers(&mut self) -> Result<u32, ClientError> {
        let reply = self.simple_option(option::EXTENDED_HEADERS).await?;
        self.accepted(option::EXTENDED_HEADERS, reply, "", Vec::new());
        Ok(reply)
    }

    /// Keeps the state of the haggling in step with an option's final reply, however the
    /// option was sent (by these methods or as raw bytes): what transmission will use.
    /// `contexts` are what a SET_META_CONTEXT selected; every SET replaces the selection, even
    /// a failed one (SMC-REPLACE-1).
    pub fn accepted(&mut self, opt: u32, last: u32, export: &str, contexts: Vec<(u32, String)>) {
        let ack = last == reply_type::ACK;
        match opt {
            option::STRUCTURED_REPLY if ack => self.structured = true,
            option::EXTENDED_HEADERS if ack => {
                self.extended = true;
                self.structured = true;
            }
            option::SET_META_CONTEXT => {
                self.contexts = if ack { contexts } else { Vec::new() };
                self.contexts_export = Some(export.to_owned());
            }
            _ => {}
        }
    }

    /// LIST_META_CONTEXT: the listed (id, name) pairs and the final reply type.
    pub async fn list_meta_context(
        &mut self,
        export: &str,
        queries: &[&str],
    ) -> Result<(Vec<(u32, String)>, u32), ClientError> {
        self.meta_context(option::LIST_META_CONTEXT, export, queries)
            .await
    }

    /// SET_META_CONTEXT: the selected (id, name) pairs and the final reply type. Every SET
    /// replaces the selection, even a failed one (SMC-REPLACE-1).
    pub async fn set_meta_context(
        &mut self,
        export: &str,
        queries: &[&str],
    ) -> Result<(Vec<(u32, String)>, u32), ClientError> {
        let (contexts, last) = self
            .meta_context(option::SET_META_CONTEXT, export, queries)
            .await?;
        self.accepted(option::SET_META_CONTEXT, last, export, contexts.clone());
        Ok((contexts, last))
    }

    async fn meta_context(
        &mut self,
        opt: u32,
        export: &str,
        queries: &[&str],
    ) -> Result<(Vec<(u32, String)>, u32), ClientError> {
        self.send_option(opt, &handshake::meta_context_payload(export, queries))
            .await?;
        // A SET binds only what its queries could select: a context in a namespace none of
        // them names is reported and left out (however many the server sends).
        let replies = match opt {
            option::SET_META_CONTEXT => {
                self.read_option_replies_keeping(opt, |r| requested(r, queries))
                    .await?
            }
            _ => self.read_option_replies(opt).await?,
        };
        let contexts = self.meta_contexts(opt, &replies);
        Ok((contexts, replies.last().map_or(0, |r| r.header.reply_type)))
    }

    /// The contexts in the META_CONTEXT replies to LIST or SET_META_CONTEXT `opt`, however the
    /// option was sent; what the server got wrong in them is recorded. For a SET, one entry per
    /// id and one per name (see `distinct_contexts`, SMC-REPLY-1).
    pub fn meta_contexts(&mut self, opt: u32, replies: &[OptionReply]) -> Vec<(u32, String)> {
        let mut contexts = Vec::new();
        for r in replies {
            if r.header.reply_type != reply_type::META_CONTEXT {
                continue;
            }
            match decode_meta_context_reply(&r.data) {
                Some(d) => {
                    self.violations.extend(d.violations);
                    contexts.push(d.value);
                }
                None => self.violations.push(Violation::new(
                    id::SMC_REPLY_1,
                    format!(
                        "META_CONTEXT reply of {} bytes has no context id",
                        r.data.len()
                    ),
                )),
            }
        }
        // Ids in LIST replies mean nothing (a server may give every one 0); only a SET binds.
        if opt == option::SET_META_CONTEXT {
            contexts = distinct_contexts(contexts, &mut self.violations);
        }
        contexts
    }

    /// INFO or GO: returns what the server said and the final reply (with its message on error).
    pub async fn info_or_go(
        &mut self,
        opt: u32,
        export: &str,
        requests: &[u16],
    ) -> Result<(ExportInfo, OptionReply), ClientError> {
        self.send_option(opt, &handshake::info_request_payload(export, requests))
            .await?;
        let replies = self.read_option_replies(opt).await?;
        let mut out = ExportInfo::default();
        for r in &replies {
            if r.header.reply_type != reply_type::INFO {
                continue;
            }
            if let Some([hi, lo]) = r.data.get(..2) {
                out.kinds.push(u16::from_be_bytes([*hi, *lo]));
            }
            let Some(d) = Info::decode(&r.data) else {
                let (clause, what) = match r.data.get(..2) {
                    Some([0, 3]) => (id::GO_BLKSZ_1, "NBD_INFO_BLOCK_SIZE"),
                    _ => (id::GO_EXPORT_1, "NBD_INFO_EXPORT"),
                };
                self.violations.push(Violation::new(
                    clause,
                    format!(
                        "{what} reply of {} bytes is too short to decode",
                        r.data.len()
                    ),
                ));
                continue;
            };
            self.violations.extend(d.violations);
            match d.value {
                Info::Export { size, flags } => {
                    out.size = Some(size);
                    out.transmission_flags = flags;
                }
                Info::BlockSize(b) => out.block_sizes = Some(b),
                Info::Name(n) => out.name = Some(n),
                Info::Description(d) => out.description = Some(d),
                Info::Unknown(_) => {}
            }
        }
        let last = replies
            .last()
            .cloned()
            .ok_or(ClientError::Handshake("no reply".into()))?;
        Ok((out, last))
    }

    /// GO: enters transmission on success.
    pub async fn go(mut self, export: &str, dialect: Dialect) -> Result<Session, ClientError> {
        let requests = GO_INFO_REQUESTS;
        let (export_info, last) = self.info_or_go(option::GO, export, &requests).await?;
        if last.header.is_error() {
            return Err(refused(option::GO, &last));
        }
        self.enter_transmission(export, export_info, dialect)
    }

    /// After a successful GO read with [`Handshake::info_or_go`]: the transmission phase.
    pub fn enter_transmission(
        self,
        export: &str,
        info: ExportInfo,
        dialect: Dialect,
    ) -> Result<Session, ClientError> {
        let size = info.size.ok_or_else(|| {
            ClientError::Protocol(Violation::new(
                id::GO_ACK_1,
                "GO succeeded without NBD_INFO_EXPORT",
            ))
        })?;
        self.into_session(
            export,
            size,
            info.transmission_flags,
            info.block_sizes,
            dialect,
        )
    }

    /// EXPORT_NAME: the fallback for servers that do not know GO.
    pub async fn export_name(
        mut self,
        export: &str,
        dialect: Dialect,
    ) -> Result<Session, ClientError> {
        self.send_option(option::EXPORT_NAME, export.as_bytes())
            .await?;
        let what = "the NBD_OPT_EXPORT_NAME reply";
        let raw = self.conn.take(10, what).await?;
        let size = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
        let flags = u16::from_be_bytes(raw[8..10].try_into().unwrap_or_default());
        if !self.no_zeroes {
            let pad = self.conn.take(magic::EXPORT_NAME_PADDING, what).await?;
            if pad.iter().any(|b| *b != 0) {
                self.violations.push(Violation::new(
                    id::EXPNAME_REPLY_1,
                    "export-name padding is not all zeros",
                ));
            }
        }
        self.into_session(export, size, flags, None, dialect)
    }

    fn into_session(
        mut self,
        export: &str,
        size: u64,
        flags: u16,
        block_sizes: Option<BlockSizes>,
        dialect: Dialect,
    ) -> Result<Session, ClientError> {
        if flags & transmission_flag::HAS_FLAGS == 0 {
            // Not fatal: the other flags are still readable.
            self.violations.push(Violation::new(
                id::TX_HASFLAGS_1,
                format!("transmission flags {flags:#06x} lack HAS_FLAGS"),
            ));
        }
        let negotiated = Negotiated {
            export: export.to_owned(),
            size,
            transmission_flags: flags,
            block_sizes,
            handshake_flags: self.greeting.flags,
            structured: self.structured,
            extended: self.extended,
            contexts: self.contexts_for(export),
            dialect,
        };
        Ok(Session::new(self.conn, negotiated, self.violations))
    }

    /// The selection only counts if the last SET named this export (SMC-SAMEEXPORT-1).
    fn contexts_for(&self, export: &str) -> Vec<(u32, String)> {
        if self.contexts_export.as_deref() == Some(export) {
            self.contexts.clone()
        } else {
            Vec::new()
        }
    }

    /// Ends the handshake politely with ABORT.
    pub async fn abort(mut self) -> Result<(), ClientError> {
        self.send_option(option::ABORT, &[]).await?;
        // The server MUST answer with ACK (ABORT-ACK-1), but some close instead (nbd-server
        // 3.24): cope with both, as the client's SHOULD (ABORT-LEGACY-1) asks.
        let _ = self.read_option_reply(option::ABORT).await;
        self.conn.shutdown().await;
        Ok(())
    }

    /// The usual sequence: extended headers or structured replies, SET_META_CONTEXT, GO.
    pub async fn negotiate(
        target: &Target,
        options: &SessionOptions,
    ) -> Result<Session, ClientError> {
        let mut hs = Handshake::start(target, options.timeout, None).await?;
        if options.dialect == Dialect::Draft {
            return hs.go(&target.export, Dialect::Draft).await;
        }
        if options.extended {
            let reply = hs.extended_headers().await?;
            if reply != reply_type::ACK {
                return Err(ClientError::NotSupported(format!(
                    "the server refused NBD_OPT_EXTENDED_HEADERS ({})",
                    reply_type::name(reply)
                )));
            }
        } else if options.structured {
            let reply = hs.structured_reply().await?;
            if reply != reply_type::ACK && !options.contexts.is_empty() {
                return Err(ClientError::NotSupported(format!(
                    "the server refused NBD_OPT_STRUCTURED_REPLY ({}), so it cannot answer block status",
                    reply_type::name(reply)
                )));
            }
        }
        if !options.contexts.is_empty() {
            let queries: Vec<&str> = options.contexts.iter().map(String::as_str).collect();
            let (selected, last) = hs.set_meta_context(&target.export, &queries).await?;
            if last != reply_type::ACK {
                return Err(ClientError::NotSupported(format!(
                    "the server refused NBD_OPT_SET_META_CONTEXT ({})",
                    reply_type::name(last)
                )));
            }
            // Keep the order the caller asked in, whatever order the server replied in.
            let rank = |name: &str| options.contexts.iter().position(|c| c == name);
            hs.contexts.sort_by_key(|(_, name)| rank(name));
            for wanted in &options.contexts {
                if !selected.iter().any(|(_, name)| name == wanted) {
                    return Err(ClientError::NotSupported(format!(
                        "the server does not offer metadata context {wanted:?}"
                    )));
                }
            }
        }
        hs.go(&target.export, Dialect::Standard).await
    }
}

/// The violations one option's replies broke past [`MAX_VIOLATIONS_PER_OPTION`]: counted, not
/// kept.
struct Overflow {
    /// Where this option's violations start.
    kept_from: usize,
    dropped: usize,
    /// The clause of the first one dropped.
    clause: Option<crate::clauses::ClauseId>,
}

impl Overflow {
    fn trim(&mut self, violations: &mut Vec<Violation>) {
        let keep = self.kept_from + MAX_VIOLATIONS_PER_OPTION;
        if violations.len() <= keep {
            return;
        }
        let extra = violations.split_off(keep);
        self.clause.get_or_insert(extra[0].clause);
        self.dropped += extra.len();
    }
}

/// The rule that says how the answer to `opt` ends (with a final reply).
fn how_answers_end(opt: u32) -> crate::clauses::ClauseId {
    match opt {
        option::SET_META_CONTEXT => id::SMC_REPLY_1,
        option::LIST_META_CONTEXT => id::LMC_SHAPE_1,
        _ => id::HS_OPTREP_1,
    }
}

/// Whether a reply to a SET of `queries` names a context one of them could select: one in
/// the namespace of a query (the syntax inside a namespace is the server's, MC-WILD-1), and
/// in `base:` the very context asked for (or any, for the empty leaf).
fn requested(reply: &OptionReply, queries: &[&str]) -> Result<(), Violation> {
    if reply.header.reply_type != reply_type::META_CONTEXT {
        return Ok(());
    }
    // One that does not decode is reported where the replies are decoded.
    let Some(d) = decode_meta_context_reply(&reply.data) else {
        return Ok(());
    };
    let (id, name) = d.value;
    let namespace = |s: &str| s.split_once(':').map(|(ns, _)| ns.to_owned());
    let selectable = queries.iter().any(|q| match namespace(q) {
        Some(ns) if ns == "base" => *q == name || *q == "base:",
        Some(ns) => namespace(&name).as_deref() == Some(ns.as_str()),
        None => false,
    });
    if selectable {
        return Ok(());
    }
    Err(Violation::new(
        id::SMC_REPLY_1,
        format!(
            "context {name:?} (id {id}) is not one any query {queries:?} could select; it is \
             left out"
        ),
    ))
}

pub(crate) fn refused(opt: u32, reply: &OptionReply) -> ClientError {
    ClientError::Refused {
        option: option::name(opt),
        reply: reply_type::name(reply.header.reply_type),
        message: String::from_utf8_lossy(&reply.data).into_owned(),
    }
}

/// One entry per id and one per name: the first binding a server hands out stands. A context
/// replied twice, an id given to two names or a name given two ids is reported (SMC-REPLY-1) and
/// the later binding dropped, so that nobody maps a context twice, mixes two up, or files one
/// context's descriptors under another's name.
fn distinct_contexts(
    contexts: Vec<(u32, String)>,
    violations: &mut Vec<Violation>,
) -> Vec<(u32, String)> {
    use std::collections::HashMap;
    // Linear however many a server sends: by id and by name, the binding that stands.
    let mut by_id: HashMap<u32, String> = HashMap::new();
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut out: Vec<(u32, String)> = Vec::new();
    for (id, name) in contexts {
        let detail = match (by_id.get(&id), by_name.get(&name)) {
            (Some(n), _) if *n == name => format!("context {name:?} (id {id}) was replied twice"),
            (Some(other), _) => format!("id {id} was given to both {other:?} and {name:?}"),
            (None, Some(other)) => {
                format!("context {name:?} was given both id {other} and id {id}")
            }
            (None, None) => {
                by_id.insert(id, name.clone());
                by_name.insert(name.clone(), id);
                out.push((id, name));
                continue;
            }
        };
        violations.push(Violation::new(
            id::SMC_REPLY_1,
            format!("{detail}; the first one is kept"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: u32, name: &str) -> (u32, String) {
        (id, name.to_owned())
    }

    #[test]
    fn distinct_contexts_keeps_the_first_binding_of_each_id_and_name() {
        let mut violations = Vec::new();
        let kept = distinct_contexts(
            vec![
                ctx(1, "base:allocation"),
                ctx(1, "base:allocation"),     // replied twice
                ctx(1, "qemu:dirty-bitmap:a"), // id reused for another name
                ctx(2, "base:allocation"),     // name given a second id
                ctx(3, "qemu:dirty-bitmap:b"),
            ],
            &mut violations,
        );
        assert_eq!(
            kept,
            vec![ctx(1, "base:allocation"), ctx(3, "qemu:dirty-bitmap:b")]
        );
        assert_eq!(violations.len(), 3);
        assert!(violations.iter().all(|v| v.clause == id::SMC_REPLY_1));
    }

    fn meta_context_reply(id: u32, name: &str) -> OptionReply {
        let mut data = BytesMut::new();
        handshake::encode_meta_context_reply(&mut data, id, name);
        OptionReply {
            header: OptionReplyHeader {
                magic: magic::OPTION_REPLY,
                option: option::SET_META_CONTEXT,
                reply_type: reply_type::META_CONTEXT,
                length: data.len() as u32,
            },
            data: data.freeze(),
        }
    }

    #[test]
    fn a_set_binds_only_contexts_its_queries_could_select() {
        let queries = ["base:allocation", "qemu:dirty-bitmap:"];
        let selectable = |name: &str| requested(&meta_context_reply(1, name), &queries).is_ok();
        assert!(selectable("base:allocation"));
        // Inside a namespace other than base, the query syntax is the server's.
        assert!(selectable("qemu:dirty-bitmap:b0"));
        assert!(!selectable("base:other"));
        assert!(!selectable("x-hostile:ctx-0"));
        assert!(requested(&meta_context_reply(1, "qemu:x"), &["nonsense"]).is_err());
    }

    #[test]
    fn distinct_contexts_accepts_distinct_bindings_silently() {
        let mut violations = Vec::new();
        let all = vec![ctx(1, "base:allocation"), ctx(7, "qemu:allocation-depth")];
        assert_eq!(distinct_contexts(all.clone(), &mut violations), all);
        assert!(violations.is_empty());
    }
}
