//! An install that works anywhere, and the library harness as an implementer uses it.
//!
//! `selftest::install::*`: the binary, copied out of the build tree and run from another
//! directory, finds its cases and fixture layouts in itself and caches images per user (or
//! where `NBD_CONFORM_CACHE` says); `NBD_CONFORM_CASES` / `NBD_CONFORM_FIXTURES` replace them.
//!
//! `selftest::harness::*`: this test binary's own third-party path is
//! `nbd_conform::harness::Harness`, so running it with `--spawn` / `NBD_TARGET` / `--only` is
//! running the harness an implementer's `tests/nbd.rs` runs.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};

use crate::support::{bin, start_peer, unix_uri};

/// One case, on the fixture `mixed-4m`, that the reference server passes.
const CASE: &str = "bs.range.last-byte";

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::install::a_copied_binary_runs_from_another_directory",
            copied_binary_runs_anywhere,
        ),
        Trial::test(
            "selftest::install::images_are_cached_per_user_by_default",
            images_cached_per_user,
        ),
        Trial::test(
            "selftest::install::case_and_fixture_dirs_replace_the_shipped_ones",
            dirs_replace_shipped,
        ),
        Trial::test(
            "selftest::harness::only_selects_cases_by_glob",
            only_selects_by_glob,
        ),
        Trial::test(
            "selftest::harness::a_spawned_conformant_server_passes_and_a_faulty_one_fails",
            spawned_pass_and_fail,
        ),
        Trial::test(
            "selftest::harness::nbd_target_names_the_server",
            nbd_target_names_the_server,
        ),
        Trial::test(
            "selftest::harness::bad_arguments_exit_2_with_the_reason",
            bad_arguments_exit_2,
        ),
    ]
}

/// `nbd-conform` copied into `dir/bin`, outside the build tree.
fn copied_binary(dir: &Path) -> Result<std::path::PathBuf, Failed> {
    let copy = dir.join("bin/nbd-conform");
    std::fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
    std::fs::copy(bin(), &copy).map_err(|e| e.to_string())?;
    Ok(copy)
}

/// A command with none of the suite's location variables, in `cwd`.
fn clean(program: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .env_remove("NBD_CONFORM_CASES")
        .env_remove("NBD_CONFORM_FIXTURES")
        .env_remove("NBD_CONFORM_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .timeout(Duration::from_secs(120));
    cmd
}

/// What a finished command said, for the failure message.
fn said(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expect(out: &std::process::Output, code: i32, text: &str) -> Result<(), Failed> {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() != Some(code) || !all.contains(text) {
        return Err(format!("expected exit {code} and {text:?}; got {}", said(out)).into());
    }
    Ok(())
}

/// The fixture image dirs (`NAME-HASH`) built under `cache`.
fn built_in(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn copied_binary_runs_anywhere() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let program = copied_binary(dir.path())?;
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).map_err(|e| e.to_string())?;
    let cache = dir.path().join("cache");
    let out = clean(&program, &elsewhere)
        .env("NBD_CONFORM_CACHE", &cache)
        .args(["run", "--server", "reference", "--only", CASE])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, "conformant")?;
    let built = built_in(&cache);
    if !built.iter().any(|n| n.starts_with("mixed-4m-")) {
        return Err(format!("no mixed-4m image in NBD_CONFORM_CACHE, only {built:?}").into());
    }
    let out = clean(&program, &elsewhere)
        .args(["list"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, CASE)
}

fn images_cached_per_user() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let program = copied_binary(dir.path())?;
    let xdg = dir.path().join("xdg");
    let out = clean(&program, dir.path())
        .env("XDG_CACHE_HOME", &xdg)
        .args(["run", "--server", "reference", "--only", CASE])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, "conformant")?;
    if built_in(&xdg.join("nbd-conform/fixtures")).is_empty() {
        return Err("nothing built in $XDG_CACHE_HOME/nbd-conform/fixtures".into());
    }
    // Without XDG_CACHE_HOME: ~/.cache.
    let home = dir.path().join("home");
    let out = clean(&program, dir.path())
        .env("HOME", &home)
        .args(["run", "--server", "reference", "--only", CASE])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, "conformant")?;
    if built_in(&home.join(".cache/nbd-conform/fixtures")).is_empty() {
        return Err("nothing built in ~/.cache/nbd-conform/fixtures".into());
    }
    Ok(())
}

fn dirs_replace_shipped() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).map_err(|e| e.to_string())?;
    let cache = dir.path().join("cache");
    let out = clean(Path::new(bin()), dir.path())
        .env("NBD_CONFORM_CACHE", &cache)
        .env("NBD_CONFORM_CASES", &empty)
        .args(["run", "--server", "reference"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "no case to run")?;
    let out = clean(Path::new(bin()), dir.path())
        .env("NBD_CONFORM_CACHE", &cache)
        .env("NBD_CONFORM_FIXTURES", &empty)
        .args(["run", "--server", "reference"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "cannot load cases: cases/")?;
    expect(&out, 2, &format!("in {}", empty.display()))
}

/// This test binary, as an implementer's `tests/nbd.rs` built on the harness.
fn harness() -> Result<Command, Failed> {
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    for var in [
        "NBD_TARGET",
        "NBD_SPAWN",
        "NBD_ONLY",
        "NBD_STRICT",
        "NBD_WRITABLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.timeout(Duration::from_secs(180));
    Ok(cmd)
}

fn reference_template(extra: &str) -> String {
    format!(
        "{} serve --socket {{socket}} --export {{export}} {{raw}}{extra}",
        bin()
    )
}

fn only_selects_by_glob() -> Result<(), Failed> {
    let out = harness()?
        .args(["--spawn", &reference_template(""), "--list"])
        .args(["--only", "bs.range.last-*", "--only", "bs.req-one"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, &format!("spawn::{CASE}: test"))?;
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // `[MUST] spawn::bs.range.last-byte: test`: the level, then the name.
        .filter_map(|l| l.strip_suffix(": test"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    let stray: Vec<&String> = listed
        .iter()
        .filter(|n| !n.starts_with("spawn::bs.range.last-") && !n.starts_with("spawn::bs.req-one."))
        .collect();
    if listed.len() < 2 || !stray.is_empty() {
        return Err(format!("--only listed {listed:?}; not selected: {stray:?}").into());
    }
    Ok(())
}

fn spawned_pass_and_fail() -> Result<(), Failed> {
    let out = harness()?
        .args(["--spawn", &reference_template(""), "--only", CASE])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, "test result: ok. 1 passed; 0 failed")?;
    // A server that breaks BS-REP-SUM-1 fails the cases that see it.
    let out = harness()?
        .args([
            "--spawn",
            &reference_template(" --fault descriptors-past-request"),
        ])
        .args(["--only", "bs.range"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 101, "BS-REP-SUM-1")?;
    expect(&out, 101, "test result: FAILED")
}

fn nbd_target_names_the_server() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .map_err(|e| e.to_string())?;
    let socket = dir.path().join("nbd.sock");
    let image_arg = image.to_string_lossy().into_owned();
    let socket_arg = socket.to_string_lossy().into_owned();
    let _server = start_peer(
        bin(),
        &[
            "serve",
            &image_arg,
            "--socket",
            &socket_arg,
            "--export",
            "disk",
        ],
        &socket,
    );
    let out = harness()?
        .env("NBD_TARGET", unix_uri(&socket, "disk"))
        .env("NBD_ONLY", "bs.range")
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 0, "target::bs.range.")?;
    expect(&out, 0, "test result: ok.")?;
    // Two servers named at once (NBD_TARGET and --spawn) is a usage error, not a guess.
    let out = harness()?
        .env("NBD_TARGET", unix_uri(&socket, "disk"))
        .args(["--spawn", &reference_template("")])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "cannot be used with")
}

fn bad_arguments_exit_2() -> Result<(), Failed> {
    let out = harness()?
        .args(["--spawn", &reference_template(""), "--only", "no.such.case"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "no case matches --only no.such.case")?;
    let out = harness()?
        .args(["--spawn", "my-server --no-listen-placeholder"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "--spawn: ")?;
    let out = harness()?
        .args(["--target", "nbd://[bad"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "--target: ")?;
    let out = harness()?
        .args(["--spawn", &reference_template(""), "--writable"])
        .output()
        .map_err(|e| e.to_string())?;
    expect(&out, 2, "--writable is for a --target")
}
