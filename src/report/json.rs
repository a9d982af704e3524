//! The JSON index (design §6). The shape is stable: keys are added, never renamed. Structs keep
//! the key order of the design so the file diffs and reads like the spec of it.

use serde::Serialize;

use super::{
    Decided, KnownFailure, RunReport, StaleLine, Transcripts, SPEC_REVISION, SUITE_VERSION,
};
use crate::clauses::ClauseId;
use crate::engine::outcome::{Capabilities, CaseResult, Finding, Grade, Summary, TargetResult};
use crate::Dialect;

#[derive(Serialize)]
struct Run<'a> {
    suite: &'static str,
    version: &'static str,
    spec: &'static str,
    // Extensions.
    verdict: &'static str,
    strict: bool,
    exit_code: u8,
    /// The signal that stopped the run (then `verdict` is "interrupted"), or null.
    interrupted: Option<&'a str>,
    /// Which cases carry their transcript and streams ("failing", "all", "none"); the others'
    /// are empty.
    transcripts: Transcripts,
    targets: Vec<Target<'a>>,
    /// Failing cases a `--known-failing` line acknowledged (not counted as failures).
    known_failures: Vec<Known<'a>>,
    /// `--known-failing` lines whose cases passed: each fails the run.
    stale_known_failing: Vec<Stale<'a>>,
}

#[derive(Serialize)]
struct Known<'a> {
    target: &'a str,
    case: &'a str,
    server: &'a str,
    grade: Grade,
    reason: &'a str,
    /// `FILE:LINE` of the line that acknowledged it.
    line: String,
}

#[derive(Serialize)]
struct Stale<'a> {
    line: String,
    entry: &'a str,
    reason: &'a str,
    passed: &'a [String],
}

#[derive(Serialize)]
struct Target<'a> {
    name: &'a str,
    uri: &'a str,
    server: &'a str,
    dialect: Dialect,
    capabilities: &'a Capabilities,
    summary: Summary,
    cases: Vec<Case<'a>>,
    // Extensions.
    /// "conformant", "non-conformant", "could not test", "left out (no case selected)", or
    /// "interrupted (partial results)" (`TargetVerdict::as_str`).
    verdict: &'static str,
    notes: &'a [String],
}

#[derive(Serialize)]
struct Case<'a> {
    id: &'a str,
    grade: Grade,
    clauses: &'a [ClauseId],
    level: &'static str,
    expected: &'a str,
    observed: &'a str,
    duration_ms: u64,
    // Extensions.
    title: &'a str,
    findings: Vec<FindingOut<'a>>,
    note: Option<&'a str>,
    not_checked: &'a [String],
    transcript: &'a [String],
    streams: &'a [String],
    /// The last lines a launched server printed when it died during this case (else empty).
    server_log: &'a [String],
    /// The acknowledgement that made this failing case a known failure, or null.
    known_failure: Option<Known<'a>>,
}

#[derive(Serialize)]
struct FindingOut<'a> {
    clause: ClauseId,
    level: &'static str,
    grade: Grade,
    expected: &'a str,
    observed: &'a str,
}

pub(super) fn render(report: &RunReport) -> String {
    let run = Run {
        suite: "nbd-conform",
        version: SUITE_VERSION,
        spec: SPEC_REVISION,
        verdict: report.verdict().as_str(),
        strict: report.strict,
        exit_code: report.exit_code(),
        interrupted: report.interrupted.as_deref(),
        transcripts: report.json_transcripts,
        targets: report.targets.iter().map(|t| target(report, t)).collect(),
        known_failures: report.known_failing.known.iter().map(known).collect(),
        stale_known_failing: report.known_failing.stale.iter().map(stale).collect(),
    };
    let mut out = serde_json::to_string_pretty(&run)
        .expect("report JSON holds only strings, numbers and bools");
    out.push('\n');
    out
}

fn target<'a>(report: &'a RunReport, t: &'a TargetResult) -> Target<'a> {
    Target {
        verdict: report.target_verdict(t).as_str(),
        notes: &t.notes,
        name: &t.name,
        uri: &t.uri,
        server: &t.server,
        dialect: t.dialect,
        capabilities: &t.capabilities,
        summary: report.summary(t),
        cases: t
            .cases
            .iter()
            .map(|c| case(c, report.known(t, c), report.json_transcripts))
            .collect(),
    }
}

fn known(k: &KnownFailure) -> Known<'_> {
    Known {
        target: &k.target,
        case: &k.case,
        server: &k.server,
        grade: k.grade,
        reason: &k.reason,
        line: k.at.to_string(),
    }
}

fn stale(s: &StaleLine) -> Stale<'_> {
    Stale {
        line: s.at.to_string(),
        entry: &s.key,
        reason: &s.reason,
        passed: &s.passed,
    }
}

fn case<'a>(
    c: &'a CaseResult,
    acknowledged: Option<&'a KnownFailure>,
    transcripts: Transcripts,
) -> Case<'a> {
    let decided = Decided::of(c);
    let keep = transcripts.keeps(c.grade);
    Case {
        id: &c.id,
        grade: c.grade,
        clauses: &c.clauses,
        level: decided.level,
        expected: decided.expected,
        observed: decided.observed,
        duration_ms: u64::try_from(c.duration.as_millis()).unwrap_or(u64::MAX),
        title: &c.title,
        findings: c.findings.iter().map(finding).collect(),
        note: c.note.as_deref(),
        not_checked: &c.not_checked,
        transcript: if keep { &c.transcript } else { &[] },
        streams: if keep { &c.streams } else { &[] },
        server_log: &c.server_log,
        known_failure: acknowledged.map(known),
    }
}

fn finding(f: &Finding) -> FindingOut<'_> {
    FindingOut {
        clause: f.clause,
        level: f.level(),
        grade: f.grade,
        expected: &f.expected,
        observed: &f.observed,
    }
}

#[cfg(test)]
mod tests {
    use crate::clauses::id;
    use serde_json::Value;

    use super::super::tests::sample;
    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn sorted(mut k: Vec<&str>) -> Vec<&str> {
        k.sort_unstable();
        k
    }

    #[test]
    fn has_exactly_the_design_keys_plus_extensions() {
        let v: Value = serde_json::from_str(&sample().to_json()).expect("valid JSON");
        assert_eq!(
            keys(&v),
            sorted(vec![
                "suite",
                "version",
                "spec",
                "targets",
                "verdict",
                "strict",
                "exit_code",
                "interrupted",
                "transcripts",
                "known_failures",
                "stale_known_failing"
            ])
        );
        assert_eq!(v["interrupted"], Value::Null);
        assert_eq!(v["suite"], "nbd-conform");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["spec"], SPEC_REVISION);
        assert_eq!(v["verdict"], "non-conformant");
        assert_eq!(v["exit_code"], 1);

        let targets = v["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 2);
        let t = &targets[0];
        assert_eq!(
            keys(t),
            sorted(vec![
                "name",
                "uri",
                "server",
                "dialect",
                "capabilities",
                "summary",
                "cases",
                "verdict",
                "notes"
            ])
        );
        assert_eq!(t["dialect"], "standard");
        assert_eq!(
            keys(&t["capabilities"]),
            sorted(vec!["structured_replies", "extended_headers", "contexts"])
        );
        assert_eq!(t["capabilities"]["contexts"][0], "base:allocation");
        assert_eq!(
            keys(&t["summary"]),
            sorted(vec![
                "pass",
                "fail",
                "warn",
                "info",
                "unsupported",
                "error",
                "known"
            ])
        );
        for grade in ["pass", "fail", "warn", "info", "unsupported", "error"] {
            assert_eq!(t["summary"][grade], 1, "{grade}");
        }

        let case_keys = sorted(vec![
            "id",
            "grade",
            "clauses",
            "level",
            "expected",
            "observed",
            "duration_ms",
            "title",
            "findings",
            "note",
            "not_checked",
            "transcript",
            "streams",
            "known_failure",
            "server_log",
        ]);
        for c in t["cases"].as_array().unwrap() {
            assert_eq!(keys(c), case_keys);
            for f in c["findings"].as_array().unwrap() {
                assert_eq!(
                    keys(f),
                    sorted(vec!["clause", "level", "grade", "expected", "observed"])
                );
            }
        }
    }

    #[test]
    fn case_fields_come_from_the_deciding_finding_or_the_note() {
        let v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        let cases = v["targets"][0]["cases"].as_array().unwrap();

        let fail = &cases[1];
        assert_eq!(fail["grade"], "fail");
        assert_eq!(
            fail["clauses"],
            serde_json::json!([id::BS_REQ_ONE_2, id::BS_REP_LEN_1])
        );
        assert_eq!(fail["level"], "MUST");
        assert_eq!(fail["expected"], "1 descriptor, length <= 4096");
        assert_eq!(fail["observed"], "2 descriptors | lengths 4096+512 <&\"'>");
        assert_eq!(fail["duration_ms"], 12);
        assert_eq!(fail["findings"].as_array().unwrap().len(), 2);
        assert_eq!(fail["findings"][1]["grade"], "warn");
        assert_eq!(fail["transcript"].as_array().unwrap().len(), 3);
        assert_eq!(fail["note"], Value::Null);

        let unsupported = &cases[4];
        assert_eq!(unsupported["grade"], "unsupported");
        assert_eq!(unsupported["level"], "");
        assert_eq!(unsupported["expected"], "");
        assert_eq!(
            unsupported["observed"],
            "server did not negotiate extended headers"
        );
        assert_eq!(
            unsupported["note"],
            "server did not negotiate extended headers"
        );

        let error = &cases[5];
        assert_eq!(error["grade"], "error");
        assert_eq!(
            error["observed"],
            "connect refused <127.0.0.1:10809> & gave up"
        );
    }

    #[test]
    fn transcripts_only_for_failing_cases_unless_asked() {
        let lines = |r: &RunReport| -> Vec<(String, usize)> {
            let v: Value = serde_json::from_str(&r.to_json()).unwrap();
            v["targets"][0]["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let id = c["id"].as_str().unwrap().to_owned();
                    (id, c["transcript"].as_array().unwrap().len())
                })
                .collect()
        };
        let mut r = sample();
        // The sample's pass and fail carry transcripts; by default only the fail keeps its.
        assert_eq!(
            lines(&r)[..2],
            [
                ("block-status/basic".to_owned(), 0),
                ("block-status/req-one".to_owned(), 3)
            ]
        );
        r.json_transcripts = Transcripts::All;
        assert_eq!(lines(&r)[0].1, 1);
        r.json_transcripts = Transcripts::None;
        assert!(lines(&r).iter().all(|(_, n)| *n == 0));
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["transcripts"], "none");
    }

    #[test]
    fn known_failures_and_stale_lines_are_carried() {
        let v: Value =
            serde_json::from_str(&super::super::tests::sample_with_known().to_json()).unwrap();
        assert_eq!(v["known_failures"][0]["case"], "block-status/req-one");
        assert_eq!(v["known_failures"][0]["line"], "known-failing/x.txt:2");
        assert_eq!(v["stale_known_failing"][0]["line"], "known-failing/x.txt:3");
        let req_one = &v["targets"][0]["cases"][1];
        assert_eq!(
            req_one["known_failure"]["reason"],
            "BS-REQ-ONE-2: two descriptors under REQ_ONE"
        );
        assert_eq!(v["targets"][0]["summary"]["known"], 1);
        assert_eq!(v["exit_code"], 1);
    }

    #[test]
    fn renders_the_sample_run() {
        insta::assert_snapshot!("sample-run", sample().to_json());
    }
}
