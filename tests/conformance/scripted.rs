//! The scripted proofs (`nbd_conform::scripted::proofs()`): each runs its case against a
//! scripted server that breaks one rule no fault of the reference server breaks, and asserts
//! the case reports that clause, graded as its level says (not `error`). A peer's script is
//! written for its case's fixture, so the case is graded with that fixture's truth.

use std::time::Duration;

use libtest_mimic::{Failed, Trial};

use nbd_conform::engine::case::{load_suite_cases, Case};
use nbd_conform::engine::outcome::{CaseResult, Grade};
use nbd_conform::engine::run::{run_case, Settings, TargetSpec};
use nbd_conform::scripted::{proofs, Peer, Proof};

/// How long a case may take against a peer: its reads time out after 2 s.
const CASE_BOUND: Duration = Duration::from_secs(20);

/// Runs `case` against `peer`, graded with the truth of the case's fixture (which the peer's
/// script stands for), with 2 s deadlines.
pub fn against_peer(peer: Peer, case: &Case) -> Result<CaseResult, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let peer = peer.listen()?;
        let spec = TargetSpec {
            target: peer.target.clone(),
            dialect: case.dialect,
            truth: nbd_conform::fixtures::find(&case.fixture)
                .ok()
                .map(|f| std::sync::Arc::new(f.truth())),
            bitmaps: Vec::new(),
        };
        let settings = Settings {
            timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(2),
            // The export is the peer's script: nothing of anyone's is written.
            writable: true,
            ..Settings::default()
        };
        Ok::<_, String>(run_case(case, &spec, settings).await.0)
    })
}

fn prove(proof: &Proof, case: &Case) -> Result<(), Failed> {
    let started = std::time::Instant::now();
    let result = against_peer((proof.peer)(), case)?;
    let want = proof
        .clause
        .clause()
        .map_or(Grade::Fail, |c| Grade::for_broken(c.level));
    let clauses: Vec<&str> = result.findings.iter().map(|f| f.clause.as_str()).collect();
    let reported = result
        .findings
        .iter()
        .any(|f| f.clause == proof.clause && f.grade == want);
    if result.grade != want || !reported {
        return Err(format!(
            "{}: expected {want} under {}; got {} with {clauses:?} ({})\n{}",
            case.id,
            proof.clause,
            result.grade,
            result.note.as_deref().unwrap_or("no note"),
            result.transcript.join("\n")
        )
        .into());
    }
    if started.elapsed() > CASE_BOUND {
        return Err(format!("took {:.1?}, over {CASE_BOUND:?}", started.elapsed()).into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let cases = load_suite_cases().unwrap_or_default();
    proofs()
        .map(|proof| {
            let case = cases.iter().find(|c| c.id == proof.case).cloned();
            Trial::test(format!("selftest::scripted::{}", proof.name), move || {
                let case = case.ok_or(format!("no case {}", proof.case))?;
                prove(proof, &case)
            })
        })
        .collect()
}
