//! A server that died during a run: one finding, not a hundred.
//!
//! Cases run side by side, so when one request kills the server (nbdkit 1.32.5 aborts on a
//! 0xffffffff-byte block status over a big hole, CVE-2025-47711), every case in flight loses
//! its connection at the same moment and every later one finds nobody listening. Graded as
//! they stand, that is a handful of TX-NODROP-1 failures blamed on innocent neighbours and a
//! hundred errors, different on each run. This module decides what each of them means, once
//! the suite knows the server is gone (it no longer accepts connections).

use super::outcome::{CaseResult, ConnectionLoss, Finding, Grade};
use crate::launch::ServerDeath;

/// How many of a dead server's last output lines the case it died under keeps.
pub const SERVER_LOG_LINES: usize = 10;

/// A launched server that died this many times during one subject's run makes its target
/// "could not test": its results are a patchwork of restarts (failures still count).
pub const KEEPS_DYING: usize = 3;
/// How many deaths a target's note lists one by one.
const DEATHS_LISTED: usize = 5;

/// What a dead server did to a run, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// The case whose request killed it, when only one case was in flight.
    pub culprit: Option<String>,
    /// The cases in flight when it died (the culprit among them).
    pub in_flight: Vec<String>,
    /// Cases that found it gone.
    pub not_tested: usize,
}

impl Death {
    /// The target note the report shows.
    pub fn note(&self) -> String {
        let suspects = self.in_flight.join(", ");
        match &self.culprit {
            Some(c) => format!(
                "the server died during the run: it dropped the connection of {c} (the only \
                 case in flight) and then accepted no more; {} later cases were not tested. \
                 Re-run `--only {c}` against a fresh server to see it again.",
                self.not_tested
            ),
            None if self.in_flight.is_empty() => format!(
                "the server stopped accepting connections during the run, with no request \
                 outstanding; {} cases were not tested. A server that exits when its clients \
                 leave (qemu-nbd without --persistent/-t) must be started persistent.",
                self.not_tested
            ),
            None => format!(
                "the server died during the run while {} cases were in flight ({suspects}): one \
                 of their requests killed it, and the suite cannot tell which, so none of them \
                 is graded for it; {} later cases were not tested. Run `--parallel 1` (or \
                 `--only ID` against a fresh server for each) to find the request that kills it.",
                self.in_flight.len(),
                self.not_tested
            ),
        }
    }
}

/// Regrades the results of a run whose server is known to be dead. A case that lost its
/// connection mid-exchange is the culprit if it was the only one; with several in flight,
/// none can be blamed and each is `error` (not tested). A case that found no server is
/// `error` too, with a note that says why. Findings made before the death are kept (a fail
/// found earlier in a case still fails it).
pub fn apportion(results: &mut [CaseResult]) -> Death {
    // A drop that some connection made afterwards outlived was the server closing one
    // connection, not dying: its findings stand as they are.
    let last_connect = results.iter().filter_map(|r| r.last_connected).max();
    let at_death = |r: &CaseResult| {
        r.lost == Some(ConnectionLoss::Dropped)
            && match (r.lost_at, last_connect) {
                (Some(lost), Some(connected)) => lost > connected,
                _ => true,
            }
    };
    let in_flight: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| at_death(r))
        .map(|(i, _)| i)
        .collect();
    let culprit = match in_flight.as_slice() {
        [only] => Some(results[*only].id.clone()),
        _ => None,
    };
    let mut not_tested = 0;
    for (i, r) in results.iter_mut().enumerate() {
        match r.lost {
            Some(ConnectionLoss::Dropped) if culprit.is_none() && in_flight.contains(&i) => {
                forget_the_drop(r);
                r.note = Some(
                    "not tested: the server died while this case ran, with other cases in \
                     flight (see the target's note)"
                        .to_owned(),
                );
                regrade(r);
            }
            Some(ConnectionLoss::Unreachable) => {
                not_tested += 1;
                forget_the_drop(r);
                r.note = Some(match &culprit {
                    Some(c) => format!("not tested: the server was gone (it died during {c})"),
                    None => "not tested: the server was gone (it died during the run)".to_owned(),
                });
                regrade(r);
            }
            _ => {}
        }
    }
    Death {
        culprit,
        in_flight: in_flight.iter().map(|&i| results[i].id.clone()).collect(),
        not_tested,
    }
}

/// A case whose launched server died while it ran. A crash stays as the case saw it (its
/// request may have caused it: nbdkit 1.32.5 aborts on purpose in a CVE case); the note says
/// what the server printed last. A death from outside (a kill, a clean exit:
/// [`ServerDeath::from_outside`]), on the case's second run (`suite::one` runs a case cut off so
/// once more), is nobody's finding: the case is not tested, and what it saw is listed as not
/// graded (a truncated reply, a close without an answer: the kill's doing).
pub fn cut_off(r: &mut CaseResult, death: &ServerDeath) {
    r.server_log = death.last_lines(SERVER_LOG_LINES);
    if !death.from_outside {
        if r.note.is_none() {
            r.note = Some(format!(
                "the server died during this case; {}",
                death.last_words()
            ));
        }
        return;
    }
    for f in r.findings.drain(..) {
        r.not_checked.push(format!(
            "seen as the server was killed, not graded: {}: expected {}; observed {}",
            f.clause, f.expected, f.observed
        ));
    }
    r.note = Some(format!(
        "not tested: the server died while this case ran, twice, and not of its requests \
         (it {}); {}",
        death.how,
        death.last_words()
    ));
    r.grade = Grade::Error;
}

/// What a case run again says: its first run was cut off by a death from outside.
pub fn run_again_note(first: &ServerDeath) -> String {
    format!(
        "run again: the server died while this case first ran, and not of its requests (it \
         {}); this is the second run, on a new server",
        first.how
    )
}

/// The target note for the launched servers that died during its run, or none.
pub fn deaths_note(deaths: &[ServerDeath]) -> Option<String> {
    let (first, rest) = (
        deaths.iter().take(DEATHS_LISTED),
        deaths.len().saturating_sub(DEATHS_LISTED),
    );
    let mut note = match deaths.len() {
        0 => return None,
        1 => "the server died during the run (the pool started a new one): ".to_owned(),
        n => format!(
            "the server died {n} times during the run (the pool started a new one each time): "
        ),
    };
    note.push_str(
        &first
            .map(ServerDeath::describe)
            .collect::<Vec<_>>()
            .join("; "),
    );
    if rest > 0 {
        note.push_str(&format!("; and {rest} more"));
    }
    if deaths.len() >= KEEPS_DYING {
        note.push_str(&format!(
            ". A server that dies {KEEPS_DYING} times or more could not be tested"
        ));
    }
    Some(note)
}

/// Findings that only say the server went away: the death is reported once, on the target.
fn forget_the_drop(r: &mut CaseResult) {
    r.findings.retain(|f| !is_drop(f));
}

fn is_drop(f: &Finding) -> bool {
    crate::checks::request::only_says_closed(f)
}

/// The grade left once the drop is forgotten: a failure found before it still fails;
/// otherwise the case was not tested.
fn regrade(r: &mut CaseResult) {
    r.grade = if r.findings.iter().any(|f| f.grade == Grade::Fail) {
        Grade::Fail
    } else {
        Grade::Error
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clauses::id;
    use std::time::Duration;

    fn result(id: &str, grade: Grade, lost: Option<ConnectionLoss>) -> CaseResult {
        let findings = match lost {
            Some(ConnectionLoss::Dropped) => vec![Finding::broken(
                id::TX_NODROP_1,
                "a reply, the connection open",
                "the server closed the connection",
            )],
            _ => Vec::new(),
        };
        CaseResult {
            id: id.to_owned(),
            title: String::new(),
            grade,
            clauses: Vec::new(),
            findings,
            note: None,
            not_checked: Vec::new(),
            lost,
            lost_at: None,
            last_connected: None,
            transcript: Vec::new(),
            streams: Vec::new(),
            server_log: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    fn death(how: &str, from_outside: bool) -> ServerDeath {
        ServerDeath {
            server: "qemu-nbd".into(),
            fixture: "mixed".into(),
            lived: Duration::from_millis(1500),
            how: how.into(),
            from_outside,
            log_tail: "starting\nnbdkit: protocol.c:506: Assertion failed.\n".into(),
        }
    }

    #[test]
    fn a_case_cut_off_by_a_kill_from_outside_is_not_tested() {
        let mut r = result("x", Grade::Fail, Some(ConnectionLoss::Dropped));
        cut_off(&mut r, &death("was killed by signal 9 (SIGKILL)", true));
        assert_eq!(r.grade, Grade::Error);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert!(
            r.not_checked[0].contains("TX-NODROP-1"),
            "{:?}",
            r.not_checked
        );
        let note = r.note.unwrap();
        assert!(note.contains("not of its requests"), "{note}");
        assert!(note.contains("SIGKILL"), "{note}");
        assert!(
            !note.contains("1.5 s"),
            "a case's note is in its snapshot: {note}"
        );
    }

    #[test]
    fn a_crash_stays_the_finding_of_the_case_that_saw_it() {
        let mut r = result("x", Grade::Fail, Some(ConnectionLoss::Dropped));
        cut_off(&mut r, &death("was killed by signal 6 (SIGABRT)", false));
        assert_eq!(r.grade, Grade::Fail);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(
            r.server_log,
            ["starting", "nbdkit: protocol.c:506: Assertion failed."]
        );
        let note = r.note.unwrap();
        assert!(
            note.contains("printed last: nbdkit: protocol.c:506"),
            "{note}"
        );
    }

    #[test]
    fn the_targets_note_lists_deaths_and_says_when_it_could_not_be_tested() {
        assert_eq!(deaths_note(&[]), None);
        let one = deaths_note(&[death("exited with status 1", false)]).unwrap();
        assert!(one.contains("died during the run"), "{one}");
        assert!(one.contains("1.5 s after it started"), "{one}");
        assert!(!one.contains("could not be tested"), "{one}");
        let many = vec![death("was killed by signal 9 (SIGKILL)", true); 7];
        let note = deaths_note(&many).unwrap();
        assert!(note.contains("died 7 times"), "{note}");
        assert!(note.contains("and 2 more"), "{note}");
        assert!(note.contains("could not be tested"), "{note}");
    }

    #[test]
    fn one_case_in_flight_is_the_culprit() {
        let mut results = vec![
            result("a", Grade::Pass, None),
            result("killer", Grade::Fail, Some(ConnectionLoss::Dropped)),
            result("late", Grade::Error, Some(ConnectionLoss::Unreachable)),
        ];
        let death = apportion(&mut results);
        assert_eq!(death.culprit.as_deref(), Some("killer"));
        assert_eq!(results[1].grade, Grade::Fail);
        assert_eq!(results[2].grade, Grade::Error);
        assert!(results[2]
            .note
            .as_deref()
            .unwrap()
            .contains("during killer"));
        assert_eq!(results[0].grade, Grade::Pass);
    }

    #[test]
    fn neighbours_in_flight_are_not_blamed() {
        let mut results = vec![
            result("x", Grade::Fail, Some(ConnectionLoss::Dropped)),
            result("y", Grade::Fail, Some(ConnectionLoss::Dropped)),
            result("z", Grade::Error, Some(ConnectionLoss::Unreachable)),
        ];
        let death = apportion(&mut results);
        assert_eq!(death.culprit, None);
        assert_eq!(death.in_flight, ["x", "y"]);
        assert!(results.iter().all(|r| r.grade == Grade::Error));
        assert!(death.note().contains("--parallel 1"));
    }

    #[test]
    fn a_drop_the_server_outlived_is_not_its_death() {
        let t0 = std::time::Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut early = result("early", Grade::Fail, Some(ConnectionLoss::Dropped));
        early.lost_at = Some(t0);
        let mut killer = result("killer", Grade::Fail, Some(ConnectionLoss::Dropped));
        killer.last_connected = Some(later);
        killer.lost_at = Some(later + Duration::from_millis(5));
        let mut results = vec![early, killer];
        let death = apportion(&mut results);
        assert_eq!(death.culprit.as_deref(), Some("killer"));
        assert_eq!(
            results[0].grade,
            Grade::Fail,
            "a real early drop stays a failure"
        );
        assert_eq!(results[0].findings.len(), 1);
    }

    #[test]
    fn a_failure_found_before_the_death_stays() {
        let mut early = result("x", Grade::Fail, Some(ConnectionLoss::Dropped));
        early
            .findings
            .push(Finding::broken(id::BS_REQ_ONE_1, "one descriptor", "two"));
        let mut results = vec![
            early,
            result("y", Grade::Fail, Some(ConnectionLoss::Dropped)),
        ];
        apportion(&mut results);
        assert_eq!(results[0].grade, Grade::Fail);
        assert_eq!(results[0].findings.len(), 1);
        assert_eq!(results[1].grade, Grade::Error);
    }
}
