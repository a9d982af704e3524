//! The verdict rules of `nbd-conform run` (README "Verdicts"), one trial each, through the CLI
//! as a user runs it (assert_cmd), against servers scripted to land in each rule:
//!
//! | rule | exit |
//! |---|---|
//! | conformant: something tested, nothing errored, nothing failed | 0 |
//! | non-conformant: a fail (or a warn under `--strict`) anywhere | 1 |
//! | could not test: unreachable, every case unsupported, or any case in error | 3 |
//! | a target with no case selected is left out of the verdict | — |

use std::path::Path;

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};

use crate::support::{bin, have, start_peer, unix_uri};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::cli::bad_input_exits_2_before_anything_starts",
            bad_input,
        ),
        Trial::test("selftest::verdict::conformant_exits_0", || {
            with_reference(&[], |uri| {
                expect(&["--target", uri, "--only", "bs."], 0, "conformant")
            })
        }),
        Trial::test("selftest::verdict::a_fail_exits_1", || {
            with_reference(&["--fault", "req-one-overrun"], |uri| {
                expect(
                    &["--target", uri, "--only", "bs.req-one"],
                    1,
                    "NON-CONFORMANT",
                )
            })
        }),
        Trial::test(
            "selftest::verdict::a_warn_exits_1_only_under_strict",
            || {
                with_reference(&["--variant", "simple-errors"], |uri| {
                    let args = ["--target", uri, "--only", "bs.range"];
                    expect(&args, 0, "conformant")?;
                    let strict = [&args[..], &["--strict"]].concat();
                    expect(&strict, 1, "NON-CONFORMANT")
                })
            },
        ),
        Trial::test(
            "selftest::verdict::cases_that_write_run_only_with_writable",
            || {
                // Without --writable every writing case is unsupported: nothing was tested. With
                // it they run (on a throwaway image) and pass; on a read-only export they do not.
                with_reference(&["--writable"], |uri| {
                    let args = ["--target", uri, "--only", "live.read-back"];
                    expect(&args, 3, "could not test")?;
                    expect(&[&args[..], &["--writable"]].concat(), 0, "conformant")
                })?;
                with_reference(&[], |uri| {
                    let args = ["--target", uri, "--only", "live.read-back", "--writable"];
                    expect(&args, 3, "could not test")
                })
            },
        ),
        Trial::test("selftest::verdict::unreachable_exits_3", || {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let uri = unix_uri(&dir.path().join("nobody.sock"), "");
            expect(&["--target", &uri], 3, "could not test")
        }),
        Trial::test("selftest::verdict::nothing_tested_exits_3", || {
            // Every case unsupported: no structured replies, so no block status at all.
            with_reference(&["--variant", "no-structured-replies"], |uri| {
                expect(
                    &["--target", uri, "--only", "bs.range"],
                    3,
                    "could not test",
                )
            })
        }),
        Trial::test(
            "selftest::verdict::a_server_gone_after_one_client_exits_3",
            || {
                // qemu-nbd without --persistent: it serves the probe or a case, then nobody listens.
                if !have("qemu-nbd") {
                    return Ok(());
                }
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let image = dir.path().join("disk.raw");
                sparse(&image)?;
                let socket = dir.path().join("nbd.sock");
                let mut server = std::process::Command::new("qemu-nbd")
                    .args(["-r", "-f", "raw", "-k"])
                    .arg(&socket)
                    .arg(&image)
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let outcome = crate::support::wait_listening(&mut server, &socket)
                    .map_err(Failed::from)
                    .and_then(|()| {
                        expect(&["--target", &unix_uri(&socket, "")], 3, "could not test")
                    });
                let _ = server.kill();
                let _ = server.wait();
                outcome
            },
        ),
        Trial::test(
            "selftest::verdict::an_unwritable_report_exits_5_before_the_run",
            || {
                // Found before any case runs, and never reported as non-conformance (it was
                // exit 1): exit::IO.
                let started = std::time::Instant::now();
                expect(
                    &[
                        "--server",
                        "reference",
                        "--json",
                        "/nonexistent/dir/report.json",
                    ],
                    5,
                    "cannot write /nonexistent/dir/report.json",
                )?;
                if started.elapsed() > std::time::Duration::from_secs(5) {
                    return Err("the bad path was found only after the run".into());
                }
                // `-` is standard output, not a file named `-`.
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let out = Command::new(bin())
                    .current_dir(dir.path())
                    .args(["run", "--server", "reference", "--only", "bs.range.whole"])
                    .args(["--json", "-"])
                    .timeout(std::time::Duration::from_secs(120))
                    .output()
                    .map_err(|e| e.to_string())?;
                let json: serde_json::Value =
                    serde_json::from_slice(&out.stdout).map_err(|e| format!("stdout: {e}"))?;
                if json["suite"] != "nbd-conform" || dir.path().join("-").exists() {
                    return Err("--json - did not write the report to standard output".into());
                }
                Ok(())
            },
        ),
        Trial::test(
            "selftest::verdict::cases_side_by_side_are_no_errors",
            || {
                // nbd-server's accept backlog is short: 32 cases connecting at once once got
                // EAGAIN, which a busy server is, not an unreachable one.
                if !have("nbd-server") {
                    return Ok(());
                }
                let out = Command::new(bin())
                    .args(["run", "--server", "nbd-server", "--parallel", "32"])
                    .timeout(std::time::Duration::from_secs(300))
                    .output()
                    .map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if stderr.contains("ERROR ") || !stderr.contains(" 0 error") {
                    return Err(format!("errors against nbd-server side by side:\n{stderr}").into());
                }
                Ok(())
            },
        ),
        Trial::test(
            "selftest::verdict::a_target_without_cases_is_left_out",
            || {
                // `--only bs.range` selects no draft case: the reference's draft target is left
                // out, and the run is judged by the standard one.
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let report = dir.path().join("report.md");
                let report_arg = report.to_string_lossy().into_owned();
                expect(
                    &[
                        "--server",
                        "reference",
                        "--only",
                        "bs.range",
                        "--report",
                        &report_arg,
                    ],
                    0,
                    "conformant",
                )?;
                let text = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
                if !text.contains("left out (no case selected)") {
                    return Err("the report does not say the draft target was left out".into());
                }
                Ok(())
            },
        ),
    ]
}

/// Runs `nbd-conform run ARGS…` and checks its exit code and that stderr says `verdict`.
fn expect(args: &[&str], code: i32, verdict: &str) -> Result<(), Failed> {
    let out = Command::new(bin())
        .arg("run")
        .args(args)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(code) || !stderr.contains(verdict) {
        return Err(format!(
            "run {args:?}: expected exit {code} and {verdict:?}; got {:?}:\n{}",
            out.status.code(),
            stderr.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        )
        .into());
    }
    Ok(())
}

/// The reference server with `extra` arguments on a sparse 4 MiB image, for the duration of
/// `f`, which gets its URI.
pub fn with_reference(
    extra: &[&str],
    f: impl FnOnce(&str) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("disk.raw");
    sparse(&image)?;
    let socket = dir.path().join("nbd.sock");
    let (image_arg, socket_arg) = (image.to_string_lossy(), socket.to_string_lossy());
    let mut args = vec!["serve", &image_arg, "--socket", &socket_arg];
    args.extend(extra);
    let _server = start_peer(bin(), &args, &socket);
    f(&unix_uri(&socket, ""))
}

fn sparse(path: &Path) -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    file.set_len(4 << 20).map_err(|e| e.to_string())?;
    file.write_all_at(&[0x55; 4096], 1 << 20)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Input that cannot be served or mapped is a usage error (exit 2) with a one-line reason,
/// before anything listens or connects: a FIFO (opening one would wait for a writer), a
/// character device, a directory, a map window of 0 bytes.
fn bad_input() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut refused: Vec<(Vec<String>, &str)> = vec![
        (vec!["serve".into(), "/dev/zero".into()], "character device"),
        (
            vec!["serve".into(), dir.path().display().to_string()],
            "directory",
        ),
        (
            vec![
                "map".into(),
                "127.0.0.1:9".into(),
                "--window".into(),
                "0".into(),
            ],
            "window of 0 bytes",
        ),
    ];
    if made.is_ok_and(|s| s.success()) {
        refused.push((vec!["serve".into(), fifo.display().to_string()], "FIFO"));
    }
    for (args, why) in refused {
        Command::new(bin())
            .args(&args)
            .timeout(std::time::Duration::from_secs(10))
            .assert()
            .code(2)
            .stderr(predicates::str::contains(why));
    }
    Ok(())
}
