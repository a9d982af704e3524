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

/// A real deviation a server shows, with the spec's word for it.
struct Known {
    case: &'static str,
    clause: &'static str,
}

/// nbdkit (1.32.5 here) answers SET_META_CONTEXT ["base:allocation", "base:allocation"] with
/// two META_CONTEXT replies carrying the same id: "NBD_OPT_SET_META_CONTEXT" wants one reply
/// per selected context, each with a unique id (MUST).
const NBDKIT_DUPLICATE_QUERY: Known = Known {
    case: "neg.set.duplicate-query",
    clause: "SMC-REPLY-1",
};

/// What a configuration's run must show beyond "no false verdict".
#[derive(Clone, Copy)]
enum Expect {
    /// Nothing else.
    Fair,
    /// The suite must catch this (the server lies): at least one case fails under the clause.
    Caught(&'static str),
    /// The server dies on one case's request; run one case at a time, the suite must name it.
    /// Only where the installed version has the bug (`nbdkit 1.32.`); elsewhere: `Fair`.
    DiesOn(&'static str, &'static str),
    /// The server serves one client and exits: the run cannot test, and must say why.
    SingleClient,
    /// The server does what this case is about (its backend fails): the case must pass, not
    /// be unsupported.
    Passes(&'static str),
}

struct Config {
    name: &'static str,
    program: &'static str,
    /// `{socket}` and `{image}` are filled in.
    args: &'static [&'static str],
    image: Image,
    known: &'static [Known],
    expect: Expect,
    /// Case id prefixes to run (all when empty): a slow server gets a few cases.
    only: &'static [&'static str],
    /// Dirty bitmaps the cases must find (by LIST) and test.
    bitmaps: &'static [&'static str],
}

#[derive(Clone, Copy)]
enum Image {
    /// Sparse raw of this size, data at 1000 (70,000 bytes) and at 3 MiB (5,000 bytes) where
    /// they fit.
    Raw(u64),
    /// 8 MiB raw, data at 0 (100 bytes) and at 3 MiB + 12345 (1,000 bytes), and an extent
    /// list for nbdkit's extentlist filter that calls everything after 64 KiB a hole.
    LyingExtents,
    /// 8 GiB raw with four bytes at 5 GiB: one hole of 5 GiB first.
    BigHole,
    /// qcow2 of this size with data, zero clusters and two bitmaps added before writes.
    Qcow2(u64),
    /// qcow2 over a qcow2 backing file: data in both layers.
    BackingChain,
}

const G: u64 = 1 << 30;
const M: u64 = 1 << 20;

const CONFIGS: &[Config] = &[
    Config {
        name: "nbdkit-blocksize-policy-4k-min",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=blocksize-policy",
            "file",
            "{image}",
            "blocksize-minimum=4096",
            "blocksize-preferred=65536",
            "blocksize-maximum=1M",
            "blocksize-error-policy=error",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-blocksize-512-on-1000-bytes",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=blocksize",
            "file",
            "{image}",
            "minblock=512",
        ],
        image: Image::Raw(1000),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-truncate-to-4g-plus-1",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=truncate",
            "file",
            "{image}",
            "truncate=4294967297",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-cow",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "--filter=cow", "file", "{image}"],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-offset-and-cacheextents",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=cacheextents",
            "--filter=offset",
            "file",
            "{image}",
            "offset=1M",
            "range=8M",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-noextents",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=noextents",
            "file",
            "{image}",
        ],
        image: Image::Raw(64 * M),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-data-plugin",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "data",
            "1 2 3 @0x100000 4 5 6 @0x300000 0 * 65536",
            "size=4M",
        ],
        image: Image::Raw(0),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // 6 s per extents call: correct, only slow (it once failed BS-COMPLETE-1).
        name: "nbdkit-delay-extents-6s",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=delay",
            "file",
            "{image}",
            "delay-extents=6",
        ],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::Fair,
        only: &["bs.range", "oracle.mixed.full-map"],
        bitmaps: &[],
    },
    Config {
        name: "nbdkit-extentlist-that-lies",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=extentlist",
            "file",
            "{image}",
            "extentlist={image}.extents",
        ],
        image: Image::LyingExtents,
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Caught("ALLOC-ZERO-1"),
        only: &[],
        bitmaps: &[],
    },
    Config {
        // nbdkit 1.32.5 aborts on a 0xffffffff-byte block status over a big hole
        // (CVE-2025-47711: "Assertion `e.length <= length' failed").
        name: "nbdkit-file-8g",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "-r", "file", "{image}"],
        image: Image::BigHole,
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::DiesOn("bs.big.max-compact-length-in-bounds", "nbdkit 1.32."),
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-raw-8g",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "raw", "-x", "disk", "-k", "{socket}", "{image}",
        ],
        image: Image::Raw(8 * G),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-qcow2-8g-bitmaps-by-other-names",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "qcow2", "-x", "disk", "-B", "backup-a", "-B", "backup-b", "-k",
            "{socket}", "{image}",
        ],
        image: Image::Qcow2(8 * G),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &["backup-a", "backup-b"],
    },
    Config {
        name: "qemu-nbd-raw-window-of-a-file",
        program: "qemu-nbd",
        args: &[
            "-t",
            "-r",
            "--image-opts",
            "-k",
            "{socket}",
            "driver=raw,offset=1048576,size=33554432,file.driver=file,file.filename={image}",
        ],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-backing-chain-allocation-depth",
        program: "qemu-nbd",
        args: &["-t", "-r", "-f", "qcow2", "-A", "-k", "{socket}", "{image}"],
        image: Image::BackingChain,
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // Every extents call fails with EIO in the backend (issue 9 §2.6): nbdkit answers
        // with an ERROR chunk, which the backend cases are about.
        name: "nbdkit-error-filter-extents-eio",
        program: "nbdkit",
        args: &[
            "-U",
            "{socket}",
            "-f",
            "-r",
            "--filter=error",
            "file",
            "{image}",
            "error-extents=EIO",
            "error-extents-rate=100%",
        ],
        image: Image::Raw(4 * M),
        known: &[],
        expect: Expect::Passes("bs.backend.status-fails"),
        only: &["bs.backend"],
        bitmaps: &[],
    },
    Config {
        // An empty export (issue 9 §2.6): every request a case means is empty or past the
        // end here, so the cases that cannot mean anything on it must be unsupported.
        name: "nbdkit-null-size-0",
        program: "nbdkit",
        args: &["-U", "{socket}", "-f", "-r", "null", "size=0"],
        image: Image::Raw(0),
        known: &[NBDKIT_DUPLICATE_QUERY],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        name: "qemu-nbd-raw-size-0",
        program: "qemu-nbd",
        args: &[
            "-t", "-r", "-f", "raw", "-x", "disk", "-k", "{socket}", "{image}",
        ],
        image: Image::Raw(0),
        known: &[],
        expect: Expect::Fair,
        only: &[],
        bitmaps: &[],
    },
    Config {
        // Without --persistent qemu-nbd serves one client and exits: no verdict is possible,
        // and the run must say so instead of calling the server conformant.
        name: "qemu-nbd-not-persistent",
        program: "qemu-nbd",
        args: &["-r", "-f", "raw", "-k", "{socket}", "{image}"],
        image: Image::Raw(64 * M),
        known: &[],
        expect: Expect::SingleClient,
        only: &[],
        bitmaps: &[],
    },
];

pub fn trials(cases: &[Case], settings: Settings) -> Vec<Trial> {
    let standard: Vec<Case> = cases
        .iter()
        .filter(|c| c.dialect == Dialect::Standard)
        .cloned()
        .collect();
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
