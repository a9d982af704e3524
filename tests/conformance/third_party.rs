//! Cases against exports the suite did not build (`--target`): another export name, another
//! size. A conformant server must get no fail, warn or error whatever its export looks like;
//! a case that cannot mean on that export what it means on its fixture grades unsupported.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use nbd_conform::client::Target;
use nbd_conform::engine::case::Case;
use nbd_conform::engine::outcome::Grade;
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::{run_on_target, run_subject, Subject};
use nbd_conform::launch::{Launcher, SpawnTemplate};
use nbd_conform::Dialect;

use crate::support::{bin, start_peer, unix_uri, why};

/// Export sizes no fixture has: empty, odd, odd past 1 MiB, plain, just over 4 GiB, 8 GiB.
const SHAPES: [u64; 6] = [0, 1000, 1_000_448, 64 << 20, (4 << 30) + 1, 8 << 30];
/// Minimum block sizes, advertised by the reference server's min-block variants.
const MINIMUM_BLOCKS: [(u64, Option<&str>); 3] = [
    (1, None),
    (512, Some("min-block-512")),
    (4096, Some("min-block-4096")),
];

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let all = cases.to_vec();
    let cases = crate::support::standard_cases(cases);
    let big = cases.clone();
    let mut trials = shape_trials(&cases, settings);
    trials.extend(spawn_trials(&cases, settings));
    let draft: Vec<Case> = all
        .iter()
        .filter(|c| c.dialect == Dialect::Draft)
        .cloned()
        .collect();
    trials.push(Trial::test(
        "selftest::target::a_draft_server_that_tracks_dirtiness_gets_no_false_verdict",
        move || draft_fair(&draft, settings),
    ));
    let backend: Vec<Case> = cases
        .iter()
        .filter(|c| c.id.starts_with("bs.backend."))
        .cloned()
        .collect();
    trials.push(Trial::test(
        "selftest::target::a_server_whose_block_status_fails_passes_the_backend_cases",
        move || backend_fails(&backend, settings),
    ));
    trials.extend([
        Trial::test(
            "selftest::target::a_small_export_named_otherwise_gets_no_false_verdict",
            move || {
                // 64 MiB, named "img": cases about data past 4 GiB cannot run here.
                every_case_fair(
                    &cases,
                    settings,
                    64 << 20,
                    "img",
                    "needs an export of at least",
                )
            },
        ),
        Trial::test(
            "selftest::target::a_big_export_gets_no_false_verdict",
            move || {
                // 4 GiB + 1 MiB: a request that overruns the 4 MiB fixtures fits here.
                every_case_fair(
                    &big,
                    settings,
                    4097 << 20,
                    "disk",
                    "meant to reach past the end",
                )
            },
        ),
    ]);
    trials
}

/// Every case on every export shape × minimum block size, through `--target` (no fixture
/// truth): a conformant server gets no fail, warn or error anywhere (issue 7: 8 GiB once
/// went out as 0, a 4 KiB minimum block was broken by the suite itself, `size-512` wrapped on
/// an empty export).
fn shape_trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let mut trials = Vec::new();
    for size in SHAPES {
        for (minimum, variant) in MINIMUM_BLOCKS {
            let cases = cases.to_vec();
            trials.push(Trial::test(
                format!("selftest::target::shape-{size}-bytes-min-block-{minimum}"),
                move || shape_fair(&cases, settings, size, variant),
            ));
        }
    }
    trials
}

/// A 2016-draft server we did not set up, which tracks dirtiness (a bitmap): its CLEAN answer
/// to the dirtiness query is correct, though the fixture the case names has no bitmap (issue
/// 7: `draft.fallback.dirty-without-bitmap` once failed it).
fn draft_fair(cases: &[Case], settings: Settings) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let extra = ["--dialect", "draft", "--bitmap", "bm0"];
    let (_server, subject) = serve_target(dir.path(), 4 << 20, &extra, Dialect::Draft)?;
    run_fair(&subject, cases, settings, "a draft server with a bitmap")
}

/// The reference server with `--fail-block-status` (an EIO ERROR_OFFSET inside every block
/// status): the cases about backend failures must pass there, not be unsupported.
fn backend_fails(cases: &[Case], settings: Settings) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let extra = ["--fail-block-status"];
    let (_server, subject) = serve_target(dir.path(), 4 << 20, &extra, Dialect::Standard)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(run_subject(&subject, cases, settings, 4));
    let not_passed: Vec<String> = result
        .cases
        .iter()
        .filter(|r| r.grade != Grade::Pass)
        .map(|r| format!("{} {}: {}", r.grade.as_str(), r.id, why(r)))
        .collect();
    if cases.is_empty() || !not_passed.is_empty() {
        return Err(format!(
            "backend cases on a failing server:\n{}",
            not_passed.join("\n")
        )
        .into());
    }
    Ok(())
}

/// Runs `cases` on `subject` and requires a fair verdict: no fail, warn or error, and at least
/// one pass. `what` names the server in messages.
fn run_fair(
    subject: &Subject,
    cases: &[Case],
    settings: Settings,
    what: &str,
) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(run_subject(subject, cases, settings, 16));
    let unfair: Vec<String> = result
        .cases
        .iter()
        .filter(|r| matches!(r.grade, Grade::Fail | Grade::Warn | Grade::Error))
        .map(|r| format!("{} {}: {}", r.grade.as_str(), r.id, why(r)))
        .collect();
    let tested = result
        .cases
        .iter()
        .filter(|r| r.grade == Grade::Pass)
        .count();
    eprintln!("{what}: {tested} pass, {} not fair", unfair.len());
    if !unfair.is_empty() {
        return Err(format!("{what}:\n{}", unfair.join("\n")).into());
    }
    if tested == 0 {
        return Err(format!("{what}: no case passed, nothing was tested").into());
    }
    Ok(())
}

/// The reference server (`nbd-conform serve`) on a sparse image of `size` bytes with `extra`
/// arguments, as a `--target` subject; the server lives as long as the returned guard.
pub(crate) fn serve_target(
    dir: &Path,
    size: u64,
    extra: &[&str],
    dialect: Dialect,
) -> Result<(crate::support::Peer, Subject), Failed> {
    let image = dir.join("disk.raw");
    write_sparse_image(&image, size).map_err(|e| e.to_string())?;
    let socket = dir.join("nbd.sock");
    let (image_arg, socket_arg) = (image.to_string_lossy(), socket.to_string_lossy());
    let mut args = vec![
        "serve",
        &image_arg,
        "--socket",
        &socket_arg,
        "--export",
        "disk",
    ];
    args.extend(extra);
    let server = start_peer(bin(), &args, &socket);
    let target: Target = unix_uri(&socket, "disk")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let subject = Subject::Remote {
        target,
        dialect,
        bitmaps: Vec::new(),
    };
    Ok((server, subject))
}

/// The same through `--spawn`: the reference server started from a template on every
/// fixture, with each minimum block size, so that the fixture-truth checks run too.
fn spawn_trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    MINIMUM_BLOCKS
        .into_iter()
        .map(|(minimum, variant)| {
            let cases = cases.to_vec();
            Trial::test(
                format!("selftest::spawn::every-fixture-min-block-{minimum}"),
                move || spawn_fair(&cases, settings, variant),
            )
        })
        .collect()
}

fn spawn_fair(cases: &[Case], settings: Settings, variant: Option<&str>) -> Result<(), Failed> {
    let mut template = format!(
        "{} serve {{raw}} --socket {{socket}} --export {{export}}",
        bin()
    );
    if let Some(v) = variant {
        template.push_str(&format!(" --variant {v}"));
    }
    let template = SpawnTemplate::parse(&template).map_err(|e| e.to_string())?;
    let subject = Subject::Launched {
        launcher: Launcher::Spawn(template),
        dialect: Dialect::Standard,
    };
    // The spawned servers live in the global pool, which other trials share: they are stopped
    // with it when the test binary ends.
    let what = format!(
        "--spawn on every fixture, {}",
        variant.unwrap_or("minimum block 1")
    );
    run_fair(&subject, cases, settings, &what)
}

fn shape_fair(
    cases: &[Case],
    settings: Settings,
    size: u64,
    variant: Option<&str>,
) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut extra = vec!["--bitmap", "bm0"];
    if let Some(v) = variant {
        extra.extend(["--variant", v]);
    }
    let (_server, subject) = serve_target(dir.path(), size, &extra, Dialect::Standard)?;
    // The verdicts are the point here, not reading 8 GiB of zeros back.
    let settings = Settings {
        read_back_budget: 16 << 20,
        ..settings
    };
    let what = format!(
        "the reference server ({}) on a {size}-byte export",
        variant.unwrap_or("minimum block 1")
    );
    run_fair(&subject, cases, settings, &what)
}

fn every_case_fair(
    cases: &[Case],
    settings: Settings,
    size: u64,
    export: &str,
    expected_note: &str,
) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("disk.raw");
    write_sparse_image(&image, size).map_err(|e| e.to_string())?;
    let socket = dir.path().join("nbd.sock");
    let (image_arg, socket_arg) = (image.to_string_lossy(), socket.to_string_lossy());
    let args = [
        "serve",
        &image_arg,
        "--socket",
        &socket_arg,
        "--export",
        export,
        "--bitmap",
        "bm0",
    ];
    let _server = start_peer(bin(), &args, &socket);
    let target: Target = unix_uri(&socket, export)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut unfair = Vec::new();
    let mut noted = 0;
    for case in cases {
        let (result, _) =
            runtime.block_on(run_on_target(case, &target, Dialect::Standard, settings));
        match result.grade {
            Grade::Fail | Grade::Warn | Grade::Error => {
                let why = result.deciding().map_or_else(
                    || result.note.clone().unwrap_or_default(),
                    |f| {
                        format!(
                            "{}: expected {}; observed {}",
                            f.clause, f.expected, f.observed
                        )
                    },
                );
                unfair.push(format!("{} {}: {why}", result.grade.as_str(), case.id));
            }
            Grade::Unsupported
                if result
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains(expected_note)) =>
            {
                noted += 1
            }
            _ => {}
        }
    }
    if !unfair.is_empty() {
        return Err(format!(
            "the reference server on a {size}-byte export {export:?}:\n{}",
            unfair.join("\n")
        )
        .into());
    }
    if noted == 0 {
        return Err(
            format!("no case was set aside with {expected_note:?}: the rule never ran").into(),
        );
    }
    eprintln!("{size}-byte export {export:?}: {noted} cases set aside ({expected_note})");
    Ok(())
}

/// A sparse image with a little data at the start and at 2 MiB (where they fit).
fn write_sparse_image(path: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    for (at, data) in [(0u64, &b"data at 0"[..]), (2 << 20, &b"data at 2M"[..])] {
        if at + data.len() as u64 <= size {
            file.write_all_at(data, at)?;
        }
    }
    Ok(())
}
