//! Runs one case against one target and grades it.
//!
//! Steps drive a client connection ([`Handshake`] during option haggling, [`Session`] during
//! transmission); every reply goes through the clause checks in [`crate::checks`], and the
//! `map` step adds the oracles (read-back of every range called zero, fixture truth, dirty-map
//! coverage). A harness problem (cannot connect, bad case) grades `error`; a missing capability
//! grades `unsupported`; neither ever hides a failure found before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::case::{self, Case, Expect, Need, Negotiate, Step};
use super::fit;
use super::outcome::{Capabilities, CaseResult, ConnectionLoss, Finding, Grade};
use super::transcript;
use crate::checks::{self, from_violation};
use crate::client::{
    ClientError, DraftTrailer, Handshake, Negotiated, Reply, ReplyBody, Session, Target,
};
use crate::fixtures::Truth;
use crate::map::Track;
use crate::wire::consts::{command, context, draft, errno, limit, magic, option, reply_type};
use crate::wire::draft::DraftQuery;
use crate::wire::handshake::{self, decode_meta_context_reply, decode_server_reply, Info};
use crate::wire::request::Request;
use crate::Dialect;

/// What a case runs against.
#[derive(Clone)]
pub struct TargetSpec {
    pub target: Target,
    pub dialect: Dialect,
    /// The fixture's truth, when the harness built the image this server serves.
    pub truth: Option<Arc<Truth>>,
    /// The server's own dirty bitmaps, standing in (in order) for the fixture's (`bm0`, `bm1`)
    /// on a server we did not set up; empty: the fixture's names are the server's.
    pub bitmaps: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Longest wait to connect and for each message of the handshake: short, so that an
    /// unreachable or mute target is reported within seconds.
    pub timeout: Duration,
    /// Longest wait for the whole reply to one request, once the handshake is done: generous,
    /// because a slow reply that arrives complete is a correct one (a plugin, a cold disk,
    /// a remote backend); `--timeout` sets it.
    pub reply_timeout: Duration,
    /// Longest a whole case may take.
    pub case_timeout: Duration,
    /// Bytes a case reads back of the ranges a server calls zero; what is left over is
    /// reported as not checked.
    pub read_back_budget: u64,
}

/// The default deadline for one request's reply.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default read-back budget per case: 256 MiB (a fraction of a second on loopback, so
/// that a run over many huge holes stays short; what it leaves unread is reported).
pub const DEFAULT_READ_BACK_BUDGET: u64 = 256 << 20;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(5),
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            case_timeout: Duration::from_secs(120),
            read_back_budget: DEFAULT_READ_BACK_BUDGET,
        }
    }
}

/// Why a case stopped early.
enum Stop {
    Unsupported(String),
    Error(String),
}

enum Conn {
    None,
    Handshake(Handshake),
    Session(Session),
}

/// Longest READ of the read-back (less when the server advertises a smaller maximum payload).
const READ_PIECE: u64 = 1 << 20;

struct Run<'a> {
    case: &'a Case,
    spec: &'a TargetSpec,
    settings: Settings,
    conn: Conn,
    last_negotiate: Option<Negotiate>,
    findings: Vec<Finding>,
    transcript: Vec<String>,
    streams: Vec<String>,
    caps: Capabilities,
    read_budget: u64,
    /// What the case could not check, and why (read-back left unread by the budget).
    not_checked: Vec<String>,
    /// The last request's connection was closed by the server, as the spec allows there.
    closed_as_allowed: bool,
    lost: Option<(ConnectionLoss, Instant)>,
    last_connected: Option<Instant>,
    /// The first complete map of each context by a `map` step, for `stability` to compare with.
    mapped: Vec<Track>,
}

/// Runs `case` against `spec`; never panics on server behaviour, always returns a graded result.
pub async fn run_case(
    case: &Case,
    spec: &TargetSpec,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    let started = Instant::now();
    let renamed;
    let case = if spec.bitmaps.is_empty() {
        case
    } else {
        let fixture_bitmaps = crate::fixtures::find(&case.fixture)
            .map(|f| f.layout.bitmaps.iter().map(|b| b.name.clone()).collect())
            .unwrap_or_else(|_| Vec::new());
        let renames: Vec<(String, String)> = fixture_bitmaps
            .into_iter()
            .zip(spec.bitmaps.iter().cloned())
            .collect();
        renamed = case.with_bitmaps_renamed(&renames);
        &renamed
    };
    let mut run = Run {
        case,
        spec,
        settings,
        conn: Conn::None,
        last_negotiate: None,
        findings: Vec::new(),
        transcript: Vec::new(),
        streams: Vec::new(),
        caps: Capabilities::default(),
        read_budget: settings.read_back_budget,
        not_checked: Vec::new(),
        closed_as_allowed: false,
        lost: None,
        last_connected: None,
        mapped: Vec::new(),
    };
    let stop = match tokio::time::timeout(settings.case_timeout, run.all_steps()).await {
        Ok(r) => r.err(),
        Err(_) => Some(Stop::Error(format!(
            "the case did not finish within {:?}",
            settings.case_timeout
        ))),
    };
    run.close().await;
    let (grade, note) = grade(&run.findings, stop);
    let result = CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        grade,
        clauses: case.clause_ids(),
        findings: run.findings,
        note,
        not_checked: run.not_checked,
        lost: run.lost.map(|(how, _)| how),
        lost_at: run.lost.map(|(_, at)| at),
        last_connected: run.last_connected,
        transcript: run.transcript,
        streams: run.streams,
        duration: started.elapsed(),
    };
    (result, run.caps)
}

/// Fail outranks everything (non-conformance is never hidden as an error); then error, warn,
/// unsupported, info, pass.
fn grade(findings: &[Finding], stop: Option<Stop>) -> (Grade, Option<String>) {
    let worst = |g: Grade| findings.iter().any(|f| f.grade == g);
    let note = match &stop {
        Some(Stop::Unsupported(n)) | Some(Stop::Error(n)) => Some(n.clone()),
        None => None,
    };
    let grade = if worst(Grade::Fail) {
        Grade::Fail
    } else if matches!(stop, Some(Stop::Error(_))) {
        Grade::Error
    } else if worst(Grade::Warn) {
        Grade::Warn
    } else if matches!(stop, Some(Stop::Unsupported(_))) {
        Grade::Unsupported
    } else if worst(Grade::Info) {
        Grade::Info
    } else {
        Grade::Pass
    };
    (grade, note)
}

impl Run<'_> {
    async fn all_steps(&mut self) -> Result<(), Stop> {
        if self.case.dialect != self.spec.dialect {
            return Err(Stop::Unsupported(format!(
                "the case is for the {:?} dialect",
                self.case.dialect
            )));
        }
        if self.case.needs().contains(&Need::FixtureTruth) && self.spec.truth.is_none() {
            return Err(Stop::Unsupported(
                "needs a fixture the harness built (not available with --target)".into(),
            ));
        }
        for step in &self.case.steps {
            let done = self.step(step).await;
            // Rules broken on the way count even when the step ends the case.
            self.drain_session_violations();
            done?;
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), Stop> {
        let needs_session = matches!(
            step,
            Step::BlockStatus(_)
                | Step::DraftStatus(_)
                | Step::RawRequest(_)
                | Step::Pipeline(_)
                | Step::Map(_)
                | Step::Stability(_)
                | Step::Disc(_)
        );
        // The server closed where the spec let it (the last request broke a client MUST):
        // the case goes on over a new connection, negotiated as before.
        if needs_session && self.closed_as_allowed && matches!(self.conn, Conn::None) {
            if let Some(n) = self.last_negotiate.clone() {
                self.note("(reconnecting: the server closed, as it may after that request)");
                self.negotiate(&n).await?;
            }
        }
        self.closed_as_allowed = false;
        match step {
            Step::Negotiate(n) => self.negotiate(n).await,
            Step::Connect(c) => self.connect_step(c).await,
            Step::Option(o) => self.option_step(o).await,
            Step::Go(g) => self.go_step(g).await,
            Step::BlockStatus(s) => {
                let (offset, length) =
                    self.plan(command::BLOCK_STATUS, &s.offset, &s.length, s.expect)?;
                let flags = case::command_flags(&s.flags).map_err(Stop::Error)?;
                let request = Request::new(
                    self.session()?.negotiated.header_form(),
                    command::BLOCK_STATUS,
                    flags,
                    0,
                    offset,
                    length,
                );
                self.request(request, s.expect, s.clause.as_deref(), s.then_alive)
                    .await
            }
            Step::DraftStatus(s) => {
                let (offset, length) =
                    self.plan(draft::CMD_GET_LBA_STATUS, &s.offset, &s.length, s.expect)?;
                let request = Request::new(
                    self.session()?.negotiated.header_form(),
                    draft::CMD_GET_LBA_STATUS,
                    s.selector,
                    0,
                    offset,
                    length,
                );
                self.request(request, s.expect, s.clause.as_deref(), s.then_alive)
                    .await
            }
            Step::RawRequest(s) => {
                // A frame with a wrong magic is malformed whatever its range: nothing to fit.
                let (offset, length) = match s.magic {
                    Some(_) => self.evaluate(&s.offset, &s.length)?,
                    None => self.plan(s.command, &s.offset, &s.length, s.expect)?,
                };
                let flags = case::command_flags(&s.flags).map_err(Stop::Error)?;
                let mut request = Request::new(
                    self.session()?.negotiated.header_form(),
                    s.command,
                    flags,
                    0,
                    offset,
                    length,
                );
                if let Some(m) = s.magic {
                    request.magic = m;
                    // The request line does not show the magic; say which one went out.
                    self.note(format!("(the next request carries the magic {m:#010x})"));
                }
                self.request(request, s.expect, s.clause.as_deref(), s.then_alive)
                    .await
            }
            Step::Pipeline(p) => self.pipeline(p).await,
            Step::Map(m) => self.map_step(m).await,
            Step::Stability(_) => self.stability().await,
            Step::Reconnect(_) => match self.last_negotiate.clone() {
                Some(n) => self.negotiate(&n).await,
                None => Err(Stop::Error("reconnect before any negotiate step".into())),
            },
            Step::Disc(_) => self.disc().await,
        }
    }

    // ---- connection state -------------------------------------------------------------------

    async fn close(&mut self) {
        self.drain_session_violations();
        match std::mem::replace(&mut self.conn, Conn::None) {
            Conn::Session(s) => s.disconnect().await,
            Conn::Handshake(h) => {
                let _ = h.abort().await;
            }
            Conn::None => {}
        }
    }

    fn session(&mut self) -> Result<&mut Session, Stop> {
        match &mut self.conn {
            Conn::Session(s) => Ok(s),
            _ => Err(Stop::Error(
                "the case sends a request without a negotiated connection".into(),
            )),
        }
    }

    /// Forgets a connection the server closed or broke, keeping the rules it broke on the way
    /// (e.g. a reply with a stranger cookie before the timeout, TX-COOKIE-1).
    fn drop_conn(&mut self) {
        self.drain_session_violations();
        self.conn = Conn::None;
    }

    fn drain_session_violations(&mut self) {
        let v = match &mut self.conn {
            Conn::Session(s) => std::mem::take(&mut s.violations),
            Conn::Handshake(h) => std::mem::take(&mut h.violations),
            Conn::None => Vec::new(),
        };
        self.findings.extend(v.iter().map(from_violation));
    }

    /// Records the first way the case lost the server, and when.
    fn lost(&mut self, how: ConnectionLoss) {
        self.lost.get_or_insert((how, Instant::now()));
    }

    fn note(&mut self, line: impl Into<String>) {
        self.transcript.push(line.into());
    }

    async fn start(&mut self, client_flags: Option<u32>) -> Result<Handshake, Stop> {
        self.close().await;
        let hs =
            match Handshake::start(&self.spec.target, self.settings.timeout, client_flags).await {
                Ok(hs) => hs,
                Err(e) => {
                    self.lost(ConnectionLoss::Unreachable);
                    return Err(Stop::Error(e.to_string()));
                }
            };
        self.last_connected = Some(Instant::now());
        self.note(format!("← greeting flags={:#06x}", hs.greeting.flags));
        // Past the greeting the server is there: its option replies (GO opens the image)
        // get the generous deadline, like any reply.
        let mut hs = hs;
        hs.set_timeout(self.settings.reply_timeout);
        Ok(hs)
    }

    /// The offset and length a request step sends on this export, by the rules of
    /// [`super::fit`]; a request that cannot go out as the case means it stops the case as
    /// `unsupported` (with the reason), never as a verdict on the server.
    fn plan(
        &mut self,
        cmd: u16,
        offset: &str,
        length: &str,
        expect: Expect,
    ) -> Result<(u64, u64), Stop> {
        let (off, len) = self.evaluate(offset, length)?;
        let neg = self.session()?.negotiated.clone();
        let fixture_size = crate::fixtures::find(&self.case.fixture)
            .ok()
            .map(|f| f.layout.size);
        let end_on_fixture = fixture_size.and_then(|size| {
            let o = case::eval(offset, size).ok()?;
            o.checked_add(case::eval(length, size).ok()?)
        });
        let intent = match expect {
            Expect::Ok | Expect::Fallback => fit::Intent::Succeed,
            Expect::Any => fit::Intent::Anything,
            Expect::Einval | Expect::Error | Expect::EinvalOrClose | Expect::ErrorOrClose => {
                match (fixture_size, end_on_fixture) {
                    (Some(size), Some(end)) if end <= size => fit::Intent::RefusedInRange,
                    _ => fit::Intent::RefusedOutOfRange,
                }
            }
        };
        let export = fit::Export {
            size: neg.size,
            fixture_size,
            form: neg.header_form(),
            minimum: neg.minimum_block(),
            max_payload: neg.block_sizes.map(|b| b.maximum as u64),
        };
        match fit::fit(cmd, off, len, intent, &export, end_on_fixture) {
            fit::Fit::Send {
                offset,
                length,
                note,
            } => {
                if let Some(note) = note {
                    self.note(note);
                }
                Ok((offset, length))
            }
            fit::Fit::Unsupported(why) => Err(Stop::Unsupported(why)),
        }
    }

    /// A step's offset and length expressions on this export; one that leaves 0..2^64 here
    /// (`size-512` on an empty export) means the case does not fit it.
    fn evaluate(&mut self, offset: &str, length: &str) -> Result<(u64, u64), Stop> {
        let size = self.session()?.negotiated.size;
        let value = |expr: &str| {
            case::eval(expr, size).map_err(|e| match e {
                case::ExprError::Syntax(m) => Stop::Error(m),
                case::ExprError::OutOfRange(m) => Stop::Unsupported(m),
            })
        };
        Ok((value(offset)?, value(length)?))
    }

    // ---- negotiation --------------------------------------------------------------------

    async fn negotiate(&mut self, n: &Negotiate) -> Result<(), Stop> {
        self.last_negotiate = Some(n.clone());
        let export = n
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        let mut hs = self.start(None).await?;
        let haggled = self.haggle(n, &export, &mut hs).await;
        // Kept even when haggling ends the case, so that what the server broke is reported.
        self.conn = Conn::Handshake(hs);
        haggled?;
        let go_export = n.go_export.clone().unwrap_or(export);
        self.go(&go_export, None).await
    }

    /// The options of a `negotiate` step before GO: EXTENDED_HEADERS or STRUCTURED_REPLY,
    /// then SET_META_CONTEXT.
    async fn haggle(
        &mut self,
        n: &Negotiate,
        export: &str,
        hs: &mut Handshake,
    ) -> Result<(), Stop> {
        if self.case.dialect == Dialect::Standard {
            if n.extended {
                self.note("→ NBD_OPT_EXTENDED_HEADERS");
                let r = hs
                    .extended_headers()
                    .await
                    .map_err(|e| Stop::Error(e.to_string()))?;
                self.note(format!("← {}", reply_type::name(r)));
                if r != reply_type::ACK {
                    return Err(Stop::Unsupported(format!(
                        "the server refused NBD_OPT_EXTENDED_HEADERS ({})",
                        reply_type::name(r)
                    )));
                }
            } else if n.structured {
                self.note("→ NBD_OPT_STRUCTURED_REPLY");
                let r = hs
                    .structured_reply()
                    .await
                    .map_err(|e| Stop::Error(e.to_string()))?;
                self.note(format!("← {}", reply_type::name(r)));
                if r != reply_type::ACK
                    && (!n.contexts.is_empty()
                        || self.case.needs().contains(&Need::StructuredReplies))
                {
                    return Err(Stop::Unsupported(format!(
                        "the server refused NBD_OPT_STRUCTURED_REPLY ({})",
                        reply_type::name(r)
                    )));
                }
            }
            if !n.contexts.is_empty() {
                let queries: Vec<&str> = n.contexts.iter().map(String::as_str).collect();
                self.note(format!(
                    "→ NBD_OPT_SET_META_CONTEXT export={export:?} queries={queries:?}"
                ));
                let (selected, last) = hs
                    .set_meta_context(export, &queries)
                    .await
                    .map_err(|e| Stop::Error(e.to_string()))?;
                for (id, name) in &selected {
                    self.note(format!("← META_CONTEXT id={id} {name:?}"));
                }
                self.note(format!("← {}", reply_type::name(last)));
                // A server that selects a context twice or under two ids breaks SMC-REPLY-1
                // whether or not the case can go on.
                let broken = std::mem::take(&mut hs.violations);
                self.findings.extend(broken.iter().map(from_violation));
                if last != reply_type::ACK {
                    return Err(Stop::Unsupported(format!(
                        "the server refused NBD_OPT_SET_META_CONTEXT ({})",
                        reply_type::name(last)
                    )));
                }
                for wanted in &n.contexts {
                    if !selected.iter().any(|(_, name)| name == wanted) {
                        return Err(Stop::Unsupported(format!(
                            "the server does not offer {wanted}"
                        )));
                    }
                }
                // Keep the case's order whatever order the server replied in.
                let rank = |name: &str| n.contexts.iter().position(|c| c == name);
                hs.contexts.sort_by_key(|(_, name)| rank(name));
            }
        }
        Ok(())
    }

    async fn go(&mut self, export: &str, expect: Option<&case::ExpectOption>) -> Result<(), Stop> {
        let Conn::Handshake(mut hs) = std::mem::replace(&mut self.conn, Conn::None) else {
            return Err(Stop::Error("GO outside option haggling".into()));
        };
        self.note(format!("→ NBD_OPT_GO export={export:?}"));
        let (info, last) = match hs
            .info_or_go(
                option::GO,
                export,
                &crate::client::negotiate::GO_INFO_REQUESTS,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // The handshake is about to go: keep what it saw broken on the way.
                let broken = std::mem::take(&mut hs.violations);
                self.findings.extend(broken.iter().map(from_violation));
                return self.lost_in_haggling(
                    e,
                    expect.is_some_and(|x| x.allow_close),
                    expect.map(|x| x.clause.as_str()),
                );
            }
        };
        let final_reply = reply_type::name(last.header.reply_type);
        // Only what arrived: a refused GO usually carries no NBD_INFO_EXPORT at all.
        self.note(match info.size {
            Some(size) => format!(
                "← INFO size={size} flags={:#06x}{} then {final_reply}",
                info.transmission_flags,
                info.block_sizes.map_or(String::new(), |b| format!(
                    " block sizes {}/{}/{}",
                    b.minimum, b.preferred, b.maximum
                )),
            ),
            None => format!("← {final_reply}{}", error_text(&last.data)),
        });
        if let Some(expect) = expect {
            self.judge_option_reply(last.header.reply_type, 0, &[], expect);
        }
        if last.header.is_error() {
            self.conn = Conn::Handshake(hs);
            if expect.is_some() {
                return Ok(());
            }
            return Err(Stop::Error(format!(
                "GO {export:?} refused with {}",
                reply_type::name(last.header.reply_type)
            )));
        }
        let broken = std::mem::take(&mut hs.violations);
        self.findings.extend(broken.iter().map(from_violation));
        let session = match hs.enter_transmission(export, info, self.case.dialect) {
            Ok(s) => s,
            // A GO that succeeds without NBD_INFO_EXPORT is the server's fault (GO-ACK-1).
            Err(ClientError::Protocol(v)) => {
                self.findings.push(from_violation(&v));
                return Err(Stop::Error(format!("cannot enter transmission: {v}")));
            }
            Err(e) => return Err(Stop::Error(e.to_string())),
        };
        self.caps = Capabilities {
            structured_replies: session.negotiated.structured,
            extended_headers: session.negotiated.extended,
            contexts: session
                .negotiated
                .contexts
                .iter()
                .map(|(_, n)| n.clone())
                .collect(),
        };
        // From here on, messages are replies: they get the generous deadline.
        let mut session = session;
        session.set_timeout(self.settings.reply_timeout);
        // Stored first, so that a case stopped for a missing need keeps the session's findings.
        let negotiated = session.negotiated.clone();
        self.conn = Conn::Session(session);
        self.check_needs(&negotiated)?;
        Ok(())
    }

    fn check_needs(&self, neg: &Negotiated) -> Result<(), Stop> {
        for need in self.case.needs() {
            let met = match &need {
                Need::StructuredReplies => neg.structured,
                Need::ExtendedHeaders => neg.extended,
                Need::Context(c) => neg.contexts.iter().any(|(_, n)| n == c),
                Need::Flag(f) => neg.transmission_flags & f != 0,
                Need::NoFlag(f) => neg.transmission_flags & f == 0,
                Need::MinBlockAbove1 => neg.block_sizes.is_some_and(|b| b.minimum > 1),
                Need::FixtureTruth => self.spec.truth.is_some(),
                Need::DraftStatus => neg.advertises_draft_status(),
            };
            if !met {
                return Err(Stop::Unsupported(format!("needs {}", describe_need(&need))));
            }
        }
        Ok(())
    }

    async fn connect_step(&mut self, c: &case::Connect) -> Result<(), Stop> {
        let mut hs = self.start(c.client_flags).await?;
        if let Some(f) = c.client_flags {
            self.note(format!("→ client flags {f:#010x}"));
        }
        if c.expect_close {
            // The server must drop us instead of reading options: probe with a harmless LIST.
            let _ = hs.send_option(option::LIST, &[]).await;
            let clause = c.clause.as_deref().unwrap_or("HS-CFLAGS-3");
            match hs.read_option_reply(option::LIST).await {
                Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                    self.note("← connection closed")
                }
                Ok(r) => {
                    self.note(format!("← {}", reply_type::name(r.header.reply_type)));
                    self.findings.push(Finding::broken(
                        leak(clause),
                        "the connection closed",
                        format!("a {} reply", reply_type::name(r.header.reply_type)),
                    ));
                }
                Err(e) => self.findings.push(Finding::broken(
                    leak(clause),
                    "the connection closed",
                    e.to_string(),
                )),
            }
            return Ok(());
        }
        self.conn = Conn::Handshake(hs);
        Ok(())
    }

    async fn go_step(&mut self, g: &case::Go) -> Result<(), Stop> {
        if matches!(self.conn, Conn::None) {
            let hs = self.start(None).await?;
            self.conn = Conn::Handshake(hs);
        }
        let export = g
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        self.go(&export, g.expect.as_ref()).await
    }

    async fn option_step(&mut self, o: &case::OptionStep) -> Result<(), Stop> {
        if !matches!(self.conn, Conn::Handshake(_)) {
            let hs = self.start(None).await?;
            self.conn = Conn::Handshake(hs);
        }
        let opt = option_number(&o.option).map_err(Stop::Error)?;
        let export = o
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        let queries: Vec<&str> = o.queries.iter().map(String::as_str).collect();
        let data: Vec<u8> = match &o.data_hex {
            Some(hex) => payload_hex(hex, &export).map_err(Stop::Error)?,
            None => match opt {
                option::LIST_META_CONTEXT | option::SET_META_CONTEXT => {
                    handshake::meta_context_payload(&export, &queries).to_vec()
                }
                option::INFO | option::GO => handshake::info_request_payload(&export, &[]).to_vec(),
                _ => Vec::new(),
            },
        };
        let Conn::Handshake(hs) = &mut self.conn else {
            unreachable!()
        };
        let mut frame = BytesMut::new();
        handshake::encode_option_raw(
            &mut frame,
            magic::IHAVEOPT,
            opt,
            o.claimed_length.unwrap_or(data.len() as u32),
            &data,
        );
        let sent = hs.send_raw(&frame).await;
        let shown = if queries.is_empty() {
            String::new()
        } else {
            format!(" queries={queries:?}")
        };
        self.note(format!(
            "→ NBD_OPT_{} ({opt}) {} bytes{shown}",
            option::name(opt),
            data.len()
        ));
        let Conn::Handshake(hs) = &mut self.conn else {
            unreachable!()
        };
        let replies = match sent {
            Ok(()) => hs.read_option_replies(opt).await,
            Err(e) => Err(e),
        };
        let replies = match replies {
            Ok(r) => r,
            // The server MUST answer ABORT with ACK (ABORT-ACK-1); the SHOULD about coping
            // with a bare close (ABORT-LEGACY-1) binds the client, which is us: we cope, and
            // grade the server by its MUST.
            Err(ClientError::Closed { .. } | ClientError::Io(_)) if opt == option::ABORT => {
                self.note("← connection closed");
                self.drop_conn();
                self.findings.push(Finding::broken(
                    "ABORT-ACK-1",
                    "ACK before the close",
                    "the server closed without ACK",
                ));
                return Ok(());
            }
            Err(e) => {
                return self.lost_in_haggling(e, o.expect.allow_close, Some(&o.expect.clause))
            }
        };
        let mut contexts = Vec::new();
        let mut ids = Vec::new();
        for r in &replies {
            let line = match r.header.reply_type {
                reply_type::META_CONTEXT => match decode_meta_context_reply(&r.data) {
                    Some(d) => {
                        ids.push(d.value.0);
                        contexts.push(d.value.1.clone());
                        format!("← META_CONTEXT id={} {:?}", d.value.0, d.value.1)
                    }
                    None => "← META_CONTEXT (too short)".to_owned(),
                },
                reply_type::SERVER => format!(
                    "← SERVER {:?}",
                    decode_server_reply(&r.data)
                        .map(|d| d.value.0)
                        .unwrap_or_default()
                ),
                reply_type::INFO => format!("← INFO {:?}", Info::decode(&r.data).map(|d| d.value)),
                t => format!(
                    "← {}{}",
                    reply_type::name(t),
                    if r.data.is_empty() {
                        String::new()
                    } else {
                        format!(" {:?}", String::from_utf8_lossy(&r.data))
                    }
                ),
            };
            self.note(line);
        }
        let last = replies.last().map_or(0, |r| r.header.reply_type);
        // ERR_UNSUP is how a server says it does not implement an optional option (HS-UNSUP-1,
        // SR-REPLY-1, EH-UNSUP-1, LMC-SHAPE-1): the case cannot apply, which is no failure,
        // unless the case itself expects ERR_UNSUP.
        let optional = matches!(
            opt,
            option::STRUCTURED_REPLY
                | option::EXTENDED_HEADERS
                | option::LIST_META_CONTEXT
                | option::SET_META_CONTEXT
        );
        let unsup_expected = o
            .expect
            .reply
            .iter()
            .any(|r| r == "ERR_UNSUP" || r == "ERR_*");
        if optional && last == reply_type::ERR_UNSUP && !unsup_expected {
            return Err(Stop::Unsupported(format!(
                "the server does not implement NBD_OPT_{} (ERR_UNSUP)",
                option::name(opt)
            )));
        }
        // Generic rules on every meta-context answer.
        if opt == option::SET_META_CONTEXT {
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() != ids.len() {
                self.findings.push(Finding::broken(
                    "SMC-REPLY-1",
                    "one META_CONTEXT reply per selected context, each with its own id",
                    format!("ids {ids:?} for {contexts:?}"),
                ));
            }
        }
        if opt == option::LIST_META_CONTEXT && ids.iter().any(|i| *i != 0) {
            self.findings.push(Finding::broken(
                "LMC-ID-1",
                "context id 0 in LIST replies",
                format!("ids {ids:?}"),
            ));
        }
        self.judge_option_reply(last, contexts.len(), &contexts, &o.expect);
        // Keep the handshake's idea of the state in step with what the server accepted.
        let Conn::Handshake(hs) = &mut self.conn else {
            unreachable!()
        };
        match opt {
            option::STRUCTURED_REPLY if last == reply_type::ACK => hs.structured = true,
            option::EXTENDED_HEADERS if last == reply_type::ACK => {
                hs.extended = true;
                hs.structured = true;
            }
            option::SET_META_CONTEXT => {
                hs.contexts = if last == reply_type::ACK {
                    ids.into_iter().zip(contexts).collect()
                } else {
                    Vec::new()
                };
                hs.contexts_export = Some(export);
            }
            option::ABORT => self.drop_conn(),
            _ => {}
        }
        Ok(())
    }

    fn judge_option_reply(
        &mut self,
        last: u32,
        count: usize,
        names: &[String],
        expect: &case::ExpectOption,
    ) {
        let clause = leak(&expect.clause);
        let accepted = expect.reply.iter().any(|want| match want.as_str() {
            "ERR_*" => last & reply_type::ERROR_BIT != 0,
            name => reply_type::name(last) == name,
        });
        if !accepted {
            self.findings.push(Finding::broken(
                clause,
                format!("final reply {}", expect.reply.join(" or ")),
                reply_type::name(last).to_owned(),
            ));
        }
        if let Some(n) = expect.contexts {
            if n != count {
                self.findings.push(Finding::broken(
                    clause,
                    format!("{n} META_CONTEXT replies"),
                    format!("{count}: {names:?}"),
                ));
            }
        }
        for wanted in &expect.contains {
            if !names.contains(wanted) {
                self.findings.push(Finding::broken(
                    clause,
                    format!("{wanted} among the replies"),
                    format!("{names:?}"),
                ));
            }
        }
    }

    /// The server went away (or broke framing) while we haggled.
    fn lost_in_haggling(
        &mut self,
        e: ClientError,
        allow_close: bool,
        clause: Option<&str>,
    ) -> Result<(), Stop> {
        self.drop_conn();
        match e {
            ClientError::Closed { .. } | ClientError::Io(_) => {
                self.note("← connection closed");
                if !allow_close {
                    self.lost(ConnectionLoss::Dropped);
                    self.findings.push(Finding::broken(
                        "HS-NOHARD-1",
                        "an option reply, the connection open",
                        "the server closed the connection",
                    ));
                }
                Ok(())
            }
            ClientError::Protocol(v) => {
                self.findings.push(from_violation(&v));
                Ok(())
            }
            ClientError::Timeout { .. } => {
                let clause = clause.map_or("HS-OPTREP-1", leak);
                self.findings.push(Finding::broken(
                    clause,
                    "an option reply",
                    format!("nothing within {:?}", self.settings.reply_timeout),
                ));
                Ok(())
            }
            other => Err(Stop::Error(other.to_string())),
        }
    }

    // ---- transmission ---------------------------------------------------------------------

    /// Sends one request and grades the reply against `expect`.
    async fn request(
        &mut self,
        mut request: Request,
        expect: Expect,
        clause: Option<&str>,
        then_alive: bool,
    ) -> Result<(), Stop> {
        let session = self.session()?;
        request.cookie = next_cookie(session);
        self.note(transcript::request(&request, self.case.dialect));
        let session = self.session()?;
        let result = match session.send_request(request, &[]).await {
            Ok(()) => session.wait_for(request.cookie).await,
            Err(e) => Err(e),
        };
        let clause = leak(clause.unwrap_or(self.case.main_clause()));
        let Some(reply) = self.judge(result, expect, clause)? else {
            return Ok(());
        };
        self.record_stream(&reply);
        if then_alive {
            self.still_alive().await?;
        }
        Ok(())
    }

    /// Grades a request's outcome; returns the reply if there was one and the link is usable.
    fn judge(
        &mut self,
        result: Result<Reply, ClientError>,
        expect: Expect,
        clause: &'static str,
    ) -> Result<Option<Reply>, Stop> {
        let allows_close = matches!(expect, Expect::EinvalOrClose | Expect::ErrorOrClose);
        let reply = match result {
            Ok(r) => r,
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                self.note("← connection closed");
                self.drop_conn();
                if !allows_close {
                    self.lost(ConnectionLoss::Dropped);
                }
                if allows_close {
                    self.closed_as_allowed = true;
                    self.findings.push(Finding::info("TX-VIOL-1", "an error reply", "the server closed the connection (allowed: the request broke a client MUST)"));
                } else {
                    self.findings.push(Finding::broken(
                        "TX-NODROP-1",
                        "a reply, the connection open",
                        "the server closed the connection",
                    ));
                }
                return Ok(None);
            }
            Err(ClientError::Timeout { what, after }) => {
                self.note(format!(
                    "← (no complete reply: waited {after:?} for {what})"
                ));
                self.drop_conn();
                self.findings.push(Finding::broken(
                    "BS-COMPLETE-1",
                    "a complete reply",
                    timed_out(after),
                ));
                // The failure is found; waiting out more deadlines on the same server would
                // only make a run against a hung server long (it still grades fail).
                return Err(Stop::Error(format!(
                    "stopped after a request that got no complete reply within {after:.0?}"
                )));
            }
            Err(ClientError::Protocol(v)) => {
                self.note(format!("← unreadable: {v}"));
                self.drop_conn();
                self.findings.push(from_violation(&v));
                return Ok(None);
            }
            Err(other) => return Err(Stop::Error(other.to_string())),
        };
        let neg = self.session()?.negotiated.clone();
        for line in transcript::reply(&reply, &neg) {
            self.note(line);
        }
        let structural = if neg.dialect == Dialect::Draft
            && reply.request.command == draft::CMD_GET_LBA_STATUS
        {
            checks::draft::check(&reply)
        } else if reply.request.command == command::BLOCK_STATUS {
            checks::block_status::check(&reply, &neg)
        } else {
            reply.violations.iter().map(from_violation).collect()
        };
        self.findings.extend(structural);
        // A draft server may close instead of sending the error trailer (DRAFT-ERR-1): the
        // connection is gone, and nothing more can be asked on it.
        if matches!(
            reply.body,
            ReplyBody::Draft {
                trailer: DraftTrailer::Closed,
                ..
            }
        ) {
            self.drop_conn();
        }
        let error = reply.error();
        let observed = || match error {
            Some(e) => format!("{} ({e}){}", errno::name(e), error_message(&reply)),
            None => "success".to_owned(),
        };
        match expect {
            Expect::Ok if error.is_some() => {
                self.findings
                    .push(Finding::broken(clause, "success", observed()))
            }
            Expect::Einval | Expect::EinvalOrClose if error != Some(errno::EINVAL) => self
                .findings
                .push(Finding::broken(clause, "EINVAL", observed())),
            Expect::Error | Expect::ErrorOrClose if error.is_none() => self
                .findings
                .push(Finding::broken(clause, "an error", observed())),
            Expect::Fallback => self.judge_fallback(&reply, clause),
            _ => {}
        }
        Ok(Some(reply))
    }

    fn judge_fallback(&mut self, reply: &Reply, clause: &'static str) {
        let req = &reply.request;
        let ok = match &reply.body {
            ReplyBody::Draft {
                error: 0,
                descriptors,
                ..
            } => {
                descriptors.len() == 1
                    && descriptors[0].offset == req.offset
                    && descriptors[0].length as u64 == req.length
                    && descriptors[0].status == 0
            }
            _ => false,
        };
        if !ok {
            let observed = match &reply.body {
                ReplyBody::Draft {
                    error: 0,
                    descriptors,
                    ..
                } => format!(
                    "{:?}",
                    descriptors
                        .iter()
                        .map(|d| (d.offset, d.length, d.status))
                        .collect::<Vec<_>>()
                ),
                ReplyBody::Draft { error, .. } => format!("error {}", errno::name(*error)),
                _ => "another reply form".into(),
            };
            self.findings.push(Finding::broken(
                clause,
                format!("one descriptor ({}, {}, status 0)", req.offset, req.length),
                observed,
            ));
        }
    }

    /// After a request the server should have survived: a plain one must still succeed.
    async fn still_alive(&mut self) -> Result<(), Stop> {
        if !matches!(self.conn, Conn::Session(_)) {
            return Ok(());
        }
        let neg = self.session()?.negotiated.clone();
        let Some(length) = probe_length(&neg) else {
            self.note("(not probed: the export has no whole block a request may ask for)");
            return Ok(());
        };
        let (cmd, flags) = match neg.dialect {
            Dialect::Draft => (draft::CMD_GET_LBA_STATUS, draft::SELECT_ALLOCATED),
            Dialect::Standard if neg.contexts.is_empty() => (command::READ, 0),
            Dialect::Standard => (command::BLOCK_STATUS, 0),
        };
        let mut request = Request::new(neg.header_form(), cmd, flags, 0, 0, length);
        let session = self.session()?;
        request.cookie = next_cookie(session);
        self.note(format!(
            "{} (still alive?)",
            transcript::request(&request, self.case.dialect)
        ));
        let session = self.session()?;
        let result = match session.send_request(request, &[]).await {
            Ok(()) => session.wait_for(request.cookie).await,
            Err(e) => Err(e),
        };
        self.judge(result, Expect::Ok, "TX-NODROP-1")?;
        Ok(())
    }

    fn record_stream(&mut self, reply: &Reply) {
        let neg = match &self.conn {
            Conn::Session(s) => s.negotiated.clone(),
            _ => return,
        };
        match &reply.body {
            ReplyBody::Draft { descriptors, .. } => {
                let name = DraftQuery::from_selector(reply.request.flags).context_name();
                for d in descriptors {
                    self.streams.push(stream_line(
                        &name,
                        d.offset,
                        d.length as u64,
                        d.status as u64,
                    ));
                }
            }
            _ => {
                for (id, descriptors) in reply.status_chunks() {
                    let name = neg.context_name(id).unwrap_or("?").to_owned();
                    let mut at = reply.request.offset;
                    for d in descriptors {
                        self.streams.push(stream_line(&name, at, d.length, d.flags));
                        at = at.saturating_add(d.length);
                    }
                }
            }
        }
    }

    async fn pipeline(&mut self, p: &case::Pipeline) -> Result<(), Stop> {
        let (_, length) = self.evaluate("0", &p.length)?;
        let flags = case::command_flags(&p.flags).map_err(Stop::Error)?;
        let neg = self.session()?.negotiated.clone();
        let minimum = neg.minimum_block();
        // Only whole blocks can be asked for: the tail of an export that is not a multiple of
        // the minimum block size is out of a client's reach.
        let usable = neg.size / minimum * minimum;
        if usable == 0 {
            return Err(Stop::Unsupported(format!(
                "needs an export of at least one {minimum}-byte block; this one has {}",
                neg.size
            )));
        }
        let mut step = length.max(1);
        if !Request::length_fits(neg.header_form(), step) {
            step = fit::compact_max(minimum);
        }
        if step % minimum != 0 {
            return Err(Stop::Unsupported(format!(
                "requests of {step} bytes are not a multiple of the advertised minimum block size {minimum} (GO-BLKSZ-3)"
            )));
        }
        let form = neg.header_form();
        let mut cookies = Vec::new();
        for i in 0..p.count as u64 {
            let offset = i.saturating_mul(step) % usable;
            let mut request = Request::new(
                form,
                command::BLOCK_STATUS,
                flags,
                0,
                offset,
                step.min(usable - offset),
            );
            let session = self.session()?;
            request.cookie = next_cookie(session);
            if let Err(e) = session.send_request(request, &[]).await {
                return self.judge(Err(e), Expect::Ok, "BS-REQ-PIPE-1").map(|_| ());
            }
            cookies.push(request.cookie);
        }
        self.note(format!(
            "→ {} BLOCK_STATUS requests in flight, {step} bytes each",
            p.count
        ));
        for cookie in cookies {
            let Conn::Session(session) = &mut self.conn else {
                break;
            };
            let result = session.wait_for(cookie).await;
            if matches!(result, Err(ClientError::Timeout { .. })) {
                // Not merely slow: the server got on with the requests behind this one.
                let later = session.replies_after(cookie);
                if later > 0 {
                    self.note(format!(
                        "(the server answered {later} requests sent after {}: it abandoned that \
                         one)",
                        transcript::cookie(cookie)
                    ));
                }
            }
            if let Some(reply) = self.judge(result, Expect::Ok, "BS-REQ-PIPE-1")? {
                self.record_stream(&reply);
            }
        }
        Ok(())
    }

    async fn disc(&mut self) -> Result<(), Stop> {
        let neg = self.session()?.negotiated.clone();
        let Some(length) = probe_length(&neg) else {
            return Err(Stop::Unsupported(
                "needs an export with at least one whole block to ask about".into(),
            ));
        };
        let mut request = Request::new(neg.header_form(), command::BLOCK_STATUS, 0, 0, 0, length);
        let session = self.session()?;
        request.cookie = next_cookie(session);
        let disc = Request::new(
            neg.header_form(),
            command::DISC,
            0,
            next_cookie(session),
            0,
            0,
        );
        self.note(transcript::request(&request, self.case.dialect));
        self.note(transcript::request(&disc, self.case.dialect));
        let session = self.session()?;
        let sent = match session.send_request(request, &[]).await {
            Ok(()) => session.send_request(disc, &[]).await,
            Err(e) => Err(e),
        };
        let result = match sent {
            Ok(()) => session.wait_for(request.cookie).await,
            Err(e) => Err(e),
        };
        let reply = match result {
            Ok(reply) => reply,
            // Closing with the request unanswered is what DISC must not do (TX-DISC-1), not an
            // ordinary dropped connection.
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                self.note("← connection closed");
                self.drop_conn();
                self.findings.push(Finding::broken(
                    "TX-DISC-1",
                    "the outstanding request answered, then the close",
                    "the server closed without answering it",
                ));
                return Ok(());
            }
            Err(e) => {
                self.judge(Err(e), Expect::Ok, "TX-DISC-1")?;
                return Ok(());
            }
        };
        // Racing the DISC, a server may answer the outstanding request or cut it short with
        // ESHUTDOWN (a server shutting down may speed up with error replies, "Terminating the
        // transmission phase"): either handles it. nbdkit does one or the other from run to run,
        // so the transcript says only that the reply came, and its content is not checked here
        // (other cases check block-status replies).
        self.findings
            .extend(reply.violations.iter().map(from_violation));
        let label = transcript::cookie(request.cookie);
        match reply.error() {
            None | Some(errno::ESHUTDOWN) => self.note(format!(
                "← a reply to {label} (data or ESHUTDOWN: either handles it)"
            )),
            Some(e) => {
                let observed = format!("{} ({e}){}", errno::name(e), error_message(&reply));
                self.note(format!("← {observed} to {label}"));
                self.findings.push(Finding::broken(
                    "TX-DISC-1",
                    "the outstanding request answered (or cut short with ESHUTDOWN)",
                    observed,
                ));
            }
        }
        let closed = self.session()?.closed_by_peer().await;
        self.note(if closed {
            "← connection closed"
        } else {
            "← (still open)"
        });
        if !closed {
            self.findings.push(Finding::broken(
                "TX-DISC-1",
                "the server closes after NBD_CMD_DISC",
                format!("still open after {:?}", self.settings.reply_timeout),
            ));
        }
        self.drop_conn();
        Ok(())
    }

    // ---- whole-export walks and oracles --------------------------------------------------------

    async fn map_step(&mut self, m: &case::MapStep) -> Result<(), Stop> {
        let neg = self.session()?.negotiated.clone();
        let max_request = match &m.max_request {
            Some(e) => self.evaluate("0", e)?.1,
            None if neg.extended => u64::MAX,
            None => fit::compact_max(neg.minimum_block()),
        };
        if max_request < neg.minimum_block() {
            return Err(Stop::Unsupported(format!(
                "requests of at most {max_request} bytes cannot keep the advertised minimum \
                 block size {}",
                neg.minimum_block()
            )));
        }
        let tracks = match neg.dialect {
            Dialect::Standard => {
                let names: Vec<String> = neg.contexts.iter().map(|(_, n)| n.clone()).collect();
                self.walk(&names, 0, m.req_one, max_request, true).await?
            }
            Dialect::Draft => {
                let selectors = if m.selectors.is_empty() {
                    vec![draft::SELECT_ALLOCATED]
                } else {
                    m.selectors.clone()
                };
                let mut all = Vec::new();
                for s in selectors {
                    let name = DraftQuery::from_selector(s).context_name();
                    all.extend(self.walk(&[name], s, false, max_request, true).await?);
                }
                all
            }
        };
        for t in &tracks {
            for e in &t.entries {
                self.streams
                    .push(stream_line(&e.context, e.offset, e.length, e.flags));
            }
        }
        self.read_back(&tracks).await?;
        self.truth_oracles(&tracks);
        if neg.dialect == Dialect::Standard {
            for t in tracks {
                if t.covered >= neg.size && !self.mapped.iter().any(|m| m.context == t.context) {
                    self.mapped.push(t);
                }
            }
        }
        Ok(())
    }

    /// Walks `[0, size)` sequentially; every reply is checked. Stops early (with findings
    /// recorded) when the server errors or the link breaks.
    async fn walk(
        &mut self,
        names: &[String],
        selector: u16,
        req_one: bool,
        max_request: u64,
        log: bool,
    ) -> Result<Vec<Track>, Stop> {
        let neg = self.session()?.negotiated.clone();
        let mut tracks: Vec<Track> = names.iter().map(|n| Track::new(n, 0)).collect();
        if tracks.is_empty() {
            return Ok(tracks);
        }
        let (cmd, flags) = match neg.dialect {
            Dialect::Draft => (draft::CMD_GET_LBA_STATUS, selector),
            Dialect::Standard => (
                command::BLOCK_STATUS,
                if req_one {
                    crate::wire::consts::command_flag::REQ_ONE
                } else {
                    0
                },
            ),
        };
        let minimum = neg.minimum_block();
        let mut requests = 0u32;
        loop {
            let from = tracks.iter().map(|t| t.covered).min().unwrap_or(neg.size);
            if from >= neg.size {
                return Ok(tracks);
            }
            requests += 1;
            if requests > 200_000 {
                return Err(Stop::Error(
                    "more than 200000 requests to map the export".into(),
                ));
            }
            // Whole blocks only: a server whose descriptors ended off the grid (a SHOULD it
            // broke, warned elsewhere) does not make the client break its MUST; the overlap
            // is clipped by the tracks. The unaligned tail of an export is out of reach.
            let at = from / minimum * minimum;
            let length = (neg.size - at).min(max_request) / minimum * minimum;
            if length == 0 {
                return Ok(tracks);
            }
            let mut request = Request::new(neg.header_form(), cmd, flags, 0, at, length);
            let Conn::Session(session) = &mut self.conn else {
                return Ok(tracks);
            };
            request.cookie = next_cookie(session);
            let result = match session.send_request(request, &[]).await {
                Ok(()) => session.wait_for(request.cookie).await,
                Err(e) => Err(e),
            };
            if log {
                self.note(transcript::request(&request, self.case.dialect));
            }
            let before = self.transcript.len();
            let clause = if neg.dialect == Dialect::Draft {
                "DRAFT-REP-1"
            } else {
                "BS-REP-PERCTX-1"
            };
            let Some(reply) = self.judge(result, Expect::Ok, clause)? else {
                return Ok(tracks);
            };
            if !log {
                self.transcript.truncate(before);
            }
            if reply.error().is_some() {
                return Ok(tracks);
            }
            match &reply.body {
                ReplyBody::Draft { descriptors, .. } => {
                    for d in descriptors {
                        tracks[0].absorb(neg.size, d.offset, d.length as u64, d.status as u64);
                    }
                }
                _ => {
                    for t in &mut tracks {
                        let id = neg
                            .contexts
                            .iter()
                            .find(|(_, n)| *n == t.context)
                            .map(|(i, _)| *i);
                        if let Some((_, descriptors)) =
                            reply.status_chunks().find(|(cid, _)| Some(*cid) == id)
                        {
                            let mut pos = at;
                            for d in descriptors {
                                t.absorb(neg.size, pos, d.length, d.flags);
                                pos = pos.saturating_add(d.length);
                            }
                        }
                    }
                }
            }
            if tracks.iter().map(|t| t.covered).min().unwrap_or(neg.size) <= from {
                let clause = if neg.dialect == Dialect::Draft {
                    "DRAFT-DESC-COVER-1"
                } else {
                    "BS-REP-ATLEAST1-1"
                };
                self.findings.push(Finding::broken(
                    clause,
                    format!("progress past offset {at}"),
                    "the reply described nothing new",
                ));
                return Ok(tracks);
            }
        }
    }

    /// Every byte of every range reported as reading zeros is read back and must be zero, up
    /// to the case's read-back budget ([`Settings::read_back_budget`]). Smaller ranges go
    /// first, so that a budget spent on one huge hole does not leave the small ones unread;
    /// what the budget leaves unread is said in the result (`not_checked`), never passed over
    /// in silence.
    async fn read_back(&mut self, tracks: &[Track]) -> Result<(), Stop> {
        let Conn::Session(session) = &self.conn else {
            return Ok(());
        };
        let neg = session.negotiated.clone();
        let align = neg.minimum_block();
        let piece = neg
            .block_sizes
            .map_or(READ_PIECE, |b| u64::from(b.maximum).min(READ_PIECE))
            .min(u64::from(limit::MAX_IO_PAYLOAD))
            / align
            * align;
        let piece = piece.max(align);
        let mut called_zero: Vec<(&crate::map::MapEntry, &'static str)> = Vec::new();
        for t in tracks {
            let (zero, clause) = match t.context.as_str() {
                context::BASE_ALLOCATION => (context::STATE_ZERO, "ALLOC-ZERO-1"),
                draft::CONTEXT_ALLOCATED => (u64::MAX, "DRAFT-ALLOC-1"),
                _ => continue,
            };
            for e in &t.entries {
                let says_zero = if zero == u64::MAX {
                    e.flags == draft::STATE_ZEROED as u64
                } else {
                    e.flags & zero != 0
                };
                if says_zero {
                    called_zero.push((e, clause));
                }
            }
        }
        called_zero.sort_by_key(|(e, _)| e.length);
        if piece > u64::from(limit::MAX_IO_PAYLOAD) {
            self.not_checked.push(format!(
                "nothing reported as zero was read back: the advertised minimum block size \
                 {align} is larger than the {} bytes a READ may ask for here",
                limit::MAX_IO_PAYLOAD
            ));
            return Ok(());
        }
        let (mut checked, mut unread, mut refused) = (0u64, 0u64, 0u64);
        // Everything from `offset` in range `i` on: what a stop leaves unread.
        let rest = |i: usize, offset: u64| {
            let (e, _) = called_zero[i];
            e.offset + e.length - offset
                + called_zero[i + 1..]
                    .iter()
                    .map(|(e, _)| e.length)
                    .sum::<u64>()
        };
        'ranges: for (i, (e, clause)) in called_zero.iter().enumerate() {
            for (offset, length) in Pieces::new(e.offset, e.length, align, piece) {
                if self.read_budget < length {
                    unread = rest(i, offset);
                    break 'ranges;
                }
                self.read_budget -= length;
                let Conn::Session(session) = &mut self.conn else {
                    return Ok(());
                };
                // `piece` is at most MAX_IO_PAYLOAD (checked above), so the length fits.
                let result = session.read(offset, length as u32).await;
                let reply = match result {
                    Ok(r) => r,
                    // A READ is a request like any other: a dropped or hung one is a finding.
                    Err(err) => {
                        self.note(format!("→ READ offset={offset} length={length}"));
                        self.judge(Err(err), Expect::Ok, "TX-NODROP-1")?;
                        self.drop_conn();
                        self.not_checked.push(format!(
                            "{} bytes reported as zero were not read back: the connection was \
                             lost during the read-back",
                            rest(i, offset)
                        ));
                        break 'ranges;
                    }
                };
                self.findings
                    .extend(reply.violations.iter().map(from_violation));
                match reply.read_data() {
                    Some(data) => {
                        checked += length;
                        if let Some(at) = data.iter().position(|b| *b != 0) {
                            self.findings.push(Finding::broken(
                                clause,
                                format!("{}+{} ({}) reads as zeros", e.offset, e.length, e.state),
                                format!("byte {:#04x} at offset {}", data[at], offset + at as u64),
                            ));
                            continue 'ranges;
                        }
                    }
                    None => {
                        refused += length;
                        self.note(format!(
                            "→ READ offset={offset} length={length}: {}",
                            reply
                                .error()
                                .map_or("incomplete".into(), |e| errno::name(e).to_owned())
                        ));
                    }
                }
            }
        }
        if refused > 0 {
            self.not_checked.push(format!(
                "{refused} bytes reported as zero could not be read back: the server refused \
                 the READs"
            ));
        }
        if checked > 0 {
            self.note(format!("(read back {checked} bytes reported as zero)"));
        }
        if unread > 0 {
            let budget = self.settings.read_back_budget;
            self.not_checked.push(format!(
                "{unread} bytes reported as zero were not read back: the read-back budget of {budget} bytes per case was spent (--read-back-budget raises it)"
            ));
        }
        Ok(())
    }

    /// What only a harness-built fixture can tell: data never called zero, dirty maps cover
    /// every write, allocation depth never says absent where data is.
    fn truth_oracles(&mut self, tracks: &[Track]) {
        let Some(truth) = self.spec.truth.clone() else {
            return;
        };
        for t in tracks {
            let name = t.context.as_str();
            if name == context::BASE_ALLOCATION || name == draft::CONTEXT_ALLOCATED {
                for e in &t.entries {
                    let zero = if name == context::BASE_ALLOCATION {
                        e.flags & context::STATE_ZERO != 0
                    } else {
                        e.flags == draft::STATE_ZEROED as u64
                    };
                    if zero && truth.has_data(e.offset, e.length) {
                        self.findings.push(Finding::broken(
                            "ALLOC-TRUTH-1",
                            format!("data in {}+{} not called zero", e.offset, e.length),
                            format!("reported {}", e.state),
                        ));
                        break;
                    }
                }
            }
            let (bitmap, dirty, clause): (Option<&str>, fn(u64) -> bool, &'static str) =
                if let Some(b) = name.strip_prefix(context::QEMU_DIRTY_BITMAP_PREFIX) {
                    (
                        Some(b),
                        |f| f & context::STATE_DIRTY != 0,
                        "QEMU-DB-COVER-1",
                    )
                } else if name == draft::CONTEXT_DIRTY {
                    (
                        truth.bitmaps().first().map(|b| b.name.as_str()),
                        |f| {
                            f == draft::STATE_DIRTY as u64
                                || f == draft::STATE_DIRTY_DEALLOCATED as u64
                        },
                        "DRAFT-DIRTY-COVER-1",
                    )
                } else {
                    (None, |_| false, "")
                };
            if let Some(bt) = bitmap.and_then(|b| truth.bitmap(b)) {
                for &(w_off, w_len) in &bt.writes {
                    // A map cut short (its failure is a finding of its own) says nothing about
                    // the writes it never reached.
                    if w_off.saturating_add(w_len) > t.covered {
                        continue;
                    }
                    let covered = t
                        .entries
                        .iter()
                        .filter(|e| dirty(e.flags))
                        .any(|e| e.offset <= w_off && w_off + w_len <= e.offset + e.length)
                        || covered_by_run(&t.entries, w_off, w_len, dirty);
                    if !covered {
                        self.findings.push(Finding::broken(
                            clause,
                            format!("the write {w_off}+{w_len} reported dirty"),
                            "part of it reported clean",
                        ));
                        break;
                    }
                }
            }
            if name == context::QEMU_ALLOCATION_DEPTH {
                if let Some(e) = t
                    .entries
                    .iter()
                    .find(|e| e.flags == 0 && truth.has_data(e.offset, e.length))
                {
                    self.findings.push(Finding::broken(
                        "QEMU-AD-1",
                        format!(
                            "{}+{} holds data, so some layer allocates it",
                            e.offset, e.length
                        ),
                        "depth 0 (absent)",
                    ));
                }
            }
        }
    }

    /// BS-STABLE-1: the same export mapped again, context by context and in reverse order,
    /// gives the same (coalesced) answers.
    async fn stability(&mut self) -> Result<(), Stop> {
        let Some(base) = self.last_negotiate.clone() else {
            return Err(Stop::Error("stability needs a negotiate step first".into()));
        };
        let names: Vec<String> = self
            .session()?
            .negotiated
            .contexts
            .iter()
            .map(|(_, n)| n.clone())
            .collect();
        if names.is_empty() {
            return Err(Stop::Error("stability needs at least one context".into()));
        }
        let compact_max = fit::compact_max(self.session()?.negotiated.minimum_block());
        let first = self.walk(&names, 0, false, compact_max, false).await?;
        // Earlier `map` steps of the case (other negotiations, other context mixes, e.g. the
        // B7 recipe of peers.md) must agree with this walk too.
        let size = self.session()?.negotiated.size;
        for t in first.iter().filter(|t| t.covered >= size) {
            let Some(earlier) = self.mapped.iter().find(|m| m.context == t.context) else {
                continue;
            };
            if let Some((was, now)) = first_difference(&earlier.entries, &t.entries) {
                self.findings.push(Finding::broken(
                    "BS-STABLE-1",
                    format!("{} as an earlier map step saw it: {was}", t.context),
                    format!("now: {now}"),
                ));
                return Ok(());
            }
        }
        let mut reversed = names.clone();
        reversed.reverse();
        let mut mixes: Vec<Vec<String>> = names.iter().rev().map(|n| vec![n.clone()]).collect();
        mixes.push(reversed.clone());
        mixes.push(reversed);
        for mix in mixes {
            let n = Negotiate {
                contexts: mix.clone(),
                ..base.clone()
            };
            self.negotiate(&n).await?;
            let again = self.walk(&mix, 0, false, compact_max, false).await?;
            self.note(format!("(mapped again with contexts {mix:?})"));
            for t in &again {
                let Some(orig) = first.iter().find(|f| f.context == t.context) else {
                    continue;
                };
                if let Some((was, now)) = first_difference(&orig.entries, &t.entries) {
                    self.findings.push(Finding::broken(
                        "BS-STABLE-1",
                        format!("{} as first mapped: {was}", t.context),
                        format!("with contexts {mix:?}: {now}"),
                    ));
                    return Ok(());
                }
            }
        }
        self.last_negotiate = Some(base);
        Ok(())
    }
}

/// Whether every byte of the write lies in dirty entries (which may be several in a row).
fn covered_by_run(
    entries: &[crate::map::MapEntry],
    off: u64,
    len: u64,
    dirty: fn(u64) -> bool,
) -> bool {
    let mut at = off;
    let end = off + len;
    for e in entries {
        if e.offset <= at && at < e.offset + e.length {
            if !dirty(e.flags) {
                return false;
            }
            at = e.offset + e.length;
            if at >= end {
                return true;
            }
        }
    }
    false
}

/// Where two maps of one context first disagree once coalesced, as (first, second).
fn first_difference(
    a: &[crate::map::MapEntry],
    b: &[crate::map::MapEntry],
) -> Option<(String, String)> {
    let (a, b) = (coalesce(a), coalesce(b));
    if a == b {
        return None;
    }
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some((format!("{:?}", a.get(at)), format!("{:?}", b.get(at))))
}

/// Neighbouring entries with the same status merged: what two answers must agree on.
fn coalesce(entries: &[crate::map::MapEntry]) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some(last) if last.2 == e.flags && last.0 + last.1 == e.offset => last.1 += e.length,
            _ => out.push((e.offset, e.length, e.flags)),
        }
    }
    out
}

/// The READs that cover `[offset, offset+length)` whole, `piece` bytes at a time, aligned
/// inward to `align` (bytes outside the aligned span cannot be asked for). An iterator: the
/// range's length comes from the server, and the budget stops the walk long before a hole of
/// exabytes could be listed.
struct Pieces {
    at: u64,
    end: u64,
    piece: u64,
}

impl Pieces {
    fn new(offset: u64, length: u64, align: u64, piece: u64) -> Pieces {
        let align = align.max(1);
        Pieces {
            at: offset.div_ceil(align).saturating_mul(align),
            end: offset.saturating_add(length) / align * align,
            piece: (piece / align * align).max(align),
        }
    }
}

impl Iterator for Pieces {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.at >= self.end {
            return None;
        }
        let n = self.piece.min(self.end - self.at);
        let item = (self.at, n);
        self.at += n;
        Some(item)
    }
}

/// The length of a request that must succeed on any export it fits: 4 KiB from offset 0 (or
/// one minimum block, or the whole export if smaller), within the maximum payload. None on an
/// export with no whole block.
fn probe_length(neg: &Negotiated) -> Option<u64> {
    let minimum = neg.minimum_block();
    let usable = neg.size / minimum * minimum;
    let cap = neg
        .block_sizes
        .map_or(u64::MAX, |b| u64::from(b.maximum) / minimum * minimum)
        .max(minimum);
    let length = usable.min(minimum.max(4096)).min(cap);
    (length > 0).then_some(length)
}

fn stream_line(context: &str, offset: u64, length: u64, flags: u64) -> String {
    format!(
        "{context} {offset}+{length} {} ({flags:#x})",
        crate::wire::state::state_name(context, flags)
    )
}

/// What a timed-out exchange observed: how long was waited, and how to wait longer.
fn timed_out(after: Duration) -> String {
    format!(
        "no complete reply within {:.0?} (the per-request deadline; a server this slow can be \
         given longer with --timeout)",
        after
    )
}

fn error_message(reply: &Reply) -> String {
    reply
        .error_message()
        .map_or_else(String::new, |m| format!(" {m:?}"))
}

/// An option error's human-readable text, quoted, if it carries one.
fn error_text(data: &[u8]) -> String {
    if data.is_empty() {
        String::new()
    } else {
        format!(" {:?}", String::from_utf8_lossy(data))
    }
}

fn next_cookie(session: &mut Session) -> u64 {
    session.allocate_cookie()
}

fn describe_need(need: &Need) -> String {
    match need {
        Need::StructuredReplies => "structured replies".into(),
        Need::ExtendedHeaders => "extended headers".into(),
        Need::Context(c) => format!("metadata context {c}"),
        Need::Flag(f) => format!("transmission flag {f:#06x}"),
        Need::NoFlag(f) => format!("transmission flag {f:#06x} clear"),
        Need::MinBlockAbove1 => "an advertised minimum block size above 1".into(),
        Need::FixtureTruth => "a fixture the harness built".into(),
        Need::DraftStatus => "transmission flag bit 7 (NBD_FLAG_SEND_GET_LBA_STATUS)".into(),
    }
}

fn option_number(v: &toml::Value) -> Result<u32, String> {
    match v {
        toml::Value::Integer(n) => {
            u32::try_from(*n).map_err(|_| format!("option number {n} out of range"))
        }
        toml::Value::String(s) => Ok(match s.trim_start_matches("NBD_OPT_") {
            "EXPORT_NAME" => option::EXPORT_NAME,
            "ABORT" => option::ABORT,
            "LIST" => option::LIST,
            "STARTTLS" => option::STARTTLS,
            "INFO" => option::INFO,
            "GO" => option::GO,
            "STRUCTURED_REPLY" => option::STRUCTURED_REPLY,
            "LIST_META_CONTEXT" => option::LIST_META_CONTEXT,
            "SET_META_CONTEXT" => option::SET_META_CONTEXT,
            "EXTENDED_HEADERS" => option::EXTENDED_HEADERS,
            other => return Err(format!("unknown option {other:?}")),
        }),
        other => Err(format!("option must be a name or number, not {other}")),
    }
}

/// A raw option payload: hex, where `{export-len}` stands for the 4-byte length of the export
/// name the case addresses and `{export}` for its bytes, so that a hand-made payload names the
/// export of whatever server runs the case (`conform` on the servers the harness launches).
fn payload_hex(s: &str, export: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let next = [("{export-len}", true), ("{export}", false)]
            .iter()
            .filter_map(|(token, is_len)| rest.find(token).map(|at| (at, *token, *is_len)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, token, is_len)) = next else {
            out.extend(decode_hex(rest)?);
            return Ok(out);
        };
        out.extend(decode_hex(&rest[..at])?);
        if is_len {
            let len = u32::try_from(export.len()).map_err(|_| "export name too long")?;
            out.extend(len.to_be_bytes());
        } else {
            out.extend(export.as_bytes());
        }
        rest = &rest[at + token.len()..];
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

/// Clause ids in case files are validated against the registry at load time; this maps such a
/// string to the registry's `'static` copy.
fn leak(id: &str) -> &'static str {
    crate::clauses::clause(id).map_or("CASE-CLAUSE-UNKNOWN", |c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hex_spells_the_export_of_the_server_under_test() {
        assert_eq!(
            payload_hex("{export-len} {export} 0002 7ffe", "disk").unwrap(),
            [0, 0, 0, 4, b'd', b'i', b's', b'k', 0, 2, 0x7f, 0xfe]
        );
        assert_eq!(
            payload_hex("000003e8{export}", "").unwrap(),
            [0, 0, 3, 0xe8]
        );
        assert_eq!(payload_hex("", "x").unwrap(), Vec::<u8>::new());
        assert!(payload_hex("{export} 0", "x").is_err());
        assert!(payload_hex("{exports}", "x").is_err());
    }

    #[test]
    fn pieces_cover_every_aligned_byte() {
        let pieces = |o, l, a, p| Pieces::new(o, l, a, p).collect::<Vec<_>>();
        assert_eq!(
            pieces(0, 4096, 512, 1024),
            vec![(0, 1024), (1024, 1024), (2048, 1024), (3072, 1024)]
        );
        assert_eq!(pieces(100, 1000, 512, 1024), vec![(512, 512)]);
        assert_eq!(pieces(100, 300, 512, 1024), vec![]);
        // A 4 GiB range is read whole, not sampled at its start, middle and end.
        let big = pieces(0, 1 << 32, 1, 1 << 20);
        assert_eq!(big.len(), 4096);
        assert_eq!(big.iter().map(|(_, n)| n).sum::<u64>(), 1 << 32);
        assert!(big.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        // An exabyte hole costs nothing until it is walked.
        let mut huge = Pieces::new(0, 1 << 60, 1, 1 << 20);
        assert_eq!(huge.next(), Some((0, 1 << 20)));
    }

    #[test]
    fn fail_is_never_hidden() {
        let fail = Finding::broken("BS-REP-PERCTX-1", "x", "y");
        assert_eq!(
            grade(
                std::slice::from_ref(&fail),
                Some(Stop::Error("boom".into()))
            )
            .0,
            Grade::Fail
        );
        assert_eq!(grade(&[], Some(Stop::Error("boom".into()))).0, Grade::Error);
        assert_eq!(
            grade(&[], Some(Stop::Unsupported("no".into()))).0,
            Grade::Unsupported
        );
        assert_eq!(grade(&[], None).0, Grade::Pass);
    }
}
