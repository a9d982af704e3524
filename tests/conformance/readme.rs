//! The README's table of the local peers is what the command printed next to it prints: the
//! command is read from the README and run (the built binary first on `PATH`, from the source
//! tree, as a reader would run it there), and its output must equal the table. Only where every
//! local peer is at the pinned version of its snapshots (`PINNED`): elsewhere the counts are
//! another machine's, and the trial is ignored saying so.

use std::path::Path;
use std::time::Duration;

use libtest_mimic::{Failed, Trial};

use crate::support::bin;
use crate::PINNED;

pub fn trials() -> Vec<Trial> {
    let unpinned: Vec<String> = PINNED
        .iter()
        .filter(|(kind, version)| kind.installed_version().as_deref() != Some(*version))
        .map(|(kind, version)| format!("{} {version}", kind.name()))
        .collect();
    let trial = Trial::test(
        "selftest::readme::the_peers_table_is_what_its_command_prints",
        the_peers_table_is_what_its_command_prints,
    );
    if unpinned.is_empty() {
        vec![trial]
    } else {
        eprintln!(
            "SKIP selftest::readme: the README's table is of {}; not installed here",
            unpinned.join(", ")
        );
        vec![trial.with_ignored_flag(true)]
    }
}

fn the_peers_table_is_what_its_command_prints() -> Result<(), Failed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(|e| e.to_string())?;
    let table = between(
        &readme,
        "<!-- interop-table -->\n",
        "<!-- /interop-table -->",
    )?;
    let block = between(&readme, "<!-- interop-table-command -->\n```sh\n", "```")?;
    let command = block.trim();
    if !command.starts_with("nbd-conform run ") {
        return Err(format!("the README's table command is not a run: {command}").into());
    }
    let bin_dir = Path::new(bin())
        .parent()
        .ok_or("the binary has no directory")?;
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .map_err(|e| e.to_string())?;
    let out = assert_cmd::Command::new("sh")
        .args(["-c", command])
        .current_dir(root)
        .env("PATH", path)
        .timeout(Duration::from_secs(300))
        .output()
        .map_err(|e| e.to_string())?;
    let printed = String::from_utf8_lossy(&out.stdout);
    if printed != table {
        return Err(format!(
            "the README's table (between <!-- interop-table --> marks) is not what its command \
             prints now; replace it with:\n{printed}\n(it says:\n{table})"
        )
        .into());
    }
    Ok(())
}

/// The text of `text` after `start` and before the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Result<&'a str, Failed> {
    let from = text
        .find(start)
        .ok_or(format!("the README lacks {start:?}"))?
        + start.len();
    let len = text[from..]
        .find(end)
        .ok_or(format!("the README lacks {end:?} after {start:?}"))?;
    Ok(&text[from..from + len])
}
