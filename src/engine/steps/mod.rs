//! One file per kind of step (mini-redis `cmd/` style): each adds its `Run` method, and
//! [`Run::step`] dispatches on the case's [`Step`]. A step sends, waits and records; what a
//! reply means is decided by the pure functions of [`crate::checks`].
//!
//! | step | file |
//! |---|---|
//! | `negotiate`, `reconnect` | `negotiate.rs` |
//! | `connect` | `connect.rs` |
//! | `option` | `option.rs` |
//! | `go` | `go.rs` |
//! | `export-name` | `export_name.rs` |
//! | `block-status`, `draft-status`, `raw-request` | `request.rs` (a payload: `status_payload.rs`) |
//! | `pipeline` | `pipeline.rs` |
//! | `disc` | `disc.rs` |
//! | `map` | `map.rs` (with `read_back.rs`) |
//! | `stability` | `stability.rs` |
//! | `write`, `write-zeroes`, `trim`, `cache` | `write.rs` |
//! | `verify` | `verify.rs` (with the ledger of the case's writes) |

mod connect;
mod disc;
mod export_name;
mod go;
mod map;
mod negotiate;
mod option;
mod pipeline;
mod read_back;
mod request;
mod stability;
mod status_payload;
mod verify;
mod write;

use super::case::{Case, Expect, Expr, Need, Negotiate, Outcome, Step};
use super::fit;
use super::link::Link;
use super::outcome::ConnectionLoss;
use super::record::Record;
use super::run::{Settings, Stop, TargetSpec};
use crate::checks;
use crate::checks::writes::Ledger;
use crate::clauses::ClauseId;
use crate::client::{ClientError, Handshake, Negotiated, Session};
use crate::map::Track;

/// Why a case judged by the fixture's own dirty bitmaps cannot run on a server that exports
/// bitmaps of its own: what those recorded (writes made while the fixture was built) is
/// not in the server's bitmaps, and what the server's recorded the suite cannot know.
const OWN_BITMAPS_NO_TRUTH: &str = "its verdict is the fixture's own dirty bitmaps (the writes \
     they recorded while the fixture was built); the server's bitmaps (--bitmap) did not \
     record those, so there is no truth to judge them by";

/// A dirty-bitmap context a case needs (qemu's, or the draft's dirtiness query).
fn is_dirty_context(need: &Need) -> bool {
    use crate::wire::consts::{context, draft};
    matches!(need, Need::Context(c)
        if c.starts_with(context::QEMU_DIRTY_BITMAP_PREFIX) || c == draft::CONTEXT_DIRTY)
}

/// One case running against one target.
pub(super) struct Run<'a> {
    case: &'a Case,
    spec: &'a TargetSpec,
    settings: Settings,
    link: Link,
    record: Record,
    /// The last `negotiate` step, for `reconnect`, `stability` and reconnecting after a close
    /// the spec allowed.
    last_negotiate: Option<Negotiate>,
    /// The last request's connection was closed by the server, as the spec allows there.
    closed_as_allowed: bool,
    /// Bytes the read-back may still read in this case.
    read_budget: u64,
    /// The first complete map of each context by a `map` step, for `stability` to compare with.
    mapped: Vec<Track>,
    /// What the case's own writes put on the export, for `verify` (and so that `map` knows
    /// when the fixture's truth no longer holds).
    ledger: Ledger,
}

impl<'a> Run<'a> {
    pub fn new(case: &'a Case, spec: &'a TargetSpec, settings: Settings) -> Run<'a> {
        Run {
            case,
            spec,
            settings,
            link: Link::Closed,
            record: Record::default(),
            last_negotiate: None,
            closed_as_allowed: false,
            read_budget: settings.read_back_budget,
            mapped: Vec::new(),
            ledger: Ledger::default(),
        }
    }

    pub fn into_record(self) -> Record {
        self.record
    }

    pub async fn all_steps(&mut self) -> Result<(), Stop> {
        // Loading validates a case; one built by hand is checked here, so that a step never
        // meets a case without a clause.
        self.case.validate().map_err(Stop::Error)?;
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
        if self.case.needs().contains(&Need::FixtureTruth)
            && !self.spec.bitmaps.is_empty()
            && self.case.needs().iter().any(is_dirty_context)
        {
            return Err(Stop::Unsupported(OWN_BITMAPS_NO_TRUTH.into()));
        }
        if self.case.needs().contains(&Need::Writable) && !self.settings.writable {
            return Err(Stop::Unsupported(write::NOT_WRITABLE.into()));
        }
        for step in &self.case.steps {
            let done = self.step(step).await;
            // Rules broken on the way count even when the step ends the case.
            self.drain_violations();
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
                | Step::Write(_)
                | Step::WriteZeroes(_)
                | Step::Trim(_)
                | Step::Cache(_)
                | Step::Verify(_)
        );
        // The server closed where the spec let it (the last request broke a client MUST):
        // the case goes on over a new connection, negotiated as before.
        if needs_session && self.closed_as_allowed && self.link.is_closed() {
            if let Some(n) = self.last_negotiate.clone() {
                self.record
                    .note("(reconnecting: the server closed, as it may after that request)");
                self.negotiate(&n).await?;
            }
        }
        self.closed_as_allowed = false;
        match step {
            Step::Negotiate(n) => self.negotiate(n).await,
            Step::Connect(c) => self.connect(c).await,
            Step::Option(o) => self.option(o).await,
            Step::Go(g) => self.go_step(g).await,
            Step::ExportName(e) => self.export_name(e).await,
            Step::BlockStatus(s) => self.block_status(s).await,
            Step::DraftStatus(s) => self.draft_status(s).await,
            Step::RawRequest(s) => self.raw_request(s).await,
            Step::Pipeline(p) => self.pipeline(p).await,
            Step::Map(m) => self.map(m).await,
            Step::Stability(_) => self.stability().await,
            Step::Reconnect(_) => self.reconnect().await,
            Step::Disc(_) => self.disc().await,
            Step::Write(w) => self.write(w).await,
            Step::WriteZeroes(z) => self.write_zeroes(z).await,
            Step::Trim(t) => self.trim(t).await,
            Step::Cache(c) => self.cache(c).await,
            Step::Verify(v) => self.verify(v).await,
        }
    }

    // ---- the connection ----------------------------------------------------------------------

    pub async fn close(&mut self) {
        self.drain_violations();
        self.link.close().await;
    }

    fn session(&mut self) -> Result<&mut Session, Stop> {
        let lost = matches!(self.link, Link::Lost);
        self.link.session().ok_or_else(|| {
            Stop::Error(if lost {
                "no connection left for the rest of the case: the negotiated one ended earlier \
                 (see the transcript)"
                    .into()
            } else {
                "the case sends a request without a negotiated connection".into()
            })
        })
    }

    /// What the session negotiated (a copy, so that the session can be used meanwhile).
    fn negotiated(&mut self) -> Result<Negotiated, Stop> {
        Ok(self.session()?.negotiated.clone())
    }

    /// Forgets a connection the server closed or broke, keeping the rules it broke on the way
    /// (e.g. a reply with a stranger cookie before the timeout, TX-COOKIE-1).
    fn drop_link(&mut self) {
        self.drain_violations();
        self.link.drop();
    }

    fn drain_violations(&mut self) {
        let v = self.link.take_violations();
        self.record.violations(&v);
    }

    /// A new connection, past the greeting (any old one closed first).
    async fn start(&mut self, client_flags: Option<u32>) -> Result<Handshake, Stop> {
        self.close().await;
        let hs =
            match Handshake::start(&self.spec.target, self.settings.timeout, client_flags).await {
                Ok(hs) => hs,
                // A greeting the server got wrong is its failure, wherever a case meets it.
                Err(ClientError::Protocol(v)) => {
                    self.record.found(checks::from_violation(&v));
                    return Err(Stop::Error(format!("the handshake cannot go on: {v}")));
                }
                Err(e) => {
                    self.record.lost(ConnectionLoss::Unreachable);
                    return Err(Stop::Error(e.to_string()));
                }
            };
        self.record.last_connected = Some(std::time::Instant::now());
        self.record
            .note(format!("← greeting flags={:#06x}", hs.greeting.flags));
        // Past the greeting the server is there: its option replies (GO opens the image)
        // get the generous deadline, like any reply.
        let mut hs = hs;
        hs.set_timeout(self.settings.reply_timeout);
        Ok(hs)
    }

    /// The clause an unmet expectation breaks: the step's, else the case's first.
    fn clause_of(&self, expect: &Expect) -> ClauseId {
        expect.clause.unwrap_or_else(|| self.case.main_clause())
    }

    /// Haggling on the current connection, or on a new one.
    async fn haggling(&mut self) -> Result<&mut Handshake, Stop> {
        if self.link.handshake().is_none() {
            let hs = self.start(None).await?;
            self.link = Link::Haggling(hs);
        }
        self.link
            .handshake()
            .ok_or_else(|| Stop::Error("no connection in option haggling".into()))
    }

    // ---- requests on this export ---------------------------------------------------------------

    /// An expression's value on this export; one that leaves 0..2^64 here (`size-512` on an
    /// empty export) means the case does not fit it.
    fn value(&mut self, expr: &Expr) -> Result<u64, Stop> {
        let neg = &self.session()?.negotiated;
        let (size, minimum) = (neg.size, neg.minimum_block());
        expr.eval(size, minimum).map_err(Stop::Unsupported)
    }

    /// The offset and length a request step sends on this export, by the rules of
    /// [`super::fit`]; a request that cannot go out as the case means it stops the case as
    /// `unsupported` (with the reason), never as a verdict on the server.
    fn plan(
        &mut self,
        cmd: u16,
        offset: &Expr,
        length: &Expr,
        outcome: Outcome,
        unaligned: bool,
    ) -> Result<(u64, u64), Stop> {
        let (off, len) = (self.value(offset)?, self.value(length)?);
        let neg = self.negotiated()?;
        let minimum = neg.minimum_block();
        let fixture_size = crate::fixtures::find(&self.case.fixture)
            .ok()
            .map(|f| f.layout.size);
        let end_on_fixture = fixture_size.and_then(|size| {
            let o = offset.eval(size, minimum).ok()?;
            o.checked_add(length.eval(size, minimum).ok()?)
        });
        let intent = match outcome {
            _ if unaligned => fit::Intent::RefusedUnaligned,
            Outcome::Ok | Outcome::Fallback | Outcome::BackendFailure => fit::Intent::Succeed,
            Outcome::Any => fit::Intent::Anything,
            Outcome::Einval | Outcome::Error => match (fixture_size, end_on_fixture) {
                (Some(size), Some(end)) if end <= size => fit::Intent::RefusedInRange,
                _ => fit::Intent::RefusedOutOfRange,
            },
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
                    self.record.note(note);
                }
                Ok((offset, length))
            }
            fit::Fit::Unsupported(why) => Err(Stop::Unsupported(why)),
        }
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
