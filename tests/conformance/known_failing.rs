//! `run --known-failing FILE` through the CLI (assert_cmd): a failing case a line names is a
//! known failure (exit 0, listed), a line whose cases pass is stale (exit 1, FILE:LINE named),
//! a bad line or a glob that names no case is a usage error (exit 2, FILE:LINE named), an error
//! is never acknowledged; `--known-flaky` lines acknowledge the same way and never go stale;
//! and the list shipped for Debian bookworm's peers holds here.

use std::path::Path;

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};

use crate::support::{bin, unix_uri};
use crate::verdicts::with_reference;

/// A `--target` has no server name to read: it is "unknown" in reports and lists.
const REQ_ONE: &str = "bs.req-one.*@unknown  BS-REQ-ONE-2: the one descriptor runs past the \
                       requested length (serve --fault req-one-overrun)\n";

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::known_failing::a_known_failure_exits_0_and_is_listed",
            || {
                with_reference(&["--fault", "req-one-overrun"], |uri| {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let list = write(dir.path(), "known.txt", &format!("# why\n{REQ_ONE}"))?;
                    let report = dir.path().join("report.md");
                    let args = [
                        "--target",
                        uri,
                        "--only",
                        "bs.req-one",
                        "--known-failing",
                        &list,
                        "--report",
                        &report.to_string_lossy(),
                    ];
                    let stderr = expect(&args, &[], 0)?;
                    let acknowledged = format!(
                        "known failure: bs.req-one.unaligned on {uri} (fail), acknowledged by {list}:2"
                    );
                    contains(&stderr, &[&acknowledged, "nbd-conform run: conformant"])?;
                    let md = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
                    contains(
                        &md,
                        &[
                            "## Known failures",
                            "| `bs.req-one.unaligned` | unknown | ❌ **FAIL** | BS-REQ-ONE-2: the one descriptor runs past",
                            &format!("`{list}:2` |"),
                            "**Verdict: conformant** (0 fail, 0 warn, 3 known, 1 pass",
                        ],
                    )
                })
            },
        ),
        Trial::test(
            "selftest::known_failing::a_failure_no_line_names_exits_1",
            || {
                with_reference(&["--fault", "req-one-overrun"], |uri| {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let one = "bs.req-one.unaligned@unknown  BS-REQ-ONE-2: too long\n";
                    let list = write(dir.path(), "known.txt", one)?;
                    let args = ["--target", uri, "--only", "bs.req-one"];
                    let stderr = expect(&args, &[("--known-failing", &list)], 1)?;
                    contains(
                        &stderr,
                        &[
                            "FAIL bs.req-one.single-descriptor",
                            &format!(
                                "bs.req-one.unaligned on {uri} (fail), acknowledged by {list}:1"
                            ),
                            "NON-CONFORMANT",
                        ],
                    )
                })
            },
        ),
        Trial::test(
            "selftest::known_failing::a_stale_line_exits_1_naming_file_and_line",
            || {
                // The same list against the server without the fault: every case it names passes.
                with_reference(&[], |uri| {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let list = write(dir.path(), "known.txt", &format!("\n\n{REQ_ONE}"))?;
                    let json = dir.path().join("report.json");
                    let args = [
                        "--target",
                        uri,
                        "--only",
                        "bs.req-one",
                        "--json",
                        &json.to_string_lossy(),
                    ];
                    let stderr = expect(&args, &[("--known-failing", &list)], 1)?;
                    contains(
                        &stderr,
                        &[
                            &format!("STALE known-failing line {list}:3: bs.req-one.*@unknown now passes (bs.req-one.inside-extents on {uri}"),
                            "NON-CONFORMANT",
                        ],
                    )?;
                    let v: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&json).map_err(|e| e.to_string())?)
                            .map_err(|e| e.to_string())?;
                    let stale = &v["stale_known_failing"][0];
                    if stale["line"] != format!("{list}:3") || v["exit_code"] != 1 {
                        return Err(format!("JSON: {}", v["stale_known_failing"]).into());
                    }
                    Ok(())
                })
            },
        ),
        Trial::test(
            "selftest::known_failing::a_flaky_line_acknowledges_and_is_never_stale",
            || {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let list = write(dir.path(), "flaky.txt", REQ_ONE)?;
                let args = ["--only", "bs.req-one"];
                // Failing: acknowledged, as a known-failing line would be.
                with_reference(&["--fault", "req-one-overrun"], |uri| {
                    let args = [&["--target", uri][..], &args].concat();
                    let stderr = expect(&args, &[("--known-flaky", &list)], 0)?;
                    contains(
                        &stderr,
                        &[&format!("acknowledged by {list}:1"), "conformant"],
                    )
                })?;
                // Passing: not stale (the same line in --known-failing is, exit 1).
                with_reference(&[], |uri| {
                    let args = [&["--target", uri][..], &args].concat();
                    let stderr = expect(&args, &[("--known-flaky", &list)], 0)?;
                    if stderr.contains("STALE") {
                        return Err(format!("a flaky line went stale:\n{stderr}").into());
                    }
                    expect(&args, &[("--known-failing", &list)], 1).map(drop)
                })
            },
        ),
        Trial::test(
            "selftest::known_failing::a_spawned_server_is_named_by_its_program_and_told_apart",
            two_spawns_of_one_program,
        ),
        Trial::test(
            "selftest::known_failing::the_list_may_come_from_the_environment",
            || {
                with_reference(&["--fault", "req-one-overrun"], |uri| {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let list = write(dir.path(), "known.txt", REQ_ONE)?;
                    let out = Command::new(bin())
                        .args(["run", "--target", uri, "--only", "bs.req-one"])
                        .env("NBD_CONFORM_KNOWN_FAILING", &list)
                        .timeout(std::time::Duration::from_secs(120))
                        .output()
                        .map_err(|e| e.to_string())?;
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    if out.status.code() != Some(0) {
                        return Err(format!("exit {:?}:\n{stderr}", out.status.code()).into());
                    }
                    contains(&stderr, &[&format!("acknowledged by {list}:1")])
                })
            },
        ),
        Trial::test(
            "selftest::known_failing::bad_lists_exit_2_naming_file_and_line",
            bad_lists,
        ),
        Trial::test(
            "selftest::known_failing::an_error_is_never_acknowledged",
            || {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let list = write(dir.path(), "known.txt", "*@*  everything, even errors\n")?;
                let uri = unix_uri(&dir.path().join("nobody.sock"), "");
                let args = ["--target", &uri, "--only", "bs.req-one"];
                let stderr = expect(&args, &[("--known-failing", &list)], 3)?;
                contains(&stderr, &["could not test"])?;
                if stderr.contains("known failure") || stderr.contains("STALE") {
                    return Err(format!("an error was acknowledged:\n{stderr}").into());
                }
                Ok(())
            },
        ),
        Trial::test(
            "selftest::known_failing::the_debian_bookworm_list_holds_here",
            debian_bookworm,
        )
        .with_ignored_flag(!bookworm_peers_here()),
        Trial::test(
            "selftest::report::json_transcripts_only_for_failing_cases_unless_asked",
            json_transcripts,
        ),
    ]
}

/// `--json-transcripts`: failing (the default) keeps the exchanges of the failing cases only,
/// `all` every case's, `none` no case's; anything else is a usage error.
fn json_transcripts() -> Result<(), Failed> {
    with_reference(&["--fault", "req-one-overrun"], |uri| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let json = dir.path().join("report.json");
        let json_arg = json.to_string_lossy();
        let args = ["--target", uri, "--only", "bs.req-one", "--json", &json_arg];
        // (case id, grade, transcript lines) per case.
        let cases = |choice: &[(&str, &str)]| -> Result<Vec<(String, String, usize)>, Failed> {
            expect(&args, choice, 1)?;
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&json).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let mode = choice.first().map_or("failing", |(_, m)| *m);
            if v["transcripts"] != mode {
                return Err(format!("\"transcripts\": {} for {mode}", v["transcripts"]).into());
            }
            Ok(v["targets"][0]["cases"]
                .as_array()
                .ok_or("no cases")?
                .iter()
                .map(|c| {
                    let n = c["transcript"].as_array().map_or(0, Vec::len);
                    let (id, grade) = (c["id"].as_str(), c["grade"].as_str());
                    (
                        id.unwrap_or("").to_owned(),
                        grade.unwrap_or("").to_owned(),
                        n,
                    )
                })
                .collect())
        };
        let failing = cases(&[])?;
        let all = cases(&[("--json-transcripts", "all")])?;
        let none = cases(&[("--json-transcripts", "none")])?;
        let bad = |why: &str| {
            Err(format!(
                "{why}: failing {failing:?}, all {all:?}, none {none:?}"
            ))
        };
        if failing.len() != 4 || !failing.iter().any(|(_, g, _)| g == "pass") {
            return bad("expected 4 cases, one passing").map_err(Into::into);
        }
        for ((id, grade, n), (_, _, n_all)) in failing.iter().zip(&all) {
            let kept = if grade == "fail" { *n_all } else { 0 };
            if *n != kept || *n_all == 0 {
                return bad(&format!("{id} ({grade})")).map_err(Into::into);
            }
        }
        if none.iter().any(|(_, _, n)| *n != 0) {
            return bad("none kept a transcript").map_err(Into::into);
        }
        let stderr = expect(&args, &[("--json-transcripts", "some")], 2)?;
        contains(&stderr, &["invalid value 'some' for '--json-transcripts"])
    })
}

/// Two `--spawn` templates of one program: a line names them by the program's file name, and
/// the known failure of the faulty one is its own (the targets get distinct names), not the
/// correct one's too.
fn two_spawns_of_one_program() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let list = write(
        dir.path(),
        "known.txt",
        "bs.req-one.*@nbd-conform  BS-REQ-ONE-2: the fault\n",
    )?;
    let json = dir.path().join("report.json");
    let serve = |fault: &str| {
        format!(
            "{} serve {{raw}} --socket {{socket}} --export {{export}}{fault}",
            bin()
        )
    };
    let (correct, faulty) = (serve(""), serve(" --fault req-one-overrun"));
    let args = [
        "--spawn",
        &correct,
        "--spawn",
        &faulty,
        "--only",
        "bs.req-one",
        "--json",
        &json.to_string_lossy(),
    ];
    expect(&args, &[("--known-failing", &list)], 0)?;
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let names: Vec<&str> = v["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    if names != ["spawn:nbd-conform", "spawn:nbd-conform #2"] {
        return Err(format!("target names {names:?}").into());
    }
    let known: Vec<&str> = v["known_failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["target"].as_str())
        .collect();
    if known.is_empty() || known.iter().any(|t| *t != "spawn:nbd-conform #2") {
        return Err(
            format!("known failures on {known:?}, expected on the faulty spawn only").into(),
        );
    }
    Ok(())
}

/// Whether nbdkit and nbd-server are Debian bookworm's, the peers the shipped list is about
/// (elsewhere that trial is ignored, saying why).
fn bookworm_peers_here() -> bool {
    use nbd_conform::launch::ServerKind;
    let versions = (
        ServerKind::Nbdkit.installed_version(),
        ServerKind::NbdServer.installed_version(),
    );
    let here = versions == (Some("1.32.5".into()), Some("3.24".into()));
    if !here {
        eprintln!("SKIP the_debian_bookworm_list_holds_here: not Debian bookworm's nbdkit 1.32.5 and nbd-server 3.24: {versions:?}");
    }
    here
}

/// The README's main job on the peers it was written for: every failure acknowledged (exit 0),
/// no line stale.
fn debian_bookworm() -> Result<(), Failed> {
    let list = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/known-failing/debian-bookworm.txt"
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let report = dir.path().join("report.md");
    let report_arg = report.to_string_lossy();
    let args = [
        "--server",
        "nbdkit",
        "--server",
        "nbd-server",
        "--report",
        &report_arg,
    ];
    let stderr = expect(&args, &[("--known-failing", list)], 0)?;
    let known = stderr.matches("known failure: ").count();
    if known != 7 || stderr.contains("STALE") {
        return Err(format!("expected 7 known failures, no stale line:\n{stderr}").into());
    }
    contains(&stderr, &["nbd-conform run: conformant"])?;
    // nbdkit's assertion, as it printed it, under the case whose request crashed it.
    let md = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
    let entry = md
        .split("\n### ")
        .find(|e| e.starts_with("KNOWN FAIL `bs.big.max-compact-length-in-bounds`"))
        .ok_or("no entry for bs.big.max-compact-length-in-bounds")?;
    contains(
        entry,
        &[
            "The server died during this case; its last output:",
            "Assertion `e.length <= length' failed.",
        ],
    )
}

fn bad_lists() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let missing = dir
        .path()
        .join("missing.txt")
        .to_string_lossy()
        .into_owned();
    for (name, text, says) in [
        (
            "no-server.txt",
            "# ok\nbs.req-one.unaligned  reason\n",
            ":2: `bs.req-one.unaligned` has no `@SERVER`",
        ),
        (
            "no-reason.txt",
            "bs.req-one.unaligned@nbdkit\n",
            ":1: `bs.req-one.unaligned@nbdkit` has no reason",
        ),
        (
            "bad-glob.txt",
            "bs.[req@nbdkit  reason\n",
            ":1: case glob `bs.[req`",
        ),
        (
            "no-case.txt",
            "\nbs.no-such-case.*@nbdkit  reason\n",
            ":2: `bs.no-such-case.*` matches no case",
        ),
    ] {
        let list = write(dir.path(), name, text)?;
        // Nothing is run: the target is never reached.
        let args = ["--target", "127.0.0.1:9"];
        let stderr = expect(&args, &[("--known-failing", &list)], 2)?;
        contains(&stderr, &[&format!("nbd-conform: {list}{says}")])?;
    }
    let stderr = expect(
        &["--target", "127.0.0.1:9"],
        &[("--known-failing", &missing)],
        2,
    )?;
    contains(&stderr, &[&format!("cannot read the list {missing}")])
}

/// `nbd-conform run ARGS OPTIONS…`, whose exit code must be `code`; its stderr.
fn expect(args: &[&str], options: &[(&str, &str)], code: i32) -> Result<String, Failed> {
    let mut cmd = Command::new(bin());
    cmd.arg("run").args(args);
    for (flag, value) in options {
        cmd.args([flag, value]);
    }
    let out = cmd
        .env_remove("NBD_CONFORM_KNOWN_FAILING")
        .env_remove("NBD_CONFORM_KNOWN_FLAKY")
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(code) {
        return Err(format!(
            "run {args:?} {options:?}: expected exit {code}, got {:?}:\n{stderr}",
            out.status.code()
        )
        .into());
    }
    Ok(stderr)
}

fn contains(text: &str, needles: &[&str]) -> Result<(), Failed> {
    match needles.iter().find(|n| !text.contains(**n)) {
        Some(n) => Err(format!("{n:?} not in:\n{text}").into()),
        None => Ok(()),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String, Failed> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}
