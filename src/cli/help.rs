//! The text that closes `nbd-conform run --help`: exit codes (from [`exit::ALL`], so that the
//! text cannot drift from the constants), the environment variables `run` reads, and two
//! examples.

use std::fmt::Write as _;

use nbd_conform::report::exit;

/// The environment variables `run` reads, with what each chooses.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "NBD_CONFORM_CASES",
        "a cases directory to run instead of the cases built into the binary",
    ),
    (
        "NBD_CONFORM_FIXTURES",
        "a fixture layouts directory to use instead of the layouts built into the binary",
    ),
    (
        "NBD_CONFORM_CACHE",
        "where built fixture images are cached (default: $XDG_CACHE_HOME/nbd-conform/fixtures, else ~/.cache/nbd-conform/fixtures)",
    ),
    (
        "NBD_CONFORM_KNOWN_FAILING",
        "a known-failing list, as --known-failing FILE",
    ),
    (
        "NBD_CONFORM_KNOWN_FLAKY",
        "a known-flaky list, as --known-flaky FILE",
    ),
    (
        "TMPDIR",
        "where launched servers get their private temp dirs (sockets, logs)",
    ),
];

const EXAMPLES: &str = "  # every case against every local server installed, with reports:
  nbd-conform run --report report.md --json report.json --junit junit.xml

  # a server you run (qemu-nbd -t -x disk -B mybm disk.qcow2), its bitmap mybm in the bitmap cases:
  nbd-conform run --target nbd://127.0.0.1:10809/disk --bitmap mybm --report -";

/// `run --help`'s closing text.
pub fn run_after_help() -> String {
    let mut text = String::from("Exit codes:\n");
    for (code, meaning) in exit::ALL {
        let _ = writeln!(text, "  {code}  {meaning}");
    }
    text.push_str("\nEnvironment:\n");
    let width = ENVIRONMENT
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    for (name, meaning) in ENVIRONMENT {
        let _ = writeln!(text, "  {name:<width$}  {meaning}");
    }
    text.push_str("\nExamples:\n");
    text.push_str(EXAMPLES);
    text
}
