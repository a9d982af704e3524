//! Cases against exports the suite did not build (`--target`): another export name, another
//! size. A conformant server must get no fail, warn or error whatever its export looks like;
//! a case that cannot mean on that export what it means on its fixture grades unsupported.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use nbd_conform::client::Target;
use nbd_conform::engine::case::Case;
use nbd_conform::engine::outcome::Grade;
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::run_on_target;
use nbd_conform::Dialect;

use crate::support::{bin, start_peer, unix_uri};

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let cases: Vec<Case> = cases
        .iter()
        .filter(|c| c.dialect == Dialect::Standard)
        .cloned()
        .collect();
    let big = cases.clone();
    vec![
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
    ]
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

/// A sparse image with a little data at the start and at 2 MiB.
fn write_sparse_image(path: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    file.write_all_at(b"data at 0", 0)?;
    file.write_all_at(b"data at 2M", 2 << 20)?;
    Ok(())
}
