//! The endless servers of `nbd_conform::scripted::hostile` (issue 10 §1) against the built
//! binary: `nbd-conform run --only CASE` and `nbd-conform map` each run in a child process
//! against the peer, which this process plays. Each trial asserts the grade (fail under the
//! clause the server breaks; `map` ends with an error naming it or its deadline, or completes), that the child
//! ended within its deadline (plus slack), and that its peak RSS stayed under
//! [`PEAK_RSS_BOUND`], read from its own rusage by a small wrapper (`tests/support/peak_rss.py`).

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use libtest_mimic::{Failed, Trial};

use nbd_conform::client::MAX_STRAY_MESSAGES;
use nbd_conform::scripted::hostile::{Hostile, HOSTILE};
use nbd_conform::scripted::Peer;

use crate::support::SYSTEM_PYTHON;

/// The harness's peak RSS against any hostile server (issue 10: 64 MiB).
const PEAK_RSS_BOUND: u64 = 64 << 20;

/// The per-message timeout given to the child: longer than the 4 s between the slow peer's
/// chunks, so that only the whole-exchange deadline can end that one.
const TIMEOUT_SECS: u64 = 5;

/// How long the child may take: a few exchange deadlines (a run probes the target on
/// connections of its own first), with generous slack for a loaded machine.
const CHILD_BOUND: Duration = Duration::from_secs(6 * TIMEOUT_SECS);

/// Past this the child is killed at once, whatever the bound says: a trial must never take
/// the machine's memory with it.
const KILL_RSS: u64 = 1 << 30;

/// What a child did: its exit code, peak RSS, time, and output.
struct Child {
    code: Option<i32>,
    peak_rss: u64,
    took: Duration,
    stdout: String,
    stderr: String,
    killed: Option<String>,
}

/// Runs the binary with `args` against `peer`'s script (one per connection) and waits for it.
///
/// The binary runs under `tests/support/peak_rss.py`, which reads its peak RSS from its own
/// rusage: a child forked from this test binary would inherit its RSS at the fork (Linux
/// carries the old image's high-water mark across exec), which says nothing of the harness.
/// The script kills it past [`CHILD_BOUND`] or [`KILL_RSS`].
fn against(peer: fn() -> Peer, args: impl Fn(&str) -> Vec<String>) -> Result<Child, Failed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let listening = Peer::listen_each(peer)?;
        let target = listening.target.to_string();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        let report = dir.path().join("peak");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/peak_rss.py");
        let mut child = std::process::Command::new(SYSTEM_PYTHON)
            .arg(script)
            .arg(CHILD_BOUND.as_secs().to_string())
            .arg((KILL_RSS >> 20).to_string())
            .arg(&report)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_nbd-conform"))
            .args(args(&target))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).map_err(|e| e.to_string())?)
            .stderr(std::fs::File::create(&err_path).map_err(|e| e.to_string())?)
            // A group of its own, so that the backstop below ends the binary with the script.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn peak_rss.py: {e}"))?;
        // The script has its own bound; this backstop leaves it room to report.
        let backstop = std::time::Instant::now() + CHILD_BOUND * 2;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if std::time::Instant::now() > backstop {
                // SAFETY: a plain kill of the group our own child leads.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                return Err("peak_rss.py did not end".into());
            }
            // The peer plays on this runtime meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(listening);
        let line = std::fs::read_to_string(&report).map_err(|e| format!("no report: {e}"))?;
        let fields: Vec<&str> = line.trim().splitn(4, ' ').collect();
        let [peak_kib, took, code, killed] = fields[..] else {
            return Err(format!("a report of {line:?}").into());
        };
        Ok(Child {
            code: code.parse().ok(),
            peak_rss: peak_kib.parse::<u64>().map_err(|e| e.to_string())? * 1024,
            took: Duration::from_secs_f64(took.parse().map_err(|e| format!("{e}"))?),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            killed: (killed != "-").then(|| killed.to_owned()),
        })
    })
}

/// The bounds every child keeps: not killed, ended in time, peak RSS under the bound.
fn bounded(what: &str, child: &Child) -> Result<(), Failed> {
    let rate = child.peak_rss as f64 / (1 << 20) as f64 / child.took.as_secs_f64().max(0.001);
    let numbers = format!(
        "{what}: {:.1?}, peak RSS {} MiB ({rate:.0} MiB/s), exit {:?}",
        child.took,
        child.peak_rss >> 20,
        child.code
    );
    eprintln!("{numbers}");
    if let Some(killed) = &child.killed {
        return Err(format!("{numbers}: {killed}\n{}", tail(&child.stderr)).into());
    }
    if child.took > CHILD_BOUND {
        return Err(format!("{numbers}: over {CHILD_BOUND:?}").into());
    }
    if child.peak_rss > PEAK_RSS_BOUND {
        return Err(format!("{numbers}: over {} MiB", PEAK_RSS_BOUND >> 20).into());
    }
    Ok(())
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(2000)..]
}

/// `run --only CASE`: the case fails, with a finding under the peer's clause graded fail.
fn run(hostile: &Hostile) -> Result<(), Failed> {
    let child = against(hostile.peer, |target| {
        [
            "run",
            "--target",
            target,
            "--only",
            hostile.case,
            "--timeout",
            &TIMEOUT_SECS.to_string(),
            "--connect-timeout",
            &TIMEOUT_SECS.to_string(),
            "--json",
            "-",
        ]
        .map(str::to_owned)
        .to_vec()
    })?;
    bounded("run", &child)?;
    let json: serde_json::Value = serde_json::from_str(&child.stdout)
        .map_err(|e| format!("no JSON report ({e}): {}", tail(&child.stderr)))?;
    let case = &json["targets"][0]["cases"][0];
    let findings = case["findings"].as_array().cloned().unwrap_or_default();
    let fails_under = findings
        .iter()
        .any(|f| f["clause"] == hostile.clause.as_str() && f["grade"] == "fail");
    if case["grade"] != "fail" || !fails_under {
        return Err(format!(
            "{}: expected fail under {}; got {} with {:?} ({})\n{}",
            hostile.case,
            hostile.clause,
            case["grade"],
            findings.iter().map(|f| &f["clause"]).collect::<Vec<_>>(),
            case["note"],
            case["transcript"]
        )
        .into());
    }
    // A few clauses at most, each capped: more would mean they grow with the stream.
    if findings.len() > 2 * MAX_STRAY_MESSAGES {
        return Err(format!("{} findings recorded: they grow", findings.len()).into());
    }
    Ok(())
}

/// `map`: ends with an error that names the clause, or (where the harness can cope) completes.
fn map(hostile: &Hostile) -> Result<(), Failed> {
    let child = against(hostile.peer, |target| {
        [
            "map",
            target,
            "--length",
            "1M",
            // Four requests in flight: the repeats of one reply are read while waiting for
            // another's.
            "--window",
            "256K",
            "--timeout",
            &TIMEOUT_SECS.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    })?;
    bounded("map", &child)?;
    let Some(says) = hostile.map_error else {
        if child.code != Some(0) {
            return Err(format!("map failed: {}", tail(&child.stderr)).into());
        }
        return Ok(());
    };
    if child.code == Some(0) || !child.stderr.contains(says) {
        return Err(format!(
            "expected map to fail saying {says:?}; exit {:?}: {}",
            child.code,
            tail(&child.stderr)
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    HOSTILE
        .iter()
        .flat_map(|h| {
            [
                Trial::test(format!("selftest::hostile::{}::run", h.name), move || {
                    run(h)
                }),
                Trial::test(format!("selftest::hostile::{}::map", h.name), move || {
                    map(h)
                }),
            ]
        })
        .collect()
}
