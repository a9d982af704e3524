//! The one test binary (libtest-mimic, `harness = false`).
//!
//! Without a target, every case runs against every local server that is installed (the
//! reference server in both dialects, qemu-nbd, nbdkit, nbd-server), and each result is
//! compared with its committed insta snapshot when the server is at the pinned version. The
//! reference server must pass every case. The self-tests (codec properties, hostile servers,
//! interop with libnbd) run here too.
//!
//! With `--target HOST:PORT` (or `NBD_TARGET`, for nextest), the same cases run against that
//! server instead; a case fails its trial when it grades fail (or warn under `--strict`), and
//! grades `unsupported` show as ignored. `--spawn TEMPLATE` (`NBD_SPAWN`) does the same with a
//! server the harness starts per fixture from a command template, so the fixture-truth checks
//! apply too. Snapshots are never compared for third-party servers. Cases that write run on a
//! target only with `--writable` (`NBD_WRITABLE`), each with the export to itself. That path
//! is the public `nbd_conform::harness::Harness`, the one an implementer's crate runs; its
//! options (timeouts, `--only`, …) are the ones this binary takes.

mod bad_input;
mod ci_recipe;
mod cli_output;
mod faults;
mod hostile;
mod install;
mod interop;
mod interrupts;
mod known_failing;
mod launchers;
mod min_block;
mod one_grade;
mod readme;
mod real_servers;
mod report_formats;
mod scripted;
mod serve_attacks;
mod support;
mod third_party;
mod variants;
mod verdicts;
mod wire;

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use nbd_conform::engine::case::{load_suite_cases, Case};
use nbd_conform::engine::outcome::{CaseResult, Grade};
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::{run_on_local, snapshot_text};
use nbd_conform::harness::Harness;
use nbd_conform::launch::{Pool, ServerKind};
use nbd_conform::Dialect;

/// Server versions whose snapshots are committed. Another version runs the cases but does not
/// compare snapshots (its behaviour may legitimately differ).
pub(crate) const PINNED: &[(ServerKind, &str)] = &[
    (ServerKind::QemuNbd, "10.0.2"),
    (ServerKind::Nbdkit, "1.32.5"),
    (ServerKind::NbdServer, "3.24"),
];

fn main() {
    let harness = Harness::from_args();
    let settings: Settings = harness.settings();
    let cases = match load_suite_cases() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot load cases: {e}");
            std::process::exit(2);
        }
    };
    let mut trials = Vec::new();
    match harness.has_server() {
        // A server named (--target, --spawn): the cases run against it through the public
        // harness, exactly as in an implementer's crate.
        true => harness.run(),
        false => {
            let ignored = harness.server_options_given();
            if !ignored.is_empty() {
                eprintln!(
                    "{}: for a --target or --spawn server only; without one, choose trials by \
                     name: cargo test --test conformance -- PATTERN",
                    ignored.join(", ")
                );
                std::process::exit(2);
            }
            for kind in ServerKind::ALL {
                let Some(version) = kind.installed_version() else {
                    let why = kind.not_installed();
                    if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
                        trials.push(Trial::test(
                            format!("{}::installed", kind.name()),
                            move || Err(why.into()),
                        ));
                    } else {
                        eprintln!("SKIP: {why}");
                        trials.extend(not_installed_trials(kind, &cases));
                    }
                    continue;
                };
                for dialect in kind.dialects() {
                    for case in cases.iter().filter(|c| c.dialect == *dialect) {
                        trials.push(local_trial(
                            case.clone(),
                            kind,
                            *dialect,
                            version.clone(),
                            settings,
                        ));
                    }
                }
            }
            trials.extend(wire::trials());
            trials.extend(scripted::trials());
            trials.extend(one_grade::trials());
            trials.extend(hostile::trials());
            trials.extend(interop::trials());
            trials.extend(launchers::trials(&cases, settings));
            trials.extend(third_party::trials(&cases, settings));
            trials.extend(real_servers::trials(&cases, settings));
            trials.extend(min_block::trials(&cases, settings));
            trials.extend(faults::trials(&cases));
            trials.extend(variants::trials(&cases));
            trials.extend(verdicts::trials());
            trials.extend(known_failing::trials());
            trials.extend(serve_attacks::trials());
            trials.extend(bad_input::trials());
            trials.extend(cli_output::trials());
            trials.extend(ci_recipe::trials());
            trials.extend(report_formats::trials());
            trials.extend(readme::trials());
            trials.extend(interrupts::trials());
            trials.extend(install::trials());
        }
    }
    let conclusion = libtest_mimic::run(harness.arguments(), trials);
    Pool::global().shutdown_all();
    conclusion.exit();
}

/// The trials a missing server would have had, ignored, so that `cargo test` shows them as
/// not run rather than passed; run anyway (`--include-ignored`), each fails with the reason.
fn not_installed_trials(kind: ServerKind, cases: &[Case]) -> Vec<Trial> {
    let mut trials = Vec::new();
    for dialect in kind.dialects() {
        for case in cases.iter().filter(|c| c.dialect == *dialect) {
            let why = kind.not_installed();
            trials.push(
                Trial::test(local_trial_name(kind, *dialect, case), move || {
                    Err(why.into())
                })
                .with_kind(case.level())
                .with_ignored_flag(true),
            );
        }
    }
    trials
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn local_trial(
    case: Case,
    kind: ServerKind,
    dialect: Dialect,
    version: String,
    settings: Settings,
) -> Trial {
    let name = local_trial_name(kind, dialect, &case);
    let level = case.level();
    Trial::test(name, move || {
        let (result, _) = runtime().block_on(run_on_local(&case, kind, dialect, settings));
        let pinned = kind == ServerKind::Reference
            || (case.races.is_none() && PINNED.iter().any(|(k, v)| *k == kind && *v == version));
        if pinned {
            assert_snapshot(&case, kind, dialect, &result)?;
        }
        judge_local(kind, &result)
    })
    .with_kind(level)
}

/// `qemu-nbd::bs.multi.req-one`, `reference::draft/draft.dirty.map-mixed`.
fn local_trial_name(kind: ServerKind, dialect: Dialect, case: &Case) -> String {
    let dialect_part = match dialect {
        Dialect::Standard => "",
        Dialect::Draft => "draft/",
    };
    format!("{}::{dialect_part}{}", kind.name(), case.id)
}

/// The reference server must pass; any server may not make the harness error out.
fn judge_local(kind: ServerKind, result: &CaseResult) -> Result<(), Failed> {
    let bad = match result.grade {
        Grade::Error => true,
        Grade::Fail | Grade::Warn => kind == ServerKind::Reference,
        _ => false,
    };
    if bad {
        return Err(describe(result).into());
    }
    Ok(())
}

/// Why a trial failed: the same text a snapshot holds (grade, findings, transcript).
fn describe(result: &CaseResult) -> String {
    snapshot_text(result)
}

fn assert_snapshot(
    case: &Case,
    kind: ServerKind,
    dialect: Dialect,
    result: &CaseResult,
) -> Result<(), Failed> {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let suffix = match dialect {
        Dialect::Standard => kind.name().to_owned(),
        Dialect::Draft => format!("{}-draft", kind.name()),
    };
    settings.set_snapshot_suffix(suffix);
    settings.set_description(format!("{}: {}", case.id, case.title));
    let text = snapshot_text(result);
    let name = case.id.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name, text))
    }))
    .map_err(|_| {
        Failed::from(format!(
            "snapshot of {} on {} changed (review with cargo insta review, or INSTA_UPDATE=always)",
            case.id,
            kind.name()
        ))
    })
}
