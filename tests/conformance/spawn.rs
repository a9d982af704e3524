//! `--spawn` templates against the launchers the harness knows: a server started from a
//! template must be graded exactly as the same server started by its own launcher, case by
//! case, finding by finding. Otherwise a template user would test a different thing than the
//! committed snapshots describe.

use libtest_mimic::{Failed, Trial};

use nbd_conform::engine::case::Case;
use nbd_conform::engine::outcome::CaseResult;
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::run_in_pool;
use nbd_conform::launch::{Launcher, Pool, ServerKind, SpawnTemplate};
use nbd_conform::Dialect;

use crate::support::have;

/// The command line nbdkit's own launcher uses (`src/launch/process.rs`), as a template.
const NBDKIT_TEMPLATE: &str = "nbdkit -f --exit-with-parent -r -U {socket} file {raw}";

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let cases: Vec<Case> = cases
        .iter()
        .filter(|c| c.dialect == Dialect::Standard)
        .cloned()
        .collect();
    vec![Trial::test(
        "selftest::spawn::nbdkit_template_is_graded_like_the_nbdkit_launcher",
        move || grades_match(&cases, settings),
    )]
}

fn grades_match(cases: &[Case], settings: Settings) -> Result<(), Failed> {
    if !have("nbdkit") {
        return Ok(());
    }
    let template = SpawnTemplate::parse(NBDKIT_TEMPLATE).map_err(Failed::from)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    let (known_launcher, spawn_launcher) = (
        Launcher::Known(ServerKind::Nbdkit),
        Launcher::Spawn(template),
    );
    // Servers of our own: the nbdkit trials running beside this one crash the global pool's
    // nbdkit on purpose (CVE-2025-47711), which would change grades under our feet.
    let pool = Pool::default();
    let mut differences = Vec::new();
    let mut counted = 0;
    runtime.block_on(async {
        for case in cases {
            let std = Dialect::Standard;
            let (known, _) = run_in_pool(&pool, case, &known_launcher, std, settings).await;
            let (spawned, _) = run_in_pool(&pool, case, &spawn_launcher, std, settings).await;
            counted += 1;
            if verdict(&known) != verdict(&spawned) {
                differences.push(format!(
                    "{}:\n  launcher: {}\n  template: {}",
                    case.id,
                    verdict(&known),
                    verdict(&spawned)
                ));
            }
        }
    });
    pool.shutdown_all();
    if counted == 0 {
        return Err("no standard-dialect case to compare".into());
    }
    if differences.is_empty() {
        eprintln!("spawned nbdkit graded like the launcher's on all {counted} cases");
        Ok(())
    } else {
        Err(format!(
            "{} of {counted} cases graded differently:\n{}",
            differences.len(),
            differences.join("\n")
        )
        .into())
    }
}

/// Grade, the clause of each finding, and the note: what a report says of a case.
fn verdict(result: &CaseResult) -> String {
    let findings: Vec<String> = result
        .findings
        .iter()
        .map(|f| format!("{} {}", f.grade.as_str(), f.clause))
        .collect();
    format!(
        "{} [{}] {}",
        result.grade.as_str(),
        findings.join(", "),
        result.note.as_deref().unwrap_or("")
    )
}
