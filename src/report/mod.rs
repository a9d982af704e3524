//! Reports of a run: one verdict and exit code, written as Markdown (people, CI job summaries),
//! JSON (machines; design §6 shape, extended but never renamed) and JUnit XML (CI).
//!
//! Every writer reads the same [`RunReport`] and the same per-case digest ([`Decided`]), so the
//! three formats can't disagree about which clause decided a case or what was observed.

mod json;
mod junit;
pub mod known;
mod markdown;
pub mod spec;

pub use known::{Acknowledged, KnownFailingList, KnownFailure, StaleLine};

use crate::engine::outcome::{CaseResult, Grade, Summary, TargetResult};

/// The proto.md revision the clause registry was read at ([`spec::SPEC_COMMIT`], short).
pub const SPEC_REVISION: &str = "proto.md@89ba7b5";

/// The suite's own version, as reports print it.
const SUITE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything one `run` produced, and whether WARN counts as non-conformance.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub targets: Vec<TargetResult>,
    pub strict: bool,
    /// The signal that cut the run short ("SIGINT", "SIGTERM"): then `targets` hold the
    /// subjects that finished and the cases of the one cut short that did, and the run's
    /// verdict is [`Verdict::Interrupted`].
    pub interrupted: Option<String>,
    /// What the `--known-failing` lists made of the run: failing cases they acknowledge (not
    /// counted as failures; JUnit may mark them skipped or expected) and stale lines (each
    /// fails the run).
    pub known_failing: Acknowledged,
    /// Which cases the JSON carries transcripts (and descriptor streams) for.
    pub json_transcripts: Transcripts,
}

/// Which cases' transcripts and descriptor streams the JSON report holds (`--json-transcripts`):
/// most of a run's JSON is the exchanges of cases that passed, which nobody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transcripts {
    /// Cases graded fail, warn or error (known failures too): the ones a reader looks into.
    #[default]
    Failing,
    All,
    None,
}

impl Transcripts {
    /// Whether a case of `grade` keeps its transcript.
    pub fn keeps(self, grade: Grade) -> bool {
        match self {
            Transcripts::All => true,
            Transcripts::None => false,
            Transcripts::Failing => matches!(grade, Grade::Fail | Grade::Warn | Grade::Error),
        }
    }
}

/// Exit codes shared by every subcommand (README "Exit codes"): the one place they are defined.
pub mod exit {
    pub const CONFORMANT: u8 = 0;
    /// A case failed (or warned, under `--strict`); also `map`'s and `serve`'s failure.
    pub const FAILED: u8 = 1;
    /// Bad input: nothing was run.
    pub const USAGE: u8 = 2;
    pub const COULD_NOT_TEST: u8 = 3;
    /// `run` was stopped by SIGINT or SIGTERM; the reports hold what finished before.
    pub const INTERRUPTED: u8 = 4;
    /// A report could not be written: an output path found unwritable before the run (nothing
    /// ran), or a write that failed at the end (the other reports were still written). The
    /// verdict, if any, is not this exit code's to tell.
    pub const IO: u8 = 5;

    /// Every exit code with what it means, in order: what `run --help` prints, so that the
    /// text and the constants are one fact.
    pub const ALL: &[(u8, &str)] = &[
        (CONFORMANT, "conformant"),
        (
            FAILED,
            "non-conformant: a case failed (or warned, under --strict)",
        ),
        (USAGE, "usage error: nothing was run"),
        (
            COULD_NOT_TEST,
            "could not test (a server unreachable, not installed, or erroring)",
        ),
        (
            INTERRUPTED,
            "interrupted by SIGINT or SIGTERM (the reports hold what finished)",
        ),
        (
            IO,
            "a report could not be written (found before the run, or at its end: the others \
             are written)",
        ),
    ];
}

/// The run's overall result; it picks the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Conformant,
    NonConformant,
    CouldNotTest,
    /// SIGINT or SIGTERM stopped the run: no verdict, whatever the cases that ran say.
    Interrupted,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Conformant => exit::CONFORMANT,
            Verdict::NonConformant => exit::FAILED,
            Verdict::CouldNotTest => exit::COULD_NOT_TEST,
            Verdict::Interrupted => exit::INTERRUPTED,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Conformant => "conformant",
            Verdict::NonConformant => "non-conformant",
            Verdict::CouldNotTest => "could not test",
            Verdict::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one target, or why it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetVerdict {
    Judged(Verdict),
    /// No case was selected for it (`--only`, or no case of its dialect): left out of the run's
    /// verdict, and the report says so.
    LeftOut,
    /// The run was stopped while its cases ran: what finished is reported, and judged not.
    Interrupted,
}

impl TargetVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetVerdict::Judged(v) => v.as_str(),
            TargetVerdict::LeftOut => "left out (no case selected)",
            TargetVerdict::Interrupted => "interrupted (partial results)",
        }
    }
}

impl std::fmt::Display for TargetVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict rules, in one place (README "Verdicts"):
/// - non-conformant: some case failed (or warned, under `--strict`); never hidden by errors;
/// - could not test: otherwise, some case errored, or no case tested anything (every one
///   unsupported), or its launched server kept dying (`dead_server::KEEPS_DYING`);
/// - conformant: something was tested, nothing errored, nothing failed.
pub fn target_verdict(target: &TargetResult, strict: bool) -> TargetVerdict {
    judge(target, strict, &Acknowledged::default())
}

/// [`target_verdict`], where the known failures `known` acknowledges do not count (errors are
/// never acknowledged).
fn judge(target: &TargetResult, strict: bool, known: &Acknowledged) -> TargetVerdict {
    if target.interrupted {
        return TargetVerdict::Interrupted;
    }
    if target.cases.is_empty() {
        return TargetVerdict::LeftOut;
    }
    let grades = || target.cases.iter().map(|c| c.grade);
    if target
        .cases
        .iter()
        .any(|c| c.grade.is_nonconformant(strict) && known.of(target, c).is_none())
    {
        return TargetVerdict::Judged(Verdict::NonConformant);
    }
    if target.server_deaths >= crate::engine::dead_server::KEEPS_DYING {
        return TargetVerdict::Judged(Verdict::CouldNotTest);
    }
    let errored = grades().any(|g| g == Grade::Error);
    let tested = grades().any(|g| matches!(g, Grade::Pass | Grade::Info | Grade::Warn));
    TargetVerdict::Judged(if errored || !tested {
        Verdict::CouldNotTest
    } else {
        Verdict::Conformant
    })
}

impl RunReport {
    /// The verdict on one of this run's targets, known failures acknowledged.
    pub fn target_verdict(&self, target: &TargetResult) -> TargetVerdict {
        judge(target, self.strict, &self.known_failing)
    }

    /// The known failure `case` on `target` is, if a `--known-failing` line acknowledged it.
    pub fn known(&self, target: &TargetResult, case: &CaseResult) -> Option<&KnownFailure> {
        self.known_failing.of(target, case)
    }

    /// `target`'s grade counts, a known failure counted as `known`, not as its grade.
    pub fn summary(&self, target: &TargetResult) -> Summary {
        self.known_failing.summary(target)
    }

    /// The run's verdict from its targets': non-conformance wins over "could not test" (a broken
    /// clause on one target is never hidden by another being unreachable); a target left out
    /// does not count, and a run with no target judged was not tested.
    pub fn verdict(&self) -> Verdict {
        if self.interrupted.is_some() {
            return Verdict::Interrupted;
        }
        let judged: Vec<Verdict> = self
            .targets
            .iter()
            .filter_map(|t| match self.target_verdict(t) {
                TargetVerdict::Judged(v) => Some(v),
                TargetVerdict::LeftOut | TargetVerdict::Interrupted => None,
            })
            .collect();
        // A stale known-failing line is a failure of the run: the list says something untrue.
        if judged.contains(&Verdict::NonConformant) || !self.known_failing.stale.is_empty() {
            Verdict::NonConformant
        } else if judged.is_empty() || judged.contains(&Verdict::CouldNotTest) {
            Verdict::CouldNotTest
        } else {
            Verdict::Conformant
        }
    }

    /// The verdict's exit code (a usage error, [`exit::USAGE`], is the CLI's).
    pub fn exit_code(&self) -> u8 {
        self.verdict().exit_code()
    }

    pub fn to_json(&self) -> String {
        json::render(self)
    }

    pub fn to_markdown(&self) -> String {
        markdown::render(self)
    }

    pub fn to_junit(&self) -> String {
        junit::render(self)
    }

    /// Grade counts over every target.
    fn total(&self) -> Summary {
        let mut total = Summary::default();
        for s in self.targets.iter().map(|t| self.summary(t)) {
            total.pass += s.pass;
            total.known += s.known;
            total.fail += s.fail;
            total.warn += s.warn;
            total.info += s.info;
            total.unsupported += s.unsupported;
            total.error += s.error;
        }
        total
    }
}

/// What a report says about one case in a line: the clause that decided it, at which level,
/// and expected vs observed. For an unsupported or errored case "observed" is the note (why it
/// could not apply), since those grades rarely come with a finding.
struct Decided<'a> {
    clause: Option<&'static str>,
    level: &'static str,
    expected: &'a str,
    observed: &'a str,
}

impl<'a> Decided<'a> {
    fn of(case: &'a CaseResult) -> Decided<'a> {
        let deciding = case.deciding();
        let note = case.note.as_deref().filter(|n| !n.is_empty());
        let observed = match (case.grade, note) {
            (Grade::Unsupported | Grade::Error, Some(note)) => note,
            _ => deciding.map_or("", |f| f.observed.as_str()),
        };
        Decided {
            clause: deciding.map(|f| f.clause.as_str()),
            level: deciding.map_or("", |f| f.level()),
            expected: deciding.map_or("", |f| f.expected.as_str()),
            observed,
        }
    }

    /// The deciding clause, else the first clause the case is about.
    fn clause_or_first(&self, case: &CaseResult) -> Option<&'static str> {
        self.clause
            .or_else(|| case.clauses.first().map(|c| c.as_str()))
    }
}

/// Upper-case grade marker used by the Markdown and JUnit output.
fn marker(grade: Grade) -> &'static str {
    match grade {
        Grade::Pass => "PASS",
        Grade::Info => "INFO",
        Grade::Unsupported => "UNSUPPORTED",
        Grade::Warn => "WARN",
        Grade::Fail => "FAIL",
        Grade::Error => "ERROR",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::clauses::{id, ClauseId};
    use std::time::Duration;

    use super::*;
    use crate::engine::outcome::{Capabilities, Finding};
    use crate::Dialect;

    pub(crate) fn case(id: &str, grade: Grade, clauses: &[ClauseId]) -> CaseResult {
        CaseResult {
            id: id.to_string(),
            title: format!("title of {id}"),
            grade,
            clauses: clauses.to_vec(),
            findings: Vec::new(),
            note: None,
            not_checked: Vec::new(),
            lost: None,
            lost_at: None,
            last_connected: None,
            transcript: Vec::new(),
            streams: Vec::new(),
            server_log: Vec::new(),
            duration: Duration::from_millis(12),
        }
    }

    pub(crate) fn target(name: &str, cases: Vec<CaseResult>) -> TargetResult {
        TargetResult {
            name: name.to_string(),
            uri: format!("nbd://127.0.0.1:10809/{name}"),
            server: "reference 0.1.0".to_string(),
            dialect: Dialect::Standard,
            capabilities: Capabilities {
                structured_replies: true,
                extended_headers: false,
                contexts: vec!["base:allocation".to_string()],
            },
            cases,
            notes: Vec::new(),
            server_deaths: 0,
            interrupted: false,
        }
    }

    /// Two targets and every grade; a transcript line holding a fence, cells holding `|`, and
    /// messages holding every XML special character.
    pub(crate) fn sample() -> RunReport {
        let mut pass = case("block-status/basic", Grade::Pass, &[id::BS_REP_ATLEAST1_1]);
        pass.findings.push(Finding {
            clause: id::BS_REP_ATLEAST1_1,
            grade: Grade::Pass,
            expected: "a reply".into(),
            observed: "a reply".into(),
        });
        pass.transcript = vec!["TX REQUEST type=BLOCK_STATUS offset=0 len=4096".into()];

        let mut fail = case(
            "block-status/req-one",
            Grade::Fail,
            &[id::BS_REQ_ONE_2, id::BS_REP_LEN_1],
        );
        fail.title = "REQ_ONE | one descriptor".into();
        fail.findings = vec![
            Finding {
                clause: id::BS_REQ_ONE_2,
                grade: Grade::Fail,
                expected: "1 descriptor, length <= 4096".into(),
                observed: "2 descriptors | lengths 4096+512 <&\"'>".into(),
            },
            Finding {
                clause: id::BS_REP_512_1,
                grade: Grade::Warn,
                expected: "multiples of 512".into(),
                observed: "length 100".into(),
            },
        ];
        fail.server_log = vec![
            "nbdkit: protocol.c:506: extents_to_block_descriptors: Assertion `e.length <= length' failed.".into(),
        ];
        fail.transcript = vec![
            "TX REQUEST type=BLOCK_STATUS flags=REQ_ONE cookie=0x1".into(),
            "RX CHUNK payload \"```\" and ````four````".into(),
            "```".into(),
        ];

        let mut warn = case("block-status/align", Grade::Warn, &[id::BS_REP_512_1]);
        warn.findings.push(Finding {
            clause: id::BS_REP_512_1,
            grade: Grade::Warn,
            expected: "multiples of 512".into(),
            observed: "line one\nline two".into(),
        });

        let mut info = case("block-status/overshoot", Grade::Info, &[id::BS_REP_SHORT_1]);
        info.findings.push(Finding {
            clause: id::BS_REP_SHORT_1,
            grade: Grade::Info,
            expected: "extent may end past the request".into(),
            observed: "last extent ends at 8192 for a 4096 request".into(),
        });

        let mut unsupported = case("negotiation/extended", Grade::Unsupported, &[id::EH_GO_1]);
        unsupported.note = Some("server did not negotiate extended headers".into());

        let mut error = case("handshake/greeting", Grade::Error, &[id::HS_GREET_1]);
        error.note = Some("connect refused <127.0.0.1:10809> & gave up".into());

        let alpha = target(
            "alpha",
            vec![pass.clone(), fail, warn, info, unsupported, error],
        );
        let mut beta = target(
            "beta",
            vec![
                pass,
                case("block-status/align", Grade::Pass, &[id::BS_REP_512_1]),
            ],
        );
        beta.server = "qemu-nbd 10.0.2".into();
        beta.capabilities.extended_headers = true;
        RunReport {
            targets: vec![alpha, beta],
            ..RunReport::default()
        }
    }

    /// The sample run with a known-failing list: alpha's failure acknowledged, and a line
    /// whose case passes on beta (stale).
    pub(crate) fn sample_with_known() -> RunReport {
        let mut r = sample();
        let list = KnownFailingList::from_text(
            "known-failing/x.txt",
            "# acknowledged\n\
             block-status/req-one@reference=0.1.*  BS-REQ-ONE-2: two descriptors under REQ_ONE\n\
             block-status/basic@qemu-nbd=10.*  fixed in 10.1 | gone\n",
        )
        .expect("a valid list");
        r.known_failing = list.apply(&r.targets, r.strict);
        r
    }

    fn report(targets: Vec<TargetResult>, strict: bool) -> RunReport {
        RunReport {
            targets,
            strict,
            ..RunReport::default()
        }
    }

    #[test]
    fn all_pass_is_conformant() {
        let r = report(
            vec![target(
                "a",
                vec![case("x", Grade::Pass, &[]), case("y", Grade::Info, &[])],
            )],
            false,
        );
        assert_eq!(r.verdict(), Verdict::Conformant);
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn a_server_that_keeps_dying_could_not_be_tested_but_a_failure_still_wins() {
        let mut t = target("a", vec![case("x", Grade::Pass, &[])]);
        t.server_deaths = crate::engine::dead_server::KEEPS_DYING - 1;
        assert_eq!(
            report(vec![t.clone()], false).verdict(),
            Verdict::Conformant
        );
        t.server_deaths += 1;
        assert_eq!(
            report(vec![t.clone()], false).verdict(),
            Verdict::CouldNotTest
        );
        t.cases.push(case("y", Grade::Fail, &[]));
        assert_eq!(report(vec![t], false).verdict(), Verdict::NonConformant);
    }

    #[test]
    fn an_interrupted_run_has_no_verdict_and_exits_4() {
        let done = target("a", vec![case("x", Grade::Fail, &[])]);
        let mut cut = target("b", vec![case("x", Grade::Pass, &[])]);
        cut.interrupted = true;
        let mut r = report(vec![done.clone(), cut.clone()], false);
        r.interrupted = Some("SIGTERM".into());
        assert_eq!(r.verdict(), Verdict::Interrupted);
        assert_eq!(r.exit_code(), exit::INTERRUPTED);
        assert_eq!(
            target_verdict(&done, false),
            TargetVerdict::Judged(Verdict::NonConformant),
            "a target that finished keeps its verdict"
        );
        assert_eq!(target_verdict(&cut, false), TargetVerdict::Interrupted);
    }

    #[test]
    fn warn_fails_only_under_strict() {
        let targets = vec![target(
            "a",
            vec![case("x", Grade::Pass, &[]), case("y", Grade::Warn, &[])],
        )];
        assert_eq!(report(targets.clone(), false).exit_code(), 0);
        let strict = report(targets, true);
        assert_eq!(strict.verdict(), Verdict::NonConformant);
        assert_eq!(strict.exit_code(), 1);
    }

    #[test]
    fn fail_is_nonconformant() {
        let r = report(
            vec![target(
                "a",
                vec![case("x", Grade::Pass, &[]), case("y", Grade::Fail, &[])],
            )],
            false,
        );
        assert_eq!(r.verdict(), Verdict::NonConformant);
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn all_error_target_could_not_test() {
        let ok = target("a", vec![case("x", Grade::Pass, &[])]);
        let down = target(
            "b",
            vec![case("x", Grade::Error, &[]), case("y", Grade::Error, &[])],
        );
        let r = report(vec![ok.clone(), down], false);
        assert_eq!(r.verdict(), Verdict::CouldNotTest);
        assert_eq!(r.exit_code(), 3);
        assert_eq!(report(vec![], false).exit_code(), 3);
    }

    #[test]
    fn one_error_is_no_green() {
        // "1 pass, 4 unsupported, 119 error" was once called conformant.
        let ok = target("a", vec![case("x", Grade::Pass, &[])]);
        let partly = target(
            "d",
            vec![case("x", Grade::Error, &[]), case("y", Grade::Pass, &[])],
        );
        assert_eq!(report(vec![ok, partly], false).exit_code(), 3);
    }

    #[test]
    fn nothing_tested_is_no_green() {
        let unsupported = target(
            "u",
            vec![
                case("x", Grade::Unsupported, &[]),
                case("y", Grade::Unsupported, &[]),
            ],
        );
        assert_eq!(
            target_verdict(&unsupported, false),
            TargetVerdict::Judged(Verdict::CouldNotTest)
        );
        assert_eq!(report(vec![unsupported], false).exit_code(), 3);
    }

    #[test]
    fn a_target_without_selected_cases_is_left_out() {
        // `--only bs.range` selects no draft case: the draft target must not make the run
        // "could not test".
        let ok = target("a", vec![case("x", Grade::Pass, &[])]);
        let empty = target("draft", vec![]);
        assert_eq!(target_verdict(&empty, false), TargetVerdict::LeftOut);
        assert_eq!(report(vec![ok, empty.clone()], false).exit_code(), 0);
        assert_eq!(report(vec![empty], false).exit_code(), 3);
    }

    #[test]
    fn nonconformance_is_never_hidden_by_an_untested_target() {
        let broken = target("a", vec![case("x", Grade::Fail, &[])]);
        let down = target("b", vec![case("x", Grade::Error, &[])]);
        assert_eq!(report(vec![broken, down], false).exit_code(), 1);
    }

    #[test]
    fn a_known_failure_does_not_count_but_a_stale_line_fails_the_run() {
        let mut r = sample_with_known();
        assert_eq!(r.known_failing.known.len(), 1);
        assert_eq!(
            r.known_failing.known[0].at.to_string(),
            "known-failing/x.txt:2"
        );
        assert_eq!(r.known_failing.stale.len(), 1);
        assert_eq!(
            r.known_failing.stale[0].passed,
            ["block-status/basic on beta"]
        );
        let alpha = r.summary(&r.targets[0]);
        assert_eq!((alpha.fail, alpha.known, alpha.warn), (0, 1, 1));
        // Alpha still errored once: could not test, not non-conformant.
        assert_eq!(
            r.target_verdict(&r.targets[0]),
            TargetVerdict::Judged(Verdict::CouldNotTest)
        );
        assert_eq!(r.exit_code(), exit::FAILED, "the stale line fails the run");
        r.known_failing.stale.clear();
        assert_eq!(r.exit_code(), exit::COULD_NOT_TEST);
        r.targets[0].cases.retain(|c| c.grade != Grade::Error);
        assert_eq!(r.exit_code(), exit::CONFORMANT);
        // The plain rule, without the list, still sees the failure.
        assert_eq!(
            target_verdict(&r.targets[0], false),
            TargetVerdict::Judged(Verdict::NonConformant)
        );
    }

    #[test]
    fn an_error_is_never_acknowledged() {
        let t = target("a", vec![case("x", Grade::Error, &[])]);
        let list = KnownFailingList::from_text("k", "x@reference  r\n").unwrap();
        let r = RunReport {
            known_failing: list.apply(std::slice::from_ref(&t), false),
            targets: vec![t],
            ..RunReport::default()
        };
        assert!(r.known_failing.known.is_empty());
        assert_eq!(r.exit_code(), exit::COULD_NOT_TEST);
    }

    #[test]
    fn decided_uses_note_for_unsupported_and_error() {
        let r = sample();
        let cases = &r.targets[0].cases;
        let unsupported = Decided::of(&cases[4]);
        assert_eq!(
            unsupported.observed,
            "server did not negotiate extended headers"
        );
        assert_eq!(unsupported.level, "");
        let fail = Decided::of(&cases[1]);
        assert_eq!(fail.clause, Some("BS-REQ-ONE-2"));
        assert_eq!(fail.expected, "1 descriptor, length <= 4096");
    }
}
