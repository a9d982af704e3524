//! What a case run produces: findings, grades, and per-target results. Reports read these.

use std::time::Duration;

use crate::clauses::{ClauseId, Level};

/// The verdict on one case (and on one finding).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// The clause holds.
    Pass,
    /// A MAY or unspecified behaviour, recorded.
    Info,
    /// A prerequisite was not negotiated: the case could not apply.
    Unsupported,
    /// A SHOULD / SHOULD NOT is broken (fails only under `--strict`).
    Warn,
    /// A MUST / MUST NOT is broken.
    Fail,
    /// The harness could not test (could not connect, handshake impossible, bad case).
    Error,
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Pass => "pass",
            Grade::Info => "info",
            Grade::Unsupported => "unsupported",
            Grade::Warn => "warn",
            Grade::Fail => "fail",
            Grade::Error => "error",
        }
    }

    /// How a broken clause of this level is graded. Definitions (wire formats) bind by
    /// construction, so breaking one fails.
    pub fn for_broken(level: Level) -> Grade {
        match level {
            Level::Must | Level::Def => Grade::Fail,
            Level::Should | Level::Derived => Grade::Warn,
            Level::May => Grade::Info,
        }
    }

    /// Whether this grade makes a run non-conformant.
    pub fn is_nonconformant(self, strict: bool) -> bool {
        self == Grade::Fail || (strict && self == Grade::Warn)
    }
}

/// One observation about one clause.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Finding {
    pub clause: ClauseId,
    pub grade: Grade,
    pub expected: String,
    pub observed: String,
}

impl Finding {
    /// A broken clause, graded by its level in the registry.
    pub fn broken(
        clause: ClauseId,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> Finding {
        let grade = clause
            .clause()
            .map_or(Grade::Fail, |c| Grade::for_broken(c.level));
        Finding {
            clause,
            grade,
            expected: expected.into(),
            observed: observed.into(),
        }
    }

    /// A recorded behaviour that breaks nothing.
    pub fn info(
        clause: ClauseId,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> Finding {
        Finding {
            clause,
            grade: Grade::Info,
            expected: expected.into(),
            observed: observed.into(),
        }
    }

    pub fn level(&self) -> &'static str {
        self.clause.clause().map_or("?", |c| c.level.as_str())
    }
}

/// How a case lost the server, if it did: what tells a server that died (and took every
/// case's connection with it) from one that closed one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionLoss {
    /// The server closed (or reset) a connection that had a request outstanding or an option
    /// unanswered, where the spec did not allow it.
    Dropped,
    /// A new connection was refused or got no greeting.
    Unreachable,
}

/// The result of one case against one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub grade: Grade,
    /// The clauses the case is about (from the case file).
    pub clauses: Vec<ClauseId>,
    pub findings: Vec<Finding>,
    /// Why the case was unsupported or errored, when it was.
    pub note: Option<String>,
    /// What the case could not check, and why (e.g. zero ranges the read-back budget left
    /// unread): a verdict is only as wide as what was checked.
    pub not_checked: Vec<String>,
    /// The first way the case lost the server, if it did, and when (see `engine::dead_server`).
    #[serde(skip)]
    pub lost: Option<ConnectionLoss>,
    #[serde(skip)]
    pub lost_at: Option<std::time::Instant>,
    /// When the case last completed a connection's greeting: a drop that some case's later
    /// connection outlived was not the server's death.
    #[serde(skip)]
    pub last_connected: Option<std::time::Instant>,
    /// Numbered, decoded exchange (the snapshot's and the report's transcript).
    pub transcript: Vec<String>,
    /// Normalised descriptor streams: one line per descriptor, "context offset+length state (raw)".
    pub streams: Vec<String>,
    /// The last lines a launched server printed (its stderr and stdout), when it died while
    /// this case ran: what it said as it crashed (nbdkit's `Assertion ... failed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_log: Vec<String>,
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl CaseResult {
    /// The finding that decided the grade (the first one of that grade), if any.
    pub fn deciding(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.grade == self.grade)
    }
}

/// What was negotiated with a target, for the report's capability table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Capabilities {
    pub structured_replies: bool,
    pub extended_headers: bool,
    pub contexts: Vec<String>,
}

/// Every case against one target (a server we launched, or one given with --target).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetResult {
    pub name: String,
    pub uri: String,
    /// Server and version when known ("qemu-nbd 10.0.2"), else "unknown".
    pub server: String,
    pub dialect: crate::Dialect,
    pub capabilities: Capabilities,
    pub cases: Vec<CaseResult>,
    /// What the run learned about the target itself (it serves one client at a time, …).
    pub notes: Vec<String>,
    /// How many times a server launched for it died during the run (the notes say how);
    /// [`crate::engine::dead_server::KEEPS_DYING`] or more and it could not be tested.
    pub server_deaths: usize,
    /// The run was stopped (SIGINT, SIGTERM) before all its cases had run: `cases` holds those
    /// that finished, and it has no verdict.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub info: usize,
    pub unsupported: usize,
    pub error: usize,
    /// Failing cases a `--known-failing` line acknowledged (counted here, not as fail or warn;
    /// only a report's summary has them, `TargetResult::summary` knows no list).
    pub known: usize,
}

impl TargetResult {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.cases {
            match c.grade {
                Grade::Pass => s.pass += 1,
                Grade::Fail => s.fail += 1,
                Grade::Warn => s.warn += 1,
                Grade::Info => s.info += 1,
                Grade::Unsupported => s.unsupported += 1,
                Grade::Error => s.error += 1,
            }
        }
        s
    }
}
