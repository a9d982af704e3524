//! How much of the protocol the suite checks, measured from the suite itself: for every clause,
//! whether the wire can show it broken, the cases that name it, the code that can report it,
//! and the faults or scripted peers that prove that code fires (`nbd-conform list
//! --coverage`, `docs/coverage.md`).
//!
//! "Evaluated" means reported by code a case reaches: a case names a clause, and one of its
//! steps reaches a check that raises that clause (the scan in [`scan`] follows the calls from a
//! kind of step through `checks`), or the clause is the one an unmet expectation of that case
//! is graded under. A case naming a clause none of its steps can report is a claim without a
//! check: [`Coverage::unevaluated_claims`] lists them, and a test keeps the list empty.

mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::clauses::{Clause, ClauseId, Level, CLAUSES};
use crate::engine::case::Case;
use crate::scripted;
use crate::server::fault::Fault;

pub use scan::{clause_refs, code_of, Scan};

/// What the suite knows of one clause.
#[derive(Debug)]
pub struct Row {
    pub clause: &'static Clause,
    /// Cases that name it and can report it.
    pub evaluated_by: Vec<String>,
    /// Cases that name it but reach no code that reports it.
    pub claimed_by: Vec<String>,
    /// Code that can report it: check modules, decoders, or `expect` (a case's expectation).
    pub raised_by: Vec<&'static str>,
    /// What proves that code fires: `fault:NAME` (a reference-server fault, proven by the
    /// `fault::` trials) or `peer:NAME` (a scripted server, the `selftest::scripted::` trials).
    pub proven_by: Vec<String>,
}

impl Row {
    pub fn observable(&self) -> bool {
        self.clause.unobservable.is_none()
    }

    /// Counted in the totals: observable, and reported under its own id.
    pub fn counted(&self) -> bool {
        self.observable() && self.clause.reported_as.is_none()
    }

    /// Some code can report this clause.
    pub fn raisable(&self) -> bool {
        !self.raised_by.is_empty()
    }
}

/// The coverage of every clause of the registry, in registry order.
#[derive(Debug)]
pub struct Coverage {
    pub rows: Vec<Row>,
}

/// The totals for one level: observable clauses, and those named by a case and evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub observable: usize,
    pub evaluated: usize,
}

impl Tally {
    pub fn percent(self) -> usize {
        (self.evaluated * 100)
            .checked_div(self.observable)
            .unwrap_or(0)
    }
}

impl Coverage {
    pub fn measure(cases: &[Case]) -> Coverage {
        let scan = Scan::new();
        let raisers = scan.raisers();
        let mut evaluated: BTreeMap<ClauseId, Vec<String>> = BTreeMap::new();
        let mut claimed: BTreeMap<ClauseId, Vec<String>> = BTreeMap::new();
        let mut expected: BTreeSet<ClauseId> = BTreeSet::new();
        for case in cases {
            let reportable = reportable(case, &scan);
            expected.extend(expectation_clauses(case));
            for id in &case.clauses {
                let into = if reportable.contains(id) {
                    &mut evaluated
                } else {
                    &mut claimed
                };
                into.entry(*id).or_default().push(case.id.clone());
            }
        }
        let mut proofs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for fault in Fault::ALL {
            proofs
                .entry(fault.clause())
                .or_default()
                .push(format!("fault:{}", fault.name()));
        }
        for proof in scripted::proofs() {
            proofs
                .entry(proof.clause.as_str())
                .or_default()
                .push(format!("peer:{}", proof.name));
        }
        let rows = CLAUSES
            .iter()
            .map(|clause| {
                let id = ClauseId::try_from(clause.id.to_string()).expect("a registry id");
                let mut raised_by = raisers.get(&id).cloned().unwrap_or_default();
                if expected.contains(&id) {
                    raised_by.push("expect");
                }
                Row {
                    clause,
                    evaluated_by: evaluated.remove(&id).unwrap_or_default(),
                    claimed_by: claimed.remove(&id).unwrap_or_default(),
                    raised_by,
                    proven_by: proofs.remove(clause.id).unwrap_or_default(),
                }
            })
            .collect();
        Coverage { rows }
    }

    /// Observable clauses of `level` reported under their own id, and how many of them a case
    /// names and evaluates.
    pub fn tally(&self, level: Level) -> Tally {
        let rows = self
            .rows
            .iter()
            .filter(|r| r.clause.level == level && r.counted());
        Tally {
            observable: rows.clone().count(),
            evaluated: rows.filter(|r| !r.evaluated_by.is_empty()).count(),
        }
    }

    /// (case, clause) pairs where the case names a clause none of its steps can report.
    pub fn unevaluated_claims(&self) -> Vec<(&str, &'static str)> {
        let mut out: Vec<_> = self
            .rows
            .iter()
            .flat_map(|r| r.claimed_by.iter().map(|c| (c.as_str(), r.clause.id)))
            .collect();
        out.sort();
        out
    }

    /// (case, clause) pairs where a step's expectation is graded under a clause its case does not
    /// name: what a case checks is said in one place, its `clauses`.
    pub fn unnamed_expectations(cases: &[Case]) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = cases
            .iter()
            .flat_map(|case| {
                expectation_clauses(case)
                    .into_iter()
                    .filter(|id| !case.clauses.contains(id))
                    .map(|id| (case.id.clone(), id.as_str()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Observable clauses some code can report that no fault or scripted peer has been shown to
    /// make fire.
    pub fn unproven(&self) -> Vec<&'static str> {
        self.rows
            .iter()
            .filter(|r| r.raisable() && r.observable() && r.proven_by.is_empty())
            .map(|r| r.clause.id)
            .collect()
    }

    /// The report: totals, then one row per clause (`docs/coverage.md` is this text).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| Level | Observable (own id) | Named by a case and evaluated |"
        );
        let _ = writeln!(out, "|---|---|---|");
        for level in [
            Level::Must,
            Level::Should,
            Level::Def,
            Level::Derived,
            Level::May,
        ] {
            let t = self.tally(level);
            let _ = writeln!(
                out,
                "| {level} | {} | {} ({} %) |",
                t.observable,
                t.evaluated,
                t.percent()
            );
        }
        // An expectation under a clause no answer breaks is recorded, not counted.
        let raisable = self
            .rows
            .iter()
            .filter(|r| r.raisable() && r.observable())
            .count();
        let unobservable = self.rows.iter().filter(|r| !r.observable()).count();
        let aliases = self
            .rows
            .iter()
            .filter(|r| r.clause.reported_as.is_some())
            .count();
        let _ = writeln!(
            out,
            "\nNot observable: {unobservable}. Reported under another id: {aliases}. Claimed by a \
             case but not evaluated: {}. Raisable by code: {raisable}, of which shown to fire \
             by a fault or a scripted peer: {}.\n",
            self.unevaluated_claims().len(),
            raisable - self.unproven().len()
        );
        let _ = writeln!(
            out,
            "| Clause | Level | Cases | Raised by | Shown to fire by |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in &self.rows {
            let cases = match (r.clause.unobservable, r.clause.reported_as) {
                (Some(why), _) => format!("not observable: {why}"),
                (None, Some((id, why))) => format!("reported as {id}: {why}"),
                (None, None) if r.evaluated_by.is_empty() => "—".to_string(),
                (None, None) => format!("{}: {}", r.evaluated_by.len(), list(&r.evaluated_by, 3)),
            };
            let claimed = if r.claimed_by.is_empty() {
                String::new()
            } else {
                format!(" **claimed, not evaluated**: {}", r.claimed_by.join(", "))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {cases}{claimed} | {} | {} |",
                r.clause.id,
                r.clause.level,
                dash(&r.raised_by.join(", ")),
                dash(&r.proven_by.join(", ")),
            );
        }
        out
    }
}

/// The first `n` items, then how many more.
fn list(items: &[String], n: usize) -> String {
    let shown = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    match items.len().saturating_sub(n) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}

/// Every clause `case` can report: what the code its steps reach raises (decoders and the
/// client report to every step that talks to a server), and its expectations' clauses.
fn reportable(case: &Case, scan: &Scan) -> BTreeSet<ClauseId> {
    let mut modules: BTreeSet<&str> = scan
        .raises
        .keys()
        .copied()
        .filter(|m| m.starts_with("wire::") || m.starts_with("client::"))
        .collect();
    for step in &case.steps {
        if let Some(reached) = scan.reached_by(step.kind()) {
            modules.extend(reached.iter().copied());
        }
    }
    let mut out: BTreeSet<ClauseId> = modules
        .iter()
        .flat_map(|m| scan.raises[m].iter().copied())
        .collect();
    out.extend(expectation_clauses(case));
    out
}

/// The clauses a case's unmet expectations are graded under: each step's `clause`, and for a
/// request without one, the case's first clause.
fn expectation_clauses(case: &Case) -> Vec<ClauseId> {
    case.steps
        .iter()
        .filter_map(|step| match step.expect() {
            Some(e) => e.clause.or(step.is_request().then(|| case.main_clause())),
            None => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::case::load_shipped_cases;

    fn measured() -> Coverage {
        Coverage::measure(&load_shipped_cases().expect("the cases load"))
    }

    #[test]
    fn every_kind_of_step_is_known_to_the_scan() {
        let scan = Scan::new();
        for case in load_shipped_cases().expect("the cases load") {
            for step in &case.steps {
                let kind = step.kind();
                assert!(
                    scan.reached_by(kind).is_some(),
                    "steps::mod does not dispatch {kind}"
                );
            }
        }
    }

    /// A case may name only clauses its steps can report.
    #[test]
    fn no_case_claims_a_clause_it_cannot_report() {
        let coverage = measured();
        let claims = coverage.unevaluated_claims();
        assert!(claims.is_empty(), "claimed, not evaluated: {claims:#?}");
    }

    /// docs/coverage.md holds today's table between its markers.
    #[test]
    fn the_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/coverage.md");
        let doc = std::fs::read_to_string(&path).expect("docs/coverage.md");
        let (begin, end) = ("<!-- BEGIN coverage", "<!-- END coverage -->");
        let head = doc
            .find(begin)
            .and_then(|at| doc[at..].find('\n').map(|n| at + n + 1));
        let (Some(head), Some(tail)) = (head, doc.find(end)) else {
            panic!("docs/coverage.md lost its markers");
        };
        let fresh = format!("{}{}{}", &doc[..head], measured().markdown(), &doc[tail..]);
        if std::env::var_os("NBD_CONFORM_WRITE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, fresh).expect("write docs/coverage.md");
        } else {
            assert!(
                doc == fresh,
                "docs/coverage.md is stale: NBD_CONFORM_WRITE_DOCS=1 cargo test --lib coverage"
            );
        }
    }

    #[test]
    fn every_expectation_is_graded_under_a_clause_its_case_names() {
        let cases = load_shipped_cases().expect("the cases load");
        let unnamed = Coverage::unnamed_expectations(&cases);
        assert!(
            unnamed.is_empty(),
            "name these in the case's clauses: {unnamed:#?}"
        );
    }

    /// Every clause a check can raise has a fault or scripted peer that makes it fire under
    /// that id (the `fault::` and `selftest::scripted::` trials prove each one does).
    #[test]
    fn every_raisable_clause_is_shown_to_fire() {
        let unproven = measured().unproven();
        assert!(
            unproven.is_empty(),
            "no fault or scripted peer proves: {unproven:?}"
        );
    }

    /// A clause left out as not observable says why.
    #[test]
    fn every_unobservable_clause_says_why() {
        for c in crate::clauses::CLAUSES {
            assert!(c.unobservable.is_none_or(|why| why.len() > 10), "{}", c.id);
            assert!(
                c.reported_as.is_none_or(|(id, why)| {
                    crate::clauses::clause(id).is_some() && why.len() > 10
                }),
                "{}",
                c.id
            );
        }
    }

    #[test]
    fn a_clause_no_case_names_is_not_counted_as_evaluated() {
        let c = measured();
        let row = c.rows.iter().find(|r| r.clause.id == "HS-PORT-1").unwrap();
        assert!(!row.observable() && row.evaluated_by.is_empty());
        let must = c.tally(Level::Must);
        assert!(
            must.evaluated <= must.observable && must.observable > 50,
            "{must:?}"
        );
    }
}
