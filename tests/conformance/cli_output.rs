//! The command line a person meets (issue 11 §5), through the binary as they run it: exit codes
//! and messages of report paths checked before the run and failing at the end, `-` as standard
//! output, a closed pipe that ends quietly, the progress line (on a terminal only) and the
//! closing line, a missing peer named once with its package (and ignored, not passed, in
//! `cargo test`), start-up errors told once with a count, `--bitmap` with `--spawn`, and
//! `run --help`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};
use predicates::prelude::*;

use nbd_conform::report::exit;

use crate::support::bin;

/// One quick case of today's dialect on the reference server: what a run needs to have run.
const QUICK: &str = "bs.multi.req-one";

/// Long enough for a one-case run on a cold fixture cache; refusals come long before.
const RUN_BOUND: Duration = Duration::from_secs(120);

/// A refusal before the run comes well within this (no fixture is built, no server started).
const REFUSAL_BOUND: Duration = Duration::from_secs(10);

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::cli::run_help_shows_exit_codes_environment_and_examples",
            run_help,
        ),
        Trial::test(
            "selftest::cli::an_unwritable_report_path_exits_5_before_the_run",
            unwritable_path,
        ),
        Trial::test(
            "selftest::cli::a_report_write_failing_at_the_end_exits_5_the_others_written",
            write_fails_at_the_end,
        ),
        Trial::test(
            "selftest::cli::dash_is_standard_output_never_a_file",
            dash_is_stdout,
        ),
        Trial::test(
            "selftest::cli::a_closed_pipe_ends_list_serve_and_run_quietly",
            closed_pipe,
        ),
        Trial::test(
            "selftest::cli::progress_only_on_a_terminal_and_a_closing_line",
            progress_on_terminal_only,
        ),
        Trial::test(
            "selftest::cli::a_missing_peer_is_named_once_with_its_package",
            missing_peer,
        ),
        Trial::test(
            "selftest::cli::a_missing_peer_is_ignored_not_passed_in_cargo_test",
            missing_peer_in_cargo_test,
        ),
        Trial::test(
            "selftest::cli::identical_start_up_errors_are_told_once_with_a_count",
            start_up_errors_once,
        ),
        Trial::test(
            "selftest::cli::bitmap_needs_a_target_or_a_spawn",
            bitmap_without_server,
        ),
        Trial::test(
            "selftest::cli::bitmap_with_spawn_runs_bitmap_cases_on_the_servers_own",
            bitmap_with_spawn,
        ),
        Trial::test(
            "selftest::cli::bitmap_with_target_runs_bitmap_cases_on_qemu_nbds_own",
            bitmap_with_target,
        ),
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `nbd-conform run` of the quick case on the reference server, with `args` after.
fn quick_run(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--server", "reference", "--dialect", "standard"])
        .args(["--only", QUICK])
        .args(args)
        .timeout(RUN_BOUND);
    cmd
}

/// `run --help` ends with every exit code (as `exit::ALL` has them), the environment
/// variables and two examples.
fn run_help() -> Result<(), Failed> {
    let out = Command::new(bin())
        .args(["run", "--help"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let help = text(&out.stdout);
    let mut want: Vec<String> = exit::ALL
        .iter()
        .map(|(code, meaning)| format!("  {code}  {meaning}"))
        .collect();
    want.extend(
        [
            "Exit codes:",
            "Environment:",
            "NBD_CONFORM_CASES",
            "NBD_CONFORM_CACHE",
            "Examples:\n  # ",
            "nbd-conform run --report report.md",
            "--bitmap mybm",
        ]
        .map(str::to_owned),
    );
    for w in &want {
        if !help.contains(w.as_str()) {
            return Err(format!("run --help lacks {w:?}:\n{help}").into());
        }
    }
    if !exit::ALL.iter().any(|(code, _)| *code == exit::IO) || exit::IO != 5 {
        return Err("exit::IO is 5 and listed in exit::ALL".into());
    }
    Ok(())
}

/// A report path that cannot be written ends the run at once with exit 5, naming the path and
/// the OS's reason; nothing runs (no target line) and no file is left behind.
fn unwritable_path() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let missing = dir.path().join("no-such-dir/report.json");
    let missing_arg = missing.to_string_lossy().into_owned();
    let is_dir = dir.path().to_string_lossy().into_owned();
    for (flag, path, reason) in [
        ("--json", missing_arg.as_str(), "No such file or directory"),
        ("--junit", is_dir.as_str(), "Is a directory"),
    ] {
        let started = Instant::now();
        let out = quick_run(&[flag, path]).assert().code(i32::from(exit::IO));
        let stderr = text(&out.get_output().stderr);
        let said = format!("nbd-conform run: cannot write {path}: {reason}");
        if !stderr.contains(&said) || stderr.contains("reference …") {
            return Err(format!("{flag} {path}: want {said:?} and nothing run: {stderr}").into());
        }
        if started.elapsed() > REFUSAL_BOUND {
            return Err(
                format!("{flag} {path}: refused only after {:?}", started.elapsed()).into(),
            );
        }
    }
    // The check leaves nothing: a new path is created and removed again.
    let fresh = dir.path().join("fresh.md");
    let out = quick_run(&["--report", &fresh.to_string_lossy(), "--json", &missing_arg])
        .assert()
        .code(i32::from(exit::IO));
    drop(out);
    if fresh.exists() {
        return Err("a refused run left an empty report behind".into());
    }
    Ok(())
}

/// /dev/full opens but every write to it fails (ENOSPC): the run goes to its end, the other
/// reports are written, and the exit code is 5, with the path and the reason.
fn write_fails_at_the_end() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let report = dir.path().join("report.md");
    let junit = dir.path().join("junit.xml");
    let out = quick_run(&[
        "--report",
        &report.to_string_lossy(),
        "--json",
        "/dev/full",
        "--junit",
        &junit.to_string_lossy(),
    ])
    .assert()
    .code(i32::from(exit::IO))
    .stderr(predicate::str::contains(
        "nbd-conform run: cannot write /dev/full: No space left on device",
    ))
    .stderr(predicate::str::contains(format!(
        "nbd-conform run: conformant (exit 5); wrote {}, {}",
        report.display(),
        junit.display()
    )));
    drop(out);
    let md = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
    let xml = std::fs::read_to_string(&junit).map_err(|e| e.to_string())?;
    if !md.contains(QUICK) || !xml.contains("<testsuites") {
        return Err("the reports that could be written were not".into());
    }
    // Standard output that cannot be written (`--json - > /dev/full`) is no closed pipe.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .map_err(|e| e.to_string())?;
    let out = std::process::Command::new(bin())
        .args(["run", "--server", "reference", "--dialect", "standard"])
        .args(["--only", QUICK, "--json", "-"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = text(&out.stderr);
    for want in [
        "nbd-conform run: cannot write the JSON report to standard output: No space left",
        "nbd-conform run: conformant (exit 5); wrote none of its reports",
    ] {
        if out.status.code() != Some(i32::from(exit::IO)) || !stderr.contains(want) {
            return Err(format!(
                "--json - > /dev/full: {}, want {want:?}: {stderr}",
                out.status
            )
            .into());
        }
    }
    Ok(())
}

/// `--json -` and `--report -` go to standard output, run in a fresh directory: no file named
/// `-` appears there, and the closing line says where the report went.
fn dash_is_stdout() -> Result<(), Failed> {
    for (flag, looks) in [("--json", "{"), ("--report", "#")] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = quick_run(&[flag, "-"])
            .current_dir(dir.path())
            .assert()
            .code(0)
            .stderr(predicate::str::contains(
                "nbd-conform run: conformant (exit 0); wrote the ",
            ))
            .stderr(predicate::str::contains(" report to standard output"))
            .get_output()
            .clone();
        let stdout = text(&out.stdout);
        if !stdout.trim_start().starts_with(looks) || !stdout.contains(QUICK) {
            return Err(format!(
                "{flag} - wrote {:?} to stdout",
                &stdout[..stdout.len().min(200)]
            )
            .into());
        }
        if flag == "--json" {
            serde_json::from_str::<serde_json::Value>(&stdout)
                .map_err(|e| format!("--json - is not JSON: {e}"))?;
        }
        if dir.path().join("-").exists() {
            return Err(format!("{flag} - wrote a file named `-`").into());
        }
    }
    quick_run(&["--json", "-", "--report", "-"])
        .assert()
        .code(i32::from(exit::USAGE))
        .stderr(predicate::str::contains(
            "only one of --report, --json and --junit can be `-`",
        ));
    Ok(())
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE, at once.
fn closed_pipe() -> Result<(), Failed> {
    for (args, code) in [
        (vec!["list"], 0),
        (vec!["list", "--clauses"], 0),
        (vec!["serve", "--fault", "list"], 0),
        (vec!["serve", "--variant", "list"], 0),
        (
            vec![
                "run",
                "--server",
                "reference",
                "--dialect",
                "standard",
                "--only",
                QUICK,
                "--json",
                "-",
            ],
            // The verdict's: the reader stopping early changes nothing about it.
            0,
        ),
    ] {
        let out = std::process::Command::new(bin())
            .args(&args)
            .stdout(reader_gone()?)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        let stderr = text(&out.stderr);
        if out.status.code() != Some(code)
            || stderr.contains("panicked")
            || stderr.contains("Broken pipe")
        {
            return Err(format!(
                "{args:?} into a closed pipe: {}, stderr {stderr:?}",
                out.status
            )
            .into());
        }
        if args[0] == "run"
            && !stderr.contains(
                "nbd-conform run: conformant (exit 0); wrote the JSON report to standard output",
            )
        {
            return Err(format!("run into a closed pipe: no closing line: {stderr}").into());
        }
    }
    Ok(())
}

/// The write end of a pipe whose read end is closed.
fn reader_gone() -> Result<Stdio, Failed> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().to_string().into());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Ok(Stdio::from(write))
}

/// Piped, standard error has no progress line (no `\r`, no "cases,"), only lines for keeps;
/// on a terminal (util-linux `script` gives one) the line shows the target, cases done of its
/// total and seconds. Both end with the closing line.
fn progress_on_terminal_only() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let report = dir.path().join("report.md");
    let report_arg = report.to_string_lossy().into_owned();
    let closing = format!("nbd-conform run: conformant (exit 0); wrote {report_arg}");
    let out = quick_run(&["--report", &report_arg])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    if stderr.contains('\r') || stderr.contains(" cases, ") || !stderr.contains(&closing) {
        return Err(format!("not a terminal, yet: {stderr:?}").into());
    }
    if !crate::support::have("script") {
        return Ok(());
    }
    let command = format!(
        "{} run --server reference --dialect standard --only bs.multi --report {report_arg}",
        bin()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .timeout(RUN_BOUND)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let seen = text(&out.stdout);
    let total = nbd_conform::engine::case::load_suite_cases()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|c| c.id.starts_with("bs.multi") && c.dialect == nbd_conform::Dialect::Standard)
        .count();
    for want in [
        format!("\r\x1b[K  [1/1] reference: 0/{total} cases, 0 s"),
        format!("  [1/1] reference: {total}/{total} cases, "),
        closing,
    ] {
        if !seen.contains(&want) {
            return Err(format!("on a terminal, want {want:?} in {seen:?}").into());
        }
    }
    Ok(())
}

/// A directory of links to every program on PATH but `without`: a PATH on which those
/// servers are not installed.
fn path_without(without: &[&str]) -> Result<tempfile::TempDir, Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for bin_dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&bin_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = dir.path().join(&name);
            if without.iter().any(|w| name == *w) || link.exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), link);
        }
    }
    Ok(dir)
}

/// `--server nbdkit` without nbdkit: exit 3 at once, naming it and its Debian package once.
/// `--server all` without it (and nbd-server, and qemu-nbd): each named once, skipped, and
/// the reference server still run.
fn missing_peer() -> Result<(), Failed> {
    let bare = path_without(&["nbdkit", "nbd-server", "qemu-nbd"])?;
    let named = "nbdkit is not installed here (Debian: apt-get install nbdkit)";
    let started = Instant::now();
    let out = Command::new(bin())
        .env("PATH", bare.path())
        .args(["run", "--server", "nbdkit", "--only", QUICK])
        .timeout(RUN_BOUND)
        .assert()
        .code(i32::from(exit::COULD_NOT_TEST))
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    if stderr.matches(named).count() != 1 || !stderr.contains("cannot test: ") {
        return Err(
            format!("--server nbdkit, not installed: want {named:?} once: {stderr}").into(),
        );
    }
    if started.elapsed() > REFUSAL_BOUND {
        return Err(format!("--server nbdkit refused only after {:?}", started.elapsed()).into());
    }
    let out = Command::new(bin())
        .env("PATH", bare.path())
        .args([
            "run",
            "--server",
            "all",
            "--dialect",
            "standard",
            "--only",
            QUICK,
        ])
        .timeout(RUN_BOUND)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    for (server, package) in [
        ("nbdkit", "nbdkit"),
        ("nbd-server", "nbd-server"),
        ("qemu-nbd", "qemu-utils"),
    ] {
        let said = format!(
            "nbd-conform run: skipped: {server} is not installed here (Debian: apt-get install {package})"
        );
        if stderr.matches(&said).count() != 1 {
            return Err(format!("--server all: want {said:?} once: {stderr}").into());
        }
    }
    if !stderr.contains("nbd-conform run: reference …") {
        return Err(format!("--server all: the reference server did not run: {stderr}").into());
    }
    Ok(())
}

/// This test binary, asked for its ignored trials with nbdkit off PATH, lists nbdkit's; run
/// anyway, one fails with the reason. Under NBD_CONFORM_REQUIRE_PEERS=1 there is instead one
/// failing `nbdkit::installed` trial, as before.
fn missing_peer_in_cargo_test() -> Result<(), Failed> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bare = path_without(&["nbdkit"])?;
    let list = |require: bool, args: &[&str]| -> Result<std::process::Output, Failed> {
        let mut cmd = std::process::Command::new(&me);
        cmd.env("PATH", bare.path())
            .env_remove("NBD_TARGET")
            .env_remove("NBD_SPAWN")
            .args(args);
        if require {
            cmd.env("NBD_CONFORM_REQUIRE_PEERS", "1");
        } else {
            cmd.env_remove("NBD_CONFORM_REQUIRE_PEERS");
        }
        cmd.output().map_err(|e| e.to_string().into())
    };
    let trial = format!("nbdkit::{QUICK}");
    let out = list(false, &["--list", "--ignored"])?;
    let listed = text(&out.stdout);
    if !listed.contains(&format!("{trial}: test")) || listed.contains("reference::") {
        return Err(format!("--list --ignored, nbdkit missing: {listed}").into());
    }
    let out = list(false, &["--exact", &trial, "--include-ignored"])?;
    let said = text(&out.stdout) + &text(&out.stderr);
    if out.status.success()
        || !said.contains("nbdkit is not installed here (Debian: apt-get install nbdkit)")
    {
        return Err(format!("{trial} run anyway: {} {said}", out.status).into());
    }
    let out = list(true, &["--list"])?;
    let listed = text(&out.stdout);
    if !listed.contains("nbdkit::installed: test") || listed.contains(&trial) {
        return Err(format!("--list, nbdkit missing and required: {listed}").into());
    }
    Ok(())
}

/// A `--spawn` server that cannot start fails every case with the same error but for its
/// temp dir: told once, the dir masked, with the count.
fn start_up_errors_once() -> Result<(), Failed> {
    let out = Command::new(bin())
        .args(["run", "--spawn", "false {socket}", "--only", "bs.multi"])
        .timeout(RUN_BOUND)
        .assert()
        .code(i32::from(exit::COULD_NOT_TEST))
        .get_output()
        .clone();
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  ERROR "))
        .collect();
    let total = stderr
        .lines()
        .find_map(|l| l.trim().strip_suffix(" error"))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| format!("no summary line: {stderr}"))?;
    let counted = format!("({total} times)");
    if total < 2
        || errors.len() != 1
        || !errors[0].ends_with(&counted)
        || !errors[0].contains("{dir}")
    {
        return Err(
            format!("want one ERROR line ending {counted:?}, the dir masked: {stderr}").into(),
        );
    }
    Ok(())
}

/// `--bitmap` names a bitmap of a server the user gives: alone, it is a usage error.
fn bitmap_without_server() -> Result<(), Failed> {
    Command::new(bin())
        .args(["run", "--server", "reference", "--bitmap", "mybm"])
        .timeout(REFUSAL_BOUND)
        .assert()
        .code(i32::from(exit::USAGE))
        .stderr(predicate::str::contains(
            "nbd-conform: --bitmap names a dirty bitmap of a server you give (--target or --spawn)",
        ));
    Ok(())
}

/// The reference server spawned with bitmaps of its own (tracking writes since it started),
/// named with `--bitmap`: the cases that write see their writes dirty in those and pass; a
/// structural bitmap case passes on them; a case judged by the fixture's bitmaps is
/// unsupported, saying why.
fn bitmap_with_spawn() -> Result<(), Failed> {
    let template = format!(
        "{} serve --socket {{socket}} --export {{export}} --writable --bitmap mine --bitmap yours {{raw}}",
        bin()
    );
    let out = Command::new(bin())
        .args([
            "run", "--spawn", &template, "--bitmap", "mine", "--bitmap", "yours",
        ])
        .args([
            "--only",
            "live.dirty-after-write",
            "--only",
            "bs.multi.base-and-bitmaps",
        ])
        .args(["--only", "oracle.mixed.dirty-bm0", "--json", "-"])
        .timeout(RUN_BOUND)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("--json -: {e}"))?;
    let target = &json["targets"][0];
    let contexts = target["capabilities"]["contexts"].to_string();
    let notes = target["notes"].to_string();
    if !contexts.contains("qemu:dirty-bitmap:mine")
        || !contexts.contains("qemu:dirty-bitmap:yours")
        || !notes.contains("dirty bitmaps mine, yours (from --bitmap) stand in")
    {
        return Err(format!("the server's bitmaps were not asked for: {contexts} {notes}").into());
    }
    expect_grades(
        target,
        &[
            ("live.dirty-after-write", "pass", ""),
            ("bs.multi.base-and-bitmaps", "pass", ""),
            (
                "oracle.mixed.dirty-bm0",
                "unsupported",
                "the server's bitmaps (--bitmap) did not record those",
            ),
        ],
    )
}

/// Each case of `target` (a JSON report's) has its grade, and its note says what is given.
fn expect_grades(target: &serde_json::Value, want: &[(&str, &str, &str)]) -> Result<(), Failed> {
    let cases = target["cases"]
        .as_array()
        .ok_or_else(|| format!("no cases in {target}"))?;
    for (id, grade, says) in want {
        let case = cases
            .iter()
            .find(|c| c["id"] == *id)
            .ok_or_else(|| format!("{id} did not run"))?;
        let note = case["note"].as_str().unwrap_or_default();
        if case["grade"] != *grade || !note.contains(says) {
            return Err(format!("{id}: want {grade} saying {says:?}, got {case}").into());
        }
    }
    Ok(())
}

/// qemu-nbd serving a qcow2 with a bitmap of the user's own name (`-B mybm`), run with
/// `--target … --bitmap mybm`: a case of one bitmap asks for `qemu:dirty-bitmap:mybm` and passes
/// on it (structure only: a target has no fixture truth), the target's note says so, and a case
/// of two bitmaps is unsupported, asking for one more.
fn bitmap_with_target() -> Result<(), Failed> {
    for tool in ["qemu-img", "qemu-io", "qemu-nbd"] {
        if !crate::support::have(tool) {
            return Ok(());
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("disk.qcow2");
    let image_arg = image.to_string_lossy().into_owned();
    crate::support::run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &image_arg, "4M"],
    );
    crate::support::run("qemu-img", &["bitmap", "--add", &image_arg, "mybm"]);
    crate::support::run("qemu-io", &["-c", "write -P 0x5a 1M 64K", &image_arg]);
    let socket = dir.path().join("nbd.sock");
    let socket_arg = socket.to_string_lossy().into_owned();
    let _server = crate::support::start_peer(
        "qemu-nbd",
        &[
            "-t",
            "-r",
            "-k",
            &socket_arg,
            "-x",
            "disk",
            "-B",
            "mybm",
            &image_arg,
        ],
        &socket,
    );
    let uri = format!("nbd+unix:///disk?socket={socket_arg}");
    let out = Command::new(bin())
        .args(["run", "--target", &uri, "--bitmap", "mybm", "--json", "-"])
        .args([
            "--only",
            "bs.multi.base-and-bitmaps",
            "--only",
            "bs.multi.req-one",
        ])
        .timeout(RUN_BOUND)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("--json -: {e}"))?;
    let target = &json["targets"][0];
    let contexts = target["capabilities"]["contexts"].to_string();
    if !contexts.contains("qemu:dirty-bitmap:mybm")
        || !target["notes"]
            .to_string()
            .contains("dirty bitmaps mybm stand in")
    {
        return Err(format!("mybm was not asked for: {target}").into());
    }
    expect_grades(
        target,
        &[
            ("bs.multi.req-one", "pass", ""),
            (
                "bs.multi.base-and-bitmaps",
                "unsupported",
                "needs a dirty bitmap more than the 1 given (it stands for the fixture's bm1)",
            ),
        ],
    )
}
