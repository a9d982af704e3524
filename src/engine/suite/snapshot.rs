//! The text insta snapshots hold for a case.

use crate::engine::outcome::CaseResult;

/// The text insta snapshots hold for one case on one server: verdict, findings, transcript and
/// the normalised descriptor streams. Nothing time-dependent.
pub fn snapshot_text(result: &CaseResult) -> String {
    let mut s = format!("case: {}\ngrade: {}\n", result.id, result.grade.as_str());
    if let Some(n) = &result.note {
        s.push_str(&format!("note: {n}\n"));
    }
    for n in &result.not_checked {
        s.push_str(&format!("not checked: {n}\n"));
    }
    s.push_str("findings:\n");
    for f in &result.findings {
        s.push_str(&format!(
            "  - {} {} ({}): expected {}; observed {}\n",
            f.grade.as_str(),
            f.clause,
            f.level(),
            f.expected,
            f.observed
        ));
    }
    s.push_str("transcript:\n");
    for (i, line) in result.transcript.iter().enumerate() {
        s.push_str(&format!("  {:>3} {line}\n", i + 1));
    }
    s.push_str("streams:\n");
    for line in &result.streams {
        s.push_str(&format!("  {line}\n"));
    }
    s
}
