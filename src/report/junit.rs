//! JUnit XML for CI, written with quick-junit: one `<testsuite>` per target (its URI, server,
//! dialect, spec revision as properties), one `<testcase>` per case. The output is valid
//! against the Jenkins junit-10 schema that CI tools check reports with (`selftest::report_formats`
//! validates real runs with xmllint), so nothing goes where that schema has no room: a case's
//! clause ids, level and grade are the first line of its `<system-out>`, not properties.
//!
//! fail → `<failure>`, error → `<error>`, unsupported → `<skipped>`, warn → `<failure>` under
//! `--strict` and otherwise a line in `<system-out>`, like info. A known failure (a
//! `--known-failing` line acknowledged it) is `<skipped>` with the line and its reason, so it
//! does not fail the CI job; a stale line fails it, as a `<failure>` in a suite of its own.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::known::KnownFailure;
use super::{marker, Decided, RunReport, TargetVerdict, Verdict, SPEC_REVISION, SUITE_VERSION};
use crate::clauses;
use crate::engine::dead_server::KEEPS_DYING;
use crate::engine::outcome::{CaseResult, Grade, TargetResult};

pub(super) fn render(report: &RunReport) -> String {
    let mut junit = Report::new("nbd-conform");
    let mut total = Duration::ZERO;
    for t in &report.targets {
        let suite = suite(report, t);
        total += suite.time.unwrap_or_default();
        junit.add_test_suite(suite);
    }
    if !report.known_failing.stale.is_empty() {
        junit.add_test_suite(stale_lines(report));
    }
    if let Some(signal) = &report.interrupted {
        // A CI tool that reads only this file must not take a cut-short run for a green one.
        let mut suite = TestSuite::new("nbd-conform run");
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_type("interrupted");
        status.set_message(format!(
            "{signal} stopped the run: the results are partial, and judged not"
        ));
        suite.add_test_case(TestCase::new("interrupted", status));
        junit.add_test_suite(suite);
    }
    junit.set_time(total);
    let xml = junit
        .to_string()
        .expect("quick-junit writes to memory and takes only strings it has cleaned");
    without_root_skipped(xml)
}

/// quick-junit puts a `skipped` count on `<testsuites>`, an attribute junit-10 does not allow
/// there (Jenkins rejects the file); each `<testsuite>` still carries its own.
fn without_root_skipped(xml: String) -> String {
    let Some(start) = xml.find("<testsuites") else {
        return xml;
    };
    let end = start + xml[start..].find('>').unwrap_or(0);
    let root = &xml[start..end];
    let Some(at) = root.find(" skipped=\"") else {
        return xml;
    };
    let value_end =
        at + " skipped=\"".len() + root[at + " skipped=\"".len()..].find('"').unwrap_or(0);
    let cut = start + at..start + value_end + 1;
    let mut out = xml;
    out.replace_range(cut, "");
    out
}

fn suite(report: &RunReport, t: &TargetResult) -> TestSuite {
    let mut suite = TestSuite::new(t.name.as_str());
    let props = [
        ("uri", t.uri.clone()),
        ("server", t.server.clone()),
        ("dialect", t.dialect.as_str().to_owned()),
        ("spec", SPEC_REVISION.to_owned()),
        ("suite", format!("nbd-conform {SUITE_VERSION}")),
        ("strict", report.strict.to_string()),
    ];
    for (name, value) in props {
        suite.add_property(Property::new(name, value));
    }
    // Only when it was: the suites of a run that finished read as they always did.
    if let Some(signal) = &report.interrupted {
        suite.add_property(Property::new("interrupted", signal.as_str()));
    }
    let mut time = Duration::ZERO;
    for c in &t.cases {
        time += c.duration;
        suite.add_test_case(case(report, t, c));
    }
    if let Some(why) = untested_without_an_error(report, t) {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_type("could not test");
        status.set_message(why);
        let mut verdict = TestCase::new("(target verdict)", status);
        verdict.set_classname(t.name.as_str());
        suite.add_test_case(verdict);
    }
    suite.set_time(time);
    suite
}

fn case(report: &RunReport, t: &TargetResult, c: &CaseResult) -> TestCase {
    let strict = report.strict;
    let decided = Decided::of(c);
    let clause = decided.clause_or_first(c);
    // The deciding finding's level, else the level of the clause the case is about.
    let level = match decided.clause {
        Some(_) => Some(decided.level),
        None => clause.and_then(clauses::clause).map(|k| k.level.as_str()),
    };
    let summary = one_line(c, &decided, clause, level);
    let status = match c.grade {
        _ if report.known(t, c).is_some() => known_failure(report.known(t, c)),
        Grade::Fail => failure(
            NonSuccessKind::Failure,
            &summary,
            level.unwrap_or("fail"),
            c,
        ),
        Grade::Warn if strict => failure(
            NonSuccessKind::Failure,
            &summary,
            level.unwrap_or("warn"),
            c,
        ),
        Grade::Error => failure(NonSuccessKind::Error, &summary, "error", c),
        Grade::Unsupported => {
            let mut skipped = TestCaseStatus::skipped();
            skipped.set_message(decided.observed);
            skipped
        }
        Grade::Pass | Grade::Info | Grade::Warn => TestCaseStatus::success(),
    };
    let mut case = TestCase::new(c.id.as_str(), status);
    case.set_classname(t.name.as_str());
    case.set_time(c.duration);
    case.set_system_out(system_out(strict, c, level, &summary));
    case
}

/// Why `t` could not be tested, when none of its cases says so with an `<error>` (its server
/// kept dying while cases passed, or every case was unsupported): the verdict exits 3, and a
/// suite of passes and skips alone would read as green.
fn untested_without_an_error(report: &RunReport, t: &TargetResult) -> Option<String> {
    if report.target_verdict(t) != TargetVerdict::Judged(Verdict::CouldNotTest)
        || t.cases.iter().any(|c| c.grade == Grade::Error)
    {
        return None;
    }
    Some(if t.server_deaths >= KEEPS_DYING {
        format!(
            "could not test: the launched server died {} times",
            t.server_deaths
        )
    } else {
        "could not test: no case could run on this server (every one unsupported)".to_owned()
    })
}

/// A failure a `--known-failing` line acknowledged: skipped, saying which line and why.
fn known_failure(known: Option<&KnownFailure>) -> TestCaseStatus {
    let mut skipped = TestCaseStatus::skipped();
    skipped.set_type("known failure");
    if let Some(k) = known {
        skipped.set_message(format!(
            "known failure, acknowledged by {}: {}",
            k.at, k.reason
        ));
    }
    skipped
}

/// One failing test case per stale `--known-failing` line: the run fails for it, and a CI
/// tool should say why.
fn stale_lines(report: &RunReport) -> TestSuite {
    let mut suite = TestSuite::new("known-failing lists");
    for line in &report.known_failing.stale {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status.set_type("stale known-failing line");
        status.set_message(format!(
            "{}: {} passes now; remove the line",
            line.at, line.key
        ));
        status.set_description(format!(
            "reason given: {}\npassed: {}\n",
            line.reason,
            line.passed.join(", ")
        ));
        let mut case = TestCase::new(line.at.to_string(), status);
        case.set_classname("known-failing lists");
        suite.add_test_case(case);
    }
    suite
}

fn failure(kind: NonSuccessKind, summary: &str, ty: &str, c: &CaseResult) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    status.set_message(summary);
    status.set_type(ty);
    status.set_description(details(c));
    status
}

/// "FAIL BS-REQ-ONE-2 (MUST): expected …; observed …", or the note for an errored case.
fn one_line(
    c: &CaseResult,
    decided: &Decided,
    clause: Option<&str>,
    level: Option<&str>,
) -> String {
    if c.grade == Grade::Error {
        return if decided.observed.is_empty() {
            "could not test".to_string()
        } else {
            decided.observed.to_string()
        };
    }
    format!(
        "{} {} ({}): expected {}; observed {}",
        marker(c.grade),
        clause.unwrap_or("no clause"),
        level.unwrap_or("?"),
        decided.expected,
        decided.observed
    )
}

/// The body of a `<failure>` or `<error>`: the title, every finding (the deciding one first in
/// the message already, here in case order) and the note.
fn details(c: &CaseResult) -> String {
    let mut body = String::new();
    if !c.title.is_empty() {
        body.push_str(&format!("{}\n", c.title));
    }
    for f in &c.findings {
        body.push_str(&format!(
            "{} {} ({}): expected {}; observed {}\n",
            marker(f.grade),
            f.clause,
            f.level(),
            f.expected,
            f.observed
        ));
    }
    if let Some(note) = c.note.as_deref().filter(|n| !n.is_empty()) {
        body.push_str(&format!("note: {note}\n"));
    }
    body
}

/// What the case is about (clauses, level, grade), a warning (when not failing) or info line,
/// then the numbered transcript.
fn system_out(strict: bool, c: &CaseResult, level: Option<&str>, summary: &str) -> String {
    let ids: Vec<&str> = c.clauses.iter().map(|id| id.as_str()).collect();
    let mut body = format!(
        "clauses: {}; level: {}; grade: {}\n",
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        },
        level.unwrap_or("?"),
        c.grade.as_str()
    );
    if c.grade == Grade::Info || (c.grade == Grade::Warn && !strict) {
        body.push_str(summary);
        body.push('\n');
        if c.grade == Grade::Warn {
            body.push_str("(a SHOULD is broken: conformant, but this fails under --strict)\n");
        }
    }
    let width = c.transcript.len().to_string().len();
    for (i, line) in c.transcript.iter().enumerate() {
        body.push_str(&format!("{:>width$} {line}\n", i + 1));
    }
    body
}

#[cfg(test)]
mod tests {
    use quick_junit::{Report, TestCaseStatus};

    use super::super::tests::sample;

    /// The XML read back by quick-junit's own parser: what a CI tool sees.
    fn read(xml: &str) -> Report {
        Report::deserialize_from_str(xml).expect("the JUnit we write parses back")
    }

    fn message(status: &TestCaseStatus) -> Option<&str> {
        match status {
            TestCaseStatus::NonSuccess { message, .. }
            | TestCaseStatus::Skipped { message, .. } => message.as_ref().map(|m| m.as_str()),
            TestCaseStatus::Success { .. } => None,
        }
    }

    #[test]
    fn counts_per_target_and_in_all() {
        let report = read(&sample().to_junit());
        assert_eq!((report.tests, report.failures, report.errors), (8, 1, 1));
        let alpha = &report.test_suites[0];
        assert_eq!(alpha.name.as_str(), "alpha");
        let counts = (alpha.tests, alpha.failures, alpha.errors, alpha.skipped);
        assert_eq!(counts, (6, 1, 1, 1));
        assert_eq!(alpha.time, Some(std::time::Duration::from_millis(72)));
        let beta = &report.test_suites[1];
        assert_eq!((beta.tests, beta.failures), (2, 0));
        assert_eq!(alpha.test_cases[1].name.as_str(), "block-status/req-one");
        let classname = alpha.test_cases[1].classname.as_ref().map(|c| c.as_str());
        assert_eq!(classname, Some("alpha"));
    }

    #[test]
    fn the_root_has_no_skipped_count() {
        let xml = sample().to_junit();
        let root = xml.lines().nth(1).expect("a root line");
        assert!(
            root.starts_with("<testsuites name=\"nbd-conform\" tests=\"8\""),
            "{root}"
        );
        assert!(!root.contains("skipped"), "{root}");
        assert!(xml.contains("<testsuite name=\"alpha\" tests=\"6\" skipped=\"1\""));
    }

    #[test]
    fn messages_keep_markup_through_a_parser() {
        let report = read(&sample().to_junit());
        let alpha = &report.test_suites[0];
        let failure = &alpha.test_cases[1].status;
        assert_eq!(
            message(failure),
            Some("FAIL BS-REQ-ONE-2 (MUST): expected 1 descriptor, length <= 4096; observed 2 descriptors | lengths 4096+512 <&\"'>")
        );
        let TestCaseStatus::NonSuccess {
            ty, description, ..
        } = failure
        else {
            panic!("req-one is a failure: {failure:?}");
        };
        assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("MUST"));
        let body = description.as_ref().map_or("", |d| d.as_str());
        assert!(body.contains(
            "WARN BS-REP-512-1 (SHOULD): expected multiples of 512; observed length 100"
        ));
        let error = alpha.test_cases.iter().find(|c| {
            matches!(
                c.status,
                TestCaseStatus::NonSuccess {
                    kind: quick_junit::NonSuccessKind::Error,
                    ..
                }
            )
        });
        assert_eq!(
            error.and_then(|c| message(&c.status)),
            Some("connect refused <127.0.0.1:10809> & gave up")
        );
        let skipped = alpha
            .test_cases
            .iter()
            .find(|c| matches!(c.status, TestCaseStatus::Skipped { .. }));
        assert_eq!(
            skipped.and_then(|c| message(&c.status)),
            Some("server did not negotiate extended headers")
        );
    }

    #[test]
    fn clauses_level_and_grade_open_system_out() {
        let report = read(&sample().to_junit());
        let req_one = &report.test_suites[0].test_cases[1];
        let out = req_one.system_out.as_ref().map_or("", |o| o.as_str());
        assert!(
            out.starts_with("clauses: BS-REQ-ONE-2, BS-REP-LEN-1; level: MUST; grade: fail\n1 TX REQUEST type=BLOCK_STATUS flags=REQ_ONE cookie=0x1\n2 RX CHUNK"),
            "{out}"
        );
    }

    #[test]
    fn warn_is_a_failure_only_under_strict() {
        let mut report = sample();
        let lenient = read(&report.to_junit());
        let align = &lenient.test_suites[0].test_cases[2];
        assert!(matches!(align.status, TestCaseStatus::Success { .. }));
        let out = align.system_out.as_ref().map_or("", |o| o.as_str());
        assert!(out.contains("WARN BS-REP-512-1 (SHOULD): expected multiples of 512; observed line one\nline two"), "{out}");
        assert_eq!(lenient.failures, 1);

        report.strict = true;
        let strict = read(&report.to_junit());
        assert_eq!(strict.failures, 2);
        assert_eq!(strict.test_suites[0].failures, 2);
        let TestCaseStatus::NonSuccess { ty, .. } = &strict.test_suites[0].test_cases[2].status
        else {
            panic!("a warn under --strict is a failure");
        };
        assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("SHOULD"));
    }

    #[test]
    fn a_known_failure_is_skipped_and_a_stale_line_fails() {
        let report = read(&super::super::tests::sample_with_known().to_junit());
        // alpha's req-one failure acknowledged; its error still counts.
        assert_eq!((report.failures, report.errors), (1, 1));
        let req_one = &report.test_suites[0].test_cases[1];
        assert_eq!(
            message(&req_one.status),
            Some("known failure, acknowledged by known-failing/x.txt:2: BS-REQ-ONE-2: two descriptors under REQ_ONE")
        );
        let out = req_one.system_out.as_ref().map_or("", |o| o.as_str());
        assert!(
            out.starts_with("clauses: BS-REQ-ONE-2, BS-REP-LEN-1; level: MUST; grade: fail\n"),
            "{out}"
        );
        let stale = report
            .test_suites
            .last()
            .expect("a suite for the stale line");
        assert_eq!(
            (stale.name.as_str(), stale.tests, stale.failures),
            ("known-failing lists", 1, 1)
        );
        assert_eq!(
            message(&stale.test_cases[0].status),
            Some("known-failing/x.txt:3: block-status/basic@qemu-nbd=10.* passes now; remove the line")
        );
    }

    #[test]
    fn a_target_that_could_not_be_tested_is_an_error_even_without_an_errored_case() {
        use crate::engine::outcome::Grade;
        let unsupported = super::super::tests::case("x", Grade::Unsupported, &[]);
        let target = super::super::tests::target("down", vec![unsupported]);
        let mut run = super::super::RunReport {
            targets: vec![target],
            ..Default::default()
        };
        assert_eq!(read(&run.to_junit()).errors, 1);
        run.targets[0].cases[0].grade = Grade::Pass;
        assert_eq!(read(&run.to_junit()).errors, 0);
        run.interrupted = Some("SIGINT".into());
        let interrupted = read(&run.to_junit());
        assert_eq!(interrupted.errors, 1);
        let last = interrupted.test_suites.last().expect("a suite");
        assert_eq!(last.test_cases[0].name.as_str(), "interrupted");
    }

    #[test]
    fn renders_the_sample_run() {
        insta::assert_snapshot!("sample-run", sample().to_junit());
    }
}
