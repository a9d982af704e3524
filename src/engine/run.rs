//! Runs one case against one target and grades it.
//!
//! The steps ([`super::steps`]) drive a client connection and record what they see; every
//! reply goes through the clause checks in [`crate::checks`]. A harness problem (cannot
//! connect) grades `error`; a missing capability grades `unsupported`; neither ever hides a
//! failure found before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::case::Case;
use super::outcome::{Capabilities, CaseResult, Finding, Grade};
use super::steps::Run;
use crate::client::Target;
use crate::fixtures::Truth;
use crate::Dialect;

/// What a case runs against.
#[derive(Clone)]
pub struct TargetSpec {
    pub target: Target,
    pub dialect: Dialect,
    /// The fixture's truth, when the harness built the image this server serves.
    pub truth: Option<Arc<Truth>>,
    /// The server's own dirty bitmaps, standing in (in order) for the fixture's (`bm0`, `bm1`)
    /// on a server we did not set up; empty: the fixture's names are the server's. With a
    /// truth, that truth's bitmaps are not these: they are left out of it (a case that needs
    /// them grades unsupported).
    pub bitmaps: Vec<String>,
}

/// A deadline in seconds: positive, at most a day (`1e20` is a typo, not a wish).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s} s: a deadline must be above 0 and at most 86400 s"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
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
    /// Cases may write to the export (cases that need `writable`): the user said so for a
    /// `--target` (`--writable`); a server the harness launches for such a case serves a
    /// private copy of its fixture, so the harness says so itself. Otherwise they grade
    /// `unsupported`.
    pub writable: bool,
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
            writable: false,
        }
    }
}

/// Why a case stopped early.
pub(super) enum Stop {
    Unsupported(String),
    Error(String),
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
            .iter()
            .cloned()
            .zip(spec.bitmaps.iter().cloned())
            .collect();
        // A fixture bitmap no server bitmap stands in for: the server's cannot be asked for,
        // and asking for the fixture's name would only say the server lacks it.
        if let Some(role) = fixture_bitmaps
            .iter()
            .skip(spec.bitmaps.len())
            .find(|name| case.needs().iter().any(|n| needs_bitmap(n, name)))
        {
            let why = format!(
                "needs a dirty bitmap more than the {} given (it stands for the fixture's \
                 {role}): give one more --bitmap NAME",
                spec.bitmaps.len()
            );
            return (
                could_not_start(case, Grade::Unsupported, why),
                Capabilities::default(),
            );
        }
        renamed = case.with_bitmaps_renamed(&renames);
        &renamed
    };
    let own_bitmaps;
    let spec = match &spec.truth {
        Some(truth) if !spec.bitmaps.is_empty() => {
            own_bitmaps = TargetSpec {
                truth: Some(Arc::new(truth.without_bitmaps())),
                ..spec.clone()
            };
            &own_bitmaps
        }
        _ => spec,
    };
    let mut run = Run::new(case, spec, settings);
    let stop = match tokio::time::timeout(settings.case_timeout, run.all_steps()).await {
        Ok(r) => r.err(),
        Err(_) => Some(Stop::Error(format!(
            "the case did not finish within {:?}",
            settings.case_timeout
        ))),
    };
    run.close().await;
    let mut record = run.into_record();
    record.summarise_dropped();
    let (grade, note) = grade(&record.findings, stop);
    let result = CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        grade,
        clauses: case.clause_ids(),
        findings: record.findings,
        note,
        not_checked: record.not_checked,
        lost: record.lost.map(|(how, _)| how),
        lost_at: record.lost.map(|(_, at)| at),
        last_connected: record.last_connected,
        transcript: record.transcript,
        streams: record.streams,
        server_log: Vec::new(),
        duration: started.elapsed(),
    };
    (result, record.caps)
}

/// Whether `need` is the fixture bitmap `name`'s context.
fn needs_bitmap(need: &super::case::Need, name: &str) -> bool {
    matches!(need, super::case::Need::Context(c)
        if c.strip_prefix(crate::wire::consts::context::QEMU_DIRTY_BITMAP_PREFIX) == Some(name))
}

/// A result for a case that could not start (or cannot run here), saying why.
pub(crate) fn could_not_start(case: &Case, grade: Grade, why: String) -> CaseResult {
    CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        grade,
        clauses: case.clause_ids(),
        findings: Vec::new(),
        note: Some(why),
        not_checked: Vec::new(),
        lost: None,
        lost_at: None,
        last_connected: None,
        transcript: Vec::new(),
        streams: Vec::new(),
        server_log: Vec::new(),
        duration: Duration::ZERO,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clauses::id;

    #[test]
    fn fail_is_never_hidden() {
        let fail = Finding::broken(id::BS_REP_PERCTX_1, "x", "y");
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
