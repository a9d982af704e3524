//! Every container this process creates, found again by its labels, and removed by them.
//!
//! A container is named, but a name alone is not enough to clean up: `docker run` creates the
//! container in dockerd before it starts it, so a harness that dies (or removes the container by
//! name) while dockerd is still creating it leaves a container in state "Created" that nobody
//! knows. So every `docker run` of the harness, the version probe included, carries
//! [`labels`]: the harness's pid, this run's id (the pid and its start time, so a recycled pid
//! is another run) and the pid namespace (a pid means nothing in another one). Then:
//! - on an orderly exit, [`remove_own`] removes this run's containers by label, again and again
//!   until none has appeared for a while (a create still in flight shows up late);
//! - if the harness dies without a word, one run watchdog (a `sh` reading a pipe whose only
//!   writer is this process, as `guard`'s are) does the same;
//! - at the first container of a process, [`sweep_dead_runs`] removes the labelled containers
//!   of harnesses that are gone (a SIGKILL of the watchdog too, or a reboot of the machine).

use std::io::{self, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::spawner::start_time;

/// The label that carries the run id; its presence marks a container as the harness's.
pub const RUN_LABEL: &str = "nbd-conform.run";
/// The harness's pid (for a human reading `docker ps`).
const PID_LABEL: &str = "nbd-conform.harness";
/// The harness's pid namespace (`/proc/self/ns/pid`'s inode).
pub(super) const PIDNS_LABEL: &str = "nbd-conform.pidns";

/// How often a removal by label looks again, and for how long none must appear.
const SWEEP_POLL: Duration = Duration::from_millis(250);
const SWEEP_QUIET: Duration = Duration::from_secs(1);
/// The longest an orderly exit spends removing containers.
const SWEEP_LIMIT: Duration = Duration::from_secs(20);

/// `$1` is the run id. A line `stop` dismisses it; end of input (the harness died) makes it
/// remove the run's containers until none has appeared for 3 s (60 s at most).
const RUN_WATCHDOG_SCRIPT: &str = r#"trap '' INT HUP TERM QUIT
while read -r word; do
  [ "$word" = stop ] && exit 0
done
quiet=0; rounds=0
while [ "$quiet" -lt 6 ] && [ "$rounds" -lt 120 ]; do
  ids=$(docker ps -aq --filter "label=nbd-conform.run=$1")
  if [ -n "$ids" ]; then quiet=0; docker rm -f $ids >/dev/null 2>&1; else quiet=$((quiet + 1)); fi
  rounds=$((rounds + 1)); sleep 0.5
done"#;

/// This process's run: its id and the watchdog that removes its containers.
struct Run {
    id: String,
    pidns: String,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// This process's run, made at its first container.
static RUN: OnceLock<Run> = OnceLock::new();

fn run() -> &'static Run {
    RUN.get_or_init(|| {
        let pid = std::process::id();
        let id = format!("{pid}-{}", start_time(pid as i32).unwrap_or(0));
        let pidns = pid_namespace();
        // Before this run's first container: a stale one of a dead run goes first.
        sweep_dead_runs(&pidns);
        let watchdog = start_watchdog(&id).ok();
        Run {
            id,
            pidns,
            watchdog: Mutex::new(watchdog),
        }
    })
}

/// The `--label` arguments every `docker run` of this process carries.
pub(super) fn labels() -> Vec<String> {
    let run = run();
    vec![
        "--label".into(),
        format!("{RUN_LABEL}={}", run.id),
        "--label".into(),
        format!("{PID_LABEL}={}", std::process::id()),
        "--label".into(),
        format!("{PIDNS_LABEL}={}", run.pidns),
    ]
}

/// Removes this run's containers (orderly exit) until none has appeared for a while, then
/// dismisses the run watchdog. Does nothing in a process that never started a container.
pub fn remove_own() {
    let Some(run) = RUN.get() else {
        return;
    };
    remove_until_quiet(&format!("label={RUN_LABEL}={}", run.id));
    let mut watchdog = run.watchdog.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((mut child, mut pipe)) = watchdog.take() {
        let _ = pipe.write_all(b"stop\n");
        drop(pipe);
        let _ = child.wait();
    }
}

/// `docker rm -f` of every container `filter` matches, until none has matched for
/// [`SWEEP_QUIET`] ([`SWEEP_LIMIT`] at most).
fn remove_until_quiet(filter: &str) {
    let deadline = Instant::now() + SWEEP_LIMIT;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let ids = list(&["--filter", filter, "--format", "{{.ID}}"]);
        if ids.is_empty() {
            if quiet_since.elapsed() >= SWEEP_QUIET {
                return;
            }
        } else {
            remove(&ids);
            quiet_since = Instant::now();
        }
        std::thread::sleep(SWEEP_POLL);
    }
}

/// Removes the labelled containers of runs that are over: same pid namespace, and their
/// harness (pid and start time) is gone. Best effort: a docker that does not answer is left
/// to the launch that follows to report.
pub(super) fn sweep_dead_runs(pidns: &str) {
    let format =
        format!("{{{{.ID}}}}\t{{{{.Label \"{RUN_LABEL}\"}}}}\t{{{{.Label \"{PIDNS_LABEL}\"}}}}");
    let rows = list(&[
        "--filter",
        &format!("label={RUN_LABEL}"),
        "--format",
        &format,
    ]);
    let stale: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let mut fields = row.split('\t');
            let (id, run, ns) = (fields.next()?, fields.next()?, fields.next()?);
            (ns == pidns && !run_is_alive(run)).then(|| id.to_owned())
        })
        .collect();
    if !stale.is_empty() {
        remove(&stale);
    }
}

/// A run id (`PID-STARTTIME`) whose harness still runs.
pub(super) fn run_is_alive(run: &str) -> bool {
    let Some((pid, start)) = run.split_once('-') else {
        return false;
    };
    match (pid.parse::<i32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// `docker ps -a` lines for `args`; none if docker does not answer.
fn list(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn remove(ids: &[String]) {
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(super) fn start_watchdog(run_id: &str) -> io::Result<(Child, ChildStdin)> {
    super::guard::spawn_watchdog(RUN_WATCHDOG_SCRIPT, "nbd-conform-run-watchdog", run_id)
}

/// The pid namespace of this process, as `/proc/self/ns/pid` names it (`pid:[INODE]`).
pub(super) fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}
