//! Servers the suite was not tuned for: nbdkit filters and plugins that shape sizes,
//! alignment, extents and timing, and qemu configurations other than the one the fixtures
//! use, each started by hand as a user would (other export names, other sizes) and run as a
//! `--target`.
//!
//! Every trial asserts what a correct verdict is for its server: no error, and no fail or
//! warn other than the real deviations it lists (each a case id, a clause, and why it is the
//! server's: the spec section says so). Where the server is meant to be caught (an extent list
//! that lies, a request that crashes it) the trial requires the suite to catch exactly that.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::{Failed, Trial};

use crate::support::{have, run, why};
use nbd_conform::client::Target;
use nbd_conform::engine::case::Case;
use nbd_conform::engine::outcome::{CaseResult, Grade, TargetResult};
use nbd_conform::engine::run::Settings;
use nbd_conform::engine::suite::{run_subject, Subject};
use nbd_conform::report::{target_verdict, TargetVerdict, Verdict};
use nbd_conform::Dialect;

mod configs;

use configs::{Config, Expect, Image, CONFIGS, G, M};

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let standard = crate::support::standard_cases(cases);
    CONFIGS
        .iter()
        .map(|config| {
            let cases = standard.clone();
            Trial::test(format!("selftest::real::{}", config.name), move || {
                trial(config, &cases, settings)
            })
        })
        .collect()
}

fn trial(config: &Config, cases: &[Case], settings: Settings) -> Result<(), Failed> {
    if !have(config.program) {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = make_image(dir.path(), config.image)?;
    let socket = dir.path().join("nbd.sock");
    let fill = |a: &str| {
        a.replace("{socket}", &socket.to_string_lossy())
            .replace("{image}", &image.to_string_lossy())
    };
    let args: Vec<String> = config.args.iter().map(|a| fill(a)).collect();
    let _server = Server::start(config.program, &args, &socket)?;
    let export = if config.args.contains(&"-x") {
        "disk"
    } else {
        ""
    };
    let target: Target = format!("nbd+unix:///{export}?socket={}", socket.display())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let selected: Vec<Case> = cases
        .iter()
        .filter(|c| config.only.is_empty() || config.only.iter().any(|p| c.id.starts_with(p)))
        .cloned()
        .collect();
    let expect = match config.expect {
        Expect::DiesOn(_, buggy) if !version_of(config.program).starts_with(buggy) => Expect::Fair,
        e => e,
    };
    let parallel = match expect {
        // One case at a time, so that the request that kills the server is known.
        Expect::DiesOn(..) => 1,
        _ => 16,
    };
    let settings = Settings {
        read_back_budget: 32 << 20,
        ..settings
    };
    let subject = Subject::Remote {
        target,
        dialect: Dialect::Standard,
        bitmaps: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(run_subject(&subject, &selected, settings, parallel));
    let problems = judge(config, expect, &result);
    eprintln!(
        "real::{}: {}{}",
        config.name,
        counts(&result),
        if problems.is_empty() {
            ""
        } else {
            " — UNFAIR"
        }
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn judge(config: &Config, expect: Expect, result: &TargetResult) -> Vec<String> {
    let mut problems = Vec::new();
    let known = |r: &CaseResult| {
        config
            .known
            .iter()
            .any(|k| k.case == r.id && r.deciding().is_some_and(|f| f.clause == k.clause))
    };
    match expect {
        Expect::SingleClient => {
            // Found at the probe ("serves a single client") or once it has gone (the probe's
            // connections may be the ones it serves): either way, no verdict, and the hint.
            if !result.notes.iter().any(|n| n.contains("persistent")) {
                problems.push(format!(
                    "the run did not say to start the server persistent: notes {:?}",
                    result.notes
                ));
            }
            let verdict = target_verdict(result, false);
            if verdict != TargetVerdict::Judged(Verdict::CouldNotTest) {
                problems.push(format!("verdict {verdict:?}, not could-not-test"));
            }
            if result
                .cases
                .iter()
                .any(|r| matches!(r.grade, Grade::Fail | Grade::Warn))
            {
                problems.push("a case was failed against a server that was gone".to_owned());
            }
            return problems;
        }
        Expect::DiesOn(culprit, _) => {
            let named = result
                .notes
                .iter()
                .any(|n| n.contains(culprit) && n.contains("died"));
            if !named {
                problems.push(format!(
                    "the run did not name {culprit} as the request that killed the server: \
                     notes {:?}",
                    result.notes
                ));
            }
            for r in &result.cases {
                let fine = match r.grade {
                    Grade::Fail | Grade::Warn => r.id == culprit || known(r),
                    Grade::Error => r.note.as_deref().is_some_and(|n| n.contains("not tested")),
                    _ => true,
                };
                if !fine {
                    problems.push(format!("{} graded {}: {}", r.id, r.grade.as_str(), why(r)));
                }
            }
            return problems;
        }
        Expect::Caught(clause) => {
            let caught = result.cases.iter().any(|r| {
                r.findings
                    .iter()
                    .any(|f| f.clause == clause && f.grade == Grade::Fail)
            });
            if !caught {
                problems.push(format!("no case caught the server under {clause}"));
            }
        }
        Expect::Passes(case) => {
            let passed = result
                .cases
                .iter()
                .any(|r| r.id == case && matches!(r.grade, Grade::Pass | Grade::Info));
            if !passed {
                problems.push(format!("{case} did not pass against a server it is about"));
            }
        }
        Expect::Fair => {}
    }
    for r in &result.cases {
        let lies_caught = matches!(expect, Expect::Caught(c)
            if r.findings.iter().all(|f| f.grade != Grade::Fail || f.clause == c));
        match r.grade {
            Grade::Error => problems.push(format!("{} graded error: {}", r.id, why(r))),
            Grade::Fail | Grade::Warn if !known(r) && !lies_caught => {
                problems.push(format!("{} graded {}: {}", r.id, r.grade.as_str(), why(r)))
            }
            _ => {}
        }
    }
    if !result.cases.iter().any(|r| r.grade == Grade::Pass) {
        problems.push("no case passed: nothing was tested".to_owned());
    }
    if !config.bitmaps.is_empty() {
        let found = result
            .notes
            .iter()
            .any(|n| n.contains("dirty bitmaps") && config.bitmaps.iter().all(|b| n.contains(b)));
        if !found {
            problems.push(format!(
                "the bitmaps {:?} were not found: notes {:?}",
                config.bitmaps, result.notes
            ));
        }
        let tested = result
            .cases
            .iter()
            .filter(|r| r.id.contains("bitmap") || r.id.contains("multi"))
            .any(|r| r.grade == Grade::Pass);
        if !tested {
            problems.push("no bitmap case ran on the server's own bitmaps".to_owned());
        }
    }
    problems
}

/// `PROGRAM --version`'s first line ("nbdkit 1.32.5"), or "" if it has none.
fn version_of(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

fn counts(result: &TargetResult) -> String {
    let s = result.summary();
    format!(
        "{} pass, {} fail, {} warn, {} info, {} unsupported, {} error",
        s.pass, s.fail, s.warn, s.info, s.unsupported, s.error
    )
}

// ---- images -------------------------------------------------------------------------------

fn make_image(dir: &Path, image: Image) -> Result<PathBuf, String> {
    use std::os::unix::fs::FileExt;
    let write = |path: &Path, size: u64, data: &[(u64, u8, usize)]| -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
        file.set_len(size).map_err(|e| e.to_string())?;
        for &(at, byte, len) in data {
            if at + len as u64 <= size {
                file.write_all_at(&vec![byte; len], at)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    };
    match image {
        Image::Raw(size) => {
            let path = dir.join("disk.raw");
            write(&path, size, &[(1000, 0x44, 70_000), (3 * M, 0x45, 5000)])?;
            Ok(path)
        }
        Image::BigHole => {
            let path = dir.join("hole.raw");
            write(&path, 8 * G, &[(5 * G, 0x44, 4)])?;
            Ok(path)
        }
        Image::LyingExtents => {
            let path = dir.join("lies.raw");
            write(&path, 8 * M, &[(0, 0x42, 100), (3 * M + 12345, 0x41, 1000)])?;
            std::fs::write(dir.join("lies.raw.extents"), "0 64K\n").map_err(|e| e.to_string())?;
            Ok(path)
        }
        Image::Qcow2(size) => {
            let path = dir.join("disk.qcow2");
            let p = path.to_string_lossy().into_owned();
            run(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", &p, &size.to_string()],
            );
            run("qemu-img", &["bitmap", "--add", &p, "backup-a"]);
            run(
                "qemu-img",
                &["bitmap", "--add", "-g", "128k", &p, "backup-b"],
            );
            run(
                "qemu-io",
                &[
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x55 1M 64k",
                    "-c",
                    "write -z 2M 64k",
                    "-c",
                    "write -P 0x66 5G 128k",
                    &p,
                ],
            );
            Ok(path)
        }
        Image::BackingChain => {
            let base = dir.join("base.qcow2");
            let top = dir.join("top.qcow2");
            let (b, t) = (
                base.to_string_lossy().into_owned(),
                top.to_string_lossy().into_owned(),
            );
            run("qemu-img", &["create", "-q", "-f", "qcow2", &b, "16M"]);
            run(
                "qemu-io",
                &[
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x11 0 1M",
                    "-c",
                    "write -P 0x22 8M 64k",
                    &b,
                ],
            );
            run(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", "-b", &b, "-F", "qcow2", &t],
            );
            run(
                "qemu-io",
                &[
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x33 512k 64k",
                    "-c",
                    "write -z 8M 4k",
                    &t,
                ],
            );
            Ok(top)
        }
    }
}

// ---- the server process -------------------------------------------------------------------

/// A server process killed (and reaped) on drop. Started as a user would start it, and
/// waited for without connecting (`support::wait_listening`): a test connection would use up
/// a server that serves a single client.
struct Server(std::process::Child);

impl Server {
    fn start(program: &str, args: &[String], socket: &Path) -> Result<Server, String> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let mut server = Server(child);
        crate::support::wait_listening(&mut server.0, socket)
            .map_err(|e| format!("{program} {args:?}: {e}"))?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
