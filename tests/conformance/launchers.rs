//! Other ways of launching a server must not change its verdicts: a server started from a
//! `--spawn` template, or run in a container, is graded case by case, finding by finding,
//! exactly as the same server (same version) started by the harness's own process launcher.
//! Otherwise a user of those launchers would test something other than what the committed
//! snapshots describe.

use libtest_mimic::{Failed, Trial};

use nbd_conform::engine::case::{Case, Need};
use nbd_conform::engine::outcome::{CaseResult, Grade};
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::run_in_pool;
use nbd_conform::launch::{
    container_version, Launcher, Pool, ServerKind, SpawnTemplate, DEFAULT_IMAGE,
};
use nbd_conform::Dialect;

use crate::support::have;

/// The command line nbdkit's own launcher uses (`src/launch/process.rs`), as a template.
const NBDKIT_TEMPLATE: &str = "nbdkit -f --exit-with-parent -r -U {socket} file {raw}";

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let standard = crate::support::standard_cases(cases);
    let mut trials = Vec::new();
    let cases = standard.clone();
    trials.push(Trial::test(
        "selftest::launchers::nbdkit_template_is_graded_like_the_nbdkit_launcher",
        move || {
            if !have("nbdkit") {
                return Ok(());
            }
            // A template says itself whether it serves writable: the launcher's read-only
            // command for the cases that only read, the same without -r for those that write
            // (the harness hands either one a private copy of the fixture for them).
            let (writers, readers): (Vec<Case>, Vec<Case>) = cases
                .iter()
                .cloned()
                .partition(|c| c.needs().contains(&Need::Writable));
            for (cases, template) in [
                (readers, NBDKIT_TEMPLATE.to_owned()),
                (writers, NBDKIT_TEMPLATE.replace(" -r", "")),
            ] {
                let template = SpawnTemplate::parse(&template).map_err(Failed::from)?;
                same_grades(
                    &cases,
                    settings,
                    ServerKind::Nbdkit,
                    Launcher::Spawn(template),
                )?;
            }
            Ok(())
        },
    ));
    // The image has the same nbdkit (1.32.5) and nbd-server (3.24) as the host (both from
    // bookworm); its qemu-nbd is bookworm's 7.2, the host's the backported 10.0.
    for kind in [ServerKind::Nbdkit, ServerKind::NbdServer] {
        let cases = standard.clone();
        trials.push(Trial::test(
            format!(
                "selftest::launchers::{}_in_a_container_is_graded_like_the_process",
                kind.name()
            ),
            move || {
                let Some(image) = image_with_same(kind)? else {
                    return Ok(());
                };
                same_grades(&cases, settings, kind, Launcher::Container { kind, image })
            },
        ));
    }
    let cases = standard;
    trials.push(Trial::test(
        "selftest::launchers::qemu_nbd_in_a_container_runs_every_case",
        move || {
            if !have_image()? {
                return Ok(());
            }
            let launcher = Launcher::Container {
                kind: ServerKind::QemuNbd,
                image: DEFAULT_IMAGE.to_owned(),
            };
            let results = run_all(&cases, settings, &[launcher])?;
            let errors: Vec<String> = results[0]
                .iter()
                .filter(|r| r.grade == Grade::Error)
                .map(|r| format!("{}: {}", r.id, r.note.as_deref().unwrap_or("")))
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("\n").into())
            }
        },
    ));
    trials
}

/// The image, if it holds the same version of `kind` as the host (else the comparison means
/// nothing and the trial says so).
fn image_with_same(kind: ServerKind) -> Result<Option<String>, Failed> {
    if !have(kind.name()) || !have_image()? {
        return Ok(None);
    }
    let inside = container_version(kind, DEFAULT_IMAGE).map_err(|e| e.to_string())?;
    let outside = kind.installed_version().unwrap_or_default();
    if inside != outside {
        return Err(format!(
            "{} is {inside} in {DEFAULT_IMAGE} but {outside} here: rebuild the image \
             (docker/build-image.sh --force) or compare another server",
            kind.name()
        )
        .into());
    }
    Ok(Some(DEFAULT_IMAGE.to_owned()))
}

/// Whether the image is there; under NBD_CONFORM_REQUIRE_PEERS=1 (CI) its absence fails.
fn have_image() -> Result<bool, Failed> {
    match container_version(ServerKind::Nbdkit, DEFAULT_IMAGE) {
        Ok(_) => Ok(true),
        Err(e) if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") => {
            Err(format!("required peer missing: {e}").into())
        }
        Err(e) => {
            eprintln!("SKIP: {e}");
            Ok(false)
        }
    }
}

fn same_grades(
    cases: &[Case],
    settings: Settings,
    kind: ServerKind,
    other: Launcher,
) -> Result<(), Failed> {
    let name = other.name();
    let results = run_all(cases, settings, &[Launcher::Known(kind), other])?;
    let mut differences = Vec::new();
    for (known, launched) in results[0].iter().zip(&results[1]) {
        if verdict(known) != verdict(launched) {
            differences.push(format!(
                "{}:\n  {}: {}\n  {name}: {}",
                known.id,
                kind.name(),
                verdict(known),
                verdict(launched)
            ));
        }
    }
    if results[0].is_empty() {
        return Err("no standard-dialect case to compare".into());
    }
    if differences.is_empty() {
        eprintln!(
            "{name} graded like {} on all {} cases",
            kind.name(),
            results[0].len()
        );
        Ok(())
    } else {
        Err(format!(
            "{} of {} cases graded differently:\n{}",
            differences.len(),
            results[0].len(),
            differences.join("\n")
        )
        .into())
    }
}

/// Every case against each launcher's servers, from a pool of our own: the trials running
/// beside this one crash the global pool's nbdkit on purpose (CVE-2025-47711), which would
/// change grades under our feet.
fn run_all(
    cases: &[Case],
    settings: Settings,
    launchers: &[Launcher],
) -> Result<Vec<Vec<CaseResult>>, Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?;
    let pool = Pool::default();
    let results = runtime.block_on(async {
        let mut all = Vec::new();
        for launcher in launchers {
            let mut results = Vec::new();
            for case in cases {
                let std = Dialect::Standard;
                results.push(run_in_pool(&pool, case, launcher, std, settings).await.0);
            }
            all.push(results);
        }
        all
    });
    pool.shutdown_all();
    Ok(results)
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
