//! Clean-up that always happens: `nbd-conform run` interrupted at several moments (0 to 3 s
//! in), by SIGINT and SIGKILL of its process group and SIGTERM of the harness alone, with the
//! process launcher and the container launcher, and what it left behind counted: zero of each.
//!
//! The runs of a trial share a private TMPDIR (their servers' scratch dirs and sockets, named
//! `nbd-conform-PID-…`) and a private fixture cache, made cold every few runs (so that some
//! interrupts land in a fixture build). Counted, per run: containers with its run label,
//! processes whose command line names its scratch dirs (the servers, in a container or not, and
//! their watchdogs) or its run id (the run watchdog), its scratch dirs, and `.tmp-*` build dirs
//! in the cache; at the end, anything at all left in the TMPDIR.
//!
//! After SIGINT or SIGTERM the run itself must leave nothing (exit 4 with its reports marked
//! interrupted, or a verdict if it finished first). After SIGKILL nothing of the harness runs
//! to clean up: the watchdogs do, and what they cannot know (a fixture build dir, a writable
//! fixture copy) is swept by the next start. So a SIGKILLed run's leftovers are counted after
//! the next run has started and ended, and the trial ends with one more run for that.
//!
//! Runtime: 21 interrupts per launcher, each a second or a few (about 75 s for both, side by
//! side, on two cores; 150 s when the machine is busy). The two interrupt trials are ignored in
//! the default run and run by `.ci/run` on their own (`-- --ignored selftest::cleanup`): 42
//! harness runs building fixtures cold and starting containers load two cores enough to push
//! the fault trials' 1 s reads past their deadline (`fault::zero-over-data` then misses cases).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use nbd_conform::launch::{container_version, ServerKind, CONTAINER_RUN_LABEL, DEFAULT_IMAGE};

use crate::support::{bin, have};

/// Where in a run the signal lands: from before the first server to the middle of the last.
const DELAYS_MS: [u64; 7] = [0, 150, 400, 800, 1300, 2000, 3000];
const SIGNALS: [(i32, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGKILL, "SIGKILL"),
];
/// An interrupted run must be gone within this (its clean-up is bounded well below it).
const EXIT_LIMIT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed run's watchdogs get before what is left counts.
const SETTLE: Duration = Duration::from_secs(15);

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::cleanup::interrupted_process_runs_leave_nothing",
            || {
                if !have("qemu-nbd") || !have("nbd-server") {
                    return Ok(());
                }
                interrupts(&["--server", "qemu-nbd", "--server", "nbd-server"])
            },
        )
        .with_ignored_flag(true),
        Trial::test(
            "selftest::cleanup::interrupted_container_runs_leave_nothing",
            || {
                if container_version(ServerKind::Nbdkit, DEFAULT_IMAGE).is_err() {
                    if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
                        return Err(format!("required peer missing: {DEFAULT_IMAGE}").into());
                    }
                    eprintln!("SKIP: no image {DEFAULT_IMAGE} (docker/build-image.sh)");
                    return Ok(());
                }
                interrupts(&[
                    "--in-container",
                    DEFAULT_IMAGE,
                    "--server",
                    "qemu-nbd",
                    "--server",
                    "nbd-server",
                ])
            },
        )
        .with_ignored_flag(true),
        Trial::test(
            "selftest::dead_server::servers_killed_mid_run_fail_no_case",
            || {
                if !have("qemu-nbd") {
                    return Ok(());
                }
                servers_killed_mid_run()
            },
        ),
    ]
}

/// Waits for `child` to exit, calling `tick` every `every`; past `limit` it is killed and
/// reaped, and `None` says so.
fn wait_ticking(
    child: &mut std::process::Child,
    limit: Duration,
    every: Duration,
    mut tick: impl FnMut(),
) -> Result<Option<std::process::ExitStatus>, Failed> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        tick();
        std::thread::sleep(every);
    }
}

/// `run` against qemu-nbd while every qemu-nbd it starts is SIGKILLed every 150 ms (the
/// issue's "22 kills"): no case is charged a failure for it, the target could not be tested
/// (exit 3), and its note says the server died, how, and what it printed.
fn servers_killed_mid_run() -> Result<(), Failed> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let json = tmp.path().join("run.json");
    let mut child = Command::new(bin())
        .args(["run", "--server", "qemu-nbd", "--parallel", "4", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let harness = child.id();
    let mut kills = 0;
    let status = wait_ticking(
        &mut child,
        EXIT_LIMIT * 2,
        Duration::from_millis(150),
        || {
            for (pid, cmdline) in processes() {
                if cmdline.starts_with("qemu-nbd\0") && parent(pid) == Some(harness) {
                    // SAFETY: kill has no memory-safety preconditions; the pid is the harness's
                    // child, which cannot be reaped (and reused) before the harness waits for it.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
        },
    )?
    .ok_or("run did not end")?;
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let target = &report["targets"][0];
    let failed: Vec<String> = target["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["grade"] == "fail")
        .map(|c| format!("{} ({}; {})", c["id"], c["findings"], c["note"]))
        .collect();
    let noted = target["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .any(|n| n.contains("died") && n.contains("SIGKILL"));
    let mut problems = Vec::new();
    if kills < 3 {
        problems.push(format!(
            "only {kills} kills: the run was too quick to test this"
        ));
    }
    if !failed.is_empty() {
        problems.push(format!("cases failed for a kill: {}", failed.join(", ")));
    }
    if status.code() != Some(3) {
        problems.push(format!("{kills} kills, and it ended with {status}, not 3"));
    }
    if !noted {
        problems.push(format!("no note says the server died: {}", target["notes"]));
    }
    eprintln!("{kills} kills of qemu-nbd during the run");
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// The parent pid of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// One run of the harness, interrupted or not.
struct Interrupted {
    pid: u32,
    /// `PID-STARTTIME`, as its containers' run label says it.
    run_id: String,
    signal: &'static str,
    delay: u64,
    /// It exited by itself (with a code), so it ran its start-up sweeps.
    started: bool,
}

fn interrupts(launcher: &[&str]) -> Result<(), Failed> {
    let cache = tempfile::Builder::new()
        .prefix("ncit-cache-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // Short, so that the scratch dirs are made inside it (a long TMPDIR is replaced by /tmp).
    let tmp = tempfile::Builder::new()
        .prefix("ncit-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let (cache, tmp) = (cache.path(), tmp.path());
    let mut problems = Vec::new();
    // Killed runs whose leftovers are counted after the next start.
    let mut killed: Vec<Interrupted> = Vec::new();
    let (mut count, mut cut_short) = (0, 0);
    for (i, delay) in DELAYS_MS.iter().enumerate() {
        for (j, &(signal, name)) in SIGNALS.iter().enumerate() {
            if (i + j) % 3 == 0 {
                // Cold: the next run builds every fixture, and a signal may land in a build.
                let _ = std::fs::remove_dir_all(cache);
                std::fs::create_dir_all(cache).map_err(|e| e.to_string())?;
            }
            let run = interrupt_one(launcher, tmp, cache, *delay, signal, name)?;
            count += 1;
            // Swept by this start, if it got as far as its start: a signal that came before the
            // harness watched for signals killed it before it did anything.
            if run.0.started {
                for earlier in killed.drain(..) {
                    problems.extend(leftovers(&earlier, tmp, cache, SETTLE));
                }
            }
            match &run.1 {
                Ok(cut) => cut_short += usize::from(*cut),
                Err(e) => problems.push(e.clone()),
            }
            if signal == libc::SIGKILL || !run.0.started {
                killed.push(run.0);
            } else {
                problems.extend(leftovers(&run.0, tmp, cache, Duration::from_secs(2)));
            }
        }
    }
    // The next start after the last SIGKILL: a run that ends on its own.
    let last = interrupt_one(launcher, tmp, cache, 0, 0, "none")?;
    problems.extend(last.1.err());
    for earlier in killed.drain(..).chain([last.0]) {
        problems.extend(leftovers(&earlier, tmp, cache, SETTLE));
    }
    for entry in dir_entries(tmp) {
        problems.push(format!("left in the TMPDIR: {}", entry.display()));
    }
    for entry in dir_entries(cache) {
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        {
            problems.push(format!("left in the fixture cache: {}", entry.display()));
        }
    }
    eprintln!(
        "{count} interrupts, {cut_short} of them before the run ended, {} problems",
        problems.len()
    );
    // A trial whose runs all ended before the signal would prove nothing.
    if cut_short * 3 < count * 2 {
        problems.push(format!(
            "only {cut_short} of {count} runs were cut short: the delays miss the runs"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// Starts `run` in a process group of its own, sends `signal` to the group after `delay` ms
/// (none if `signal` is 0), and checks how it ended.
fn interrupt_one(
    launcher: &[&str],
    tmp: &Path,
    cache: &Path,
    delay: u64,
    signal: i32,
    name: &'static str,
) -> Result<(Interrupted, Result<bool, String>), Failed> {
    let json = tmp.with_extension("json");
    let mut child = Command::new(bin())
        .arg("run")
        .args(launcher)
        .arg("--json")
        .arg(&json)
        .env("TMPDIR", tmp)
        .env("NBD_CONFORM_CACHE", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    // Read now: the process may be gone by the time anything is counted.
    let run_id = format!("{pid}-{}", start_time(pid).unwrap_or(0));
    let what = format!("{launcher:?} {name} after {delay} ms (pid {pid})");
    if signal != 0 {
        std::thread::sleep(Duration::from_millis(delay));
        // SIGINT and SIGKILL to the group, as Ctrl-C and `kill -9 -- -PGID` send them (the
        // servers it started get them too); SIGTERM to the harness alone, as `timeout` or a
        // supervisor send it (the harness must stop its servers itself).
        let to = if signal == libc::SIGTERM {
            pid as i32
        } else {
            -(pid as i32)
        };
        // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
        unsafe { libc::kill(to, signal) };
    }
    let status = wait_ticking(&mut child, EXIT_LIMIT, Duration::from_millis(20), || {})?
        .ok_or_else(|| format!("{what}: still running after {EXIT_LIMIT:?}"))?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let verdict =
        check_exit(signal, name, status, &json, &stderr).map_err(|e| format!("{what}: {e}"));
    let _ = std::fs::remove_file(&json);
    let run = Interrupted {
        pid,
        run_id,
        signal: name,
        delay,
        started: status.code().is_some(),
    };
    Ok((run, verdict))
}

/// After SIGINT or SIGTERM: exit 4 with the report marked interrupted, or a verdict (0, 1, 3)
/// if the run was over first, or death by the signal if it came before the harness watched for
/// it (nothing is started before that). After SIGKILL: death by SIGKILL. True if the signal
/// cut the run short.
fn check_exit(
    signal: i32,
    name: &str,
    status: std::process::ExitStatus,
    json: &Path,
    stderr: &str,
) -> Result<bool, String> {
    use std::os::unix::process::ExitStatusExt;
    if signal == libc::SIGKILL {
        return match status.signal() {
            Some(libc::SIGKILL) => Ok(true),
            _ => Err(format!("ended with {status}, not by SIGKILL")),
        };
    }
    match (status.code(), status.signal()) {
        (Some(4), _) => {
            let text = std::fs::read_to_string(json)
                .map_err(|e| format!("exit 4 but no JSON report: {e}; stderr: {stderr}"))?;
            let report: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("bad JSON report: {e}"))?;
            if report["interrupted"] != name || report["verdict"] != "interrupted" {
                return Err(format!(
                    "the report says interrupted={} verdict={}",
                    report["interrupted"], report["verdict"]
                ));
            }
            Ok(true)
        }
        (Some(0 | 1 | 3), _) => Ok(false),
        (_, Some(s)) if s == signal => Ok(true),
        _ => Err(format!("ended with {status}; stderr: {stderr}")),
    }
}

/// What `run` left behind, once it has had `settle` to go (polled: zero ends the wait).
fn leftovers(run: &Interrupted, tmp: &Path, cache: &Path, settle: Duration) -> Vec<String> {
    let deadline = Instant::now() + settle;
    loop {
        let found = count(run, tmp, cache);
        if found.is_empty() || Instant::now() >= deadline {
            return found
                .into_iter()
                .map(|f| {
                    format!(
                        "{} after {} ms (pid {}): {f}",
                        run.signal, run.delay, run.pid
                    )
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(run: &Interrupted, tmp: &Path, cache: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let containers = docker_ps(&format!("label={CONTAINER_RUN_LABEL}={}", run.run_id));
    if !containers.is_empty() {
        found.push(format!("containers left: {}", containers.join(" ")));
    }
    let scratch = format!("nbd-conform-{}-", run.pid);
    let scratch_path = tmp.join(&scratch).to_string_lossy().into_owned();
    let watchdog = format!("nbd-conform-run-watchdog\0{}", run.run_id);
    for (pid, cmdline) in processes() {
        if cmdline.contains(&scratch_path) || cmdline.contains(&watchdog) {
            found.push(format!(
                "process left: {pid} {}",
                cmdline.replace('\0', " ")
            ));
        }
    }
    for entry in dir_entries(tmp) {
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&scratch))
        {
            found.push(format!("scratch dir left: {}", entry.display()));
        }
    }
    let build = format!(".tmp-{}-", run.pid);
    for entry in dir_entries(cache) {
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&build))
        {
            found.push(format!("fixture build dir left: {}", entry.display()));
        }
    }
    found
}

fn docker_ps(filter: &str) -> Vec<String> {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every process's pid and NUL-separated command line.
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).into_owned()))
        })
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`, as the harness's run id carries it.
fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
