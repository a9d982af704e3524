//! What keeps a launched server alive, and what takes it down again.
//!
//! Dropping a [`Guard`] stops the server, then dismisses its watchdog, then removes its
//! scratch directory (socket, log, config), in that order.
//!
//! The watchdog covers a harness that dies without dropping anything (SIGKILL, Ctrl-C, `exit`
//! with a pooled server still up): a small `sh` reading a pipe whose only writer is this process.
//! When the harness is gone the pipe reaches EOF and the watchdog terminates a daemonised server
//! (nbd-server, which `PR_SET_PDEATHSIG` cannot reach because it forks away from its parent) and
//! removes the scratch directory. On an orderly stop the harness sends it a line and it exits
//! without doing anything.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::spawner::ForeignProcess;

/// How long a daemon gets between SIGTERM and SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(2);

/// `$1` is the scratch dir. Lines on stdin: `pidfile PATH` (a daemon will write its pid
/// there), `pid N` (the daemon to terminate), `stop` (dismissed). A harness killed between the
/// daemon's fork and `pid N` leaves only the pid file to go by: the watchdog waits up to 5 s for
/// it, since the daemon may not have written it yet. Containers are the run watchdog's
/// (`reaper`): it removes them by label.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT HUP TERM QUIT
pid=
pidfile=
while read -r word arg; do
  case $word in
    pidfile) pidfile=$arg ;;
    pid) pid=$arg ;;
    stop) exit 0 ;;
  esac
done
if [ -z "$pid" ] && [ -n "$pidfile" ]; then
  for _ in $(seq 50); do
    pid=$(cat -- "$pidfile" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] && break
    sleep 0.1
  done
fi
if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; fi
rm -rf -- "$1""#;

/// A launched server and what cleans up after it. Fields drop in the order they are declared,
/// which is the order cleanup needs: the watchdog stays on duty until the server has stopped, and
/// the server never runs in a directory that is gone.
#[derive(Debug)]
pub(super) struct Guard {
    pub(super) running: Running,
    /// Held only to be dropped.
    _watchdog: Watchdog,
    /// Held only to be dropped: that removes the directory and everything in it.
    _scratch: TempDir,
}

impl Guard {
    pub(super) fn new(running: Running, watchdog: Watchdog, scratch: TempDir) -> Guard {
        Guard {
            running,
            _watchdog: watchdog,
            _scratch: scratch,
        }
    }

    /// The end of the server's output (empty for the in-process reference server).
    pub(super) fn log_tail(&self) -> String {
        super::child_server::log_tail(self._scratch.path())
    }
}

/// The server itself; stopped when dropped, so a server that never became ready goes too.
#[derive(Debug)]
pub(super) enum Running {
    /// The reference server's accept loop on the launcher runtime.
    InProcess(tokio::task::AbortHandle),
    /// A foreground child (qemu-nbd, nbdkit).
    Child(Child),
    /// A daemon that forked away from the process we started (nbd-server).
    Daemon(ForeignProcess),
    /// A container (`docker run`, attached: `client` lives as long as the container does).
    Container {
        client: Child,
        name: String,
        /// Set once `docker rm -f` has run, so a second stop costs nothing.
        removed: bool,
    },
}

impl Running {
    /// The server's process id, if it runs in a process of its own.
    #[cfg(test)]
    pub(super) fn pid(&self) -> Option<i32> {
        match self {
            Running::InProcess(_) => None,
            Running::Child(child) => i32::try_from(child.id()).ok(),
            Running::Daemon(daemon) => Some(daemon.pid),
            Running::Container { client, .. } => i32::try_from(client.id()).ok(),
        }
    }

    /// Still serving: the task or process has not ended (crashed, exited, been stopped).
    pub(super) fn is_running(&mut self) -> bool {
        match self {
            Running::InProcess(task) => !task.is_finished(),
            Running::Child(child) => matches!(child.try_wait(), Ok(None)),
            Running::Daemon(daemon) => daemon.is_alive(),
            Running::Container { client, .. } => matches!(client.try_wait(), Ok(None)),
        }
    }

    /// How the server ended without being stopped, and whether something outside it ended it
    /// (see [`super::ServerDeath::from_outside`]); `None` while it runs.
    pub(super) fn ended(&mut self) -> Option<(String, bool)> {
        match self {
            Running::InProcess(task) => task
                .is_finished()
                .then(|| ("ended (its accept loop)".to_owned(), false)),
            Running::Child(child) => child.try_wait().ok().flatten().map(process_end),
            Running::Container { client, .. } => {
                client.try_wait().ok().flatten().map(container_end)
            }
            Running::Daemon(daemon) => {
                (!daemon.is_alive()).then(|| ("exited (its daemon)".to_owned(), false))
            }
        }
    }

    /// Stops the server; a second call does nothing.
    fn stop(&mut self) {
        match self {
            // The task drops the server future, which removes its socket file; connections
            // already accepted end when their clients hang up.
            Running::InProcess(task) => task.abort(),
            Running::Child(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            // nbd-server kills its per-connection children on SIGTERM.
            Running::Daemon(daemon) => daemon.terminate(DAEMON_GRACE),
            // Killing the docker client would leave the container running: remove it, then
            // reap the client (which exits once its container is gone).
            // Also when the client is gone already: a client can die before its container.
            Running::Container {
                client,
                name,
                removed,
            } => {
                if std::mem::replace(removed, true) {
                    return;
                }
                let _ = Command::new("docker")
                    .args(["rm", "-f", name.as_str()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = client.kill();
                let _ = client.wait();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Signals that only come from outside a process: a crash raises others (ABRT, SEGV, BUS, …).
const OUTSIDE_SIGNALS: [i32; 4] = [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// How a server process ended, and whether that was from outside.
fn process_end(status: std::process::ExitStatus) -> (String, bool) {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(signal), _) => (
            format!("was killed by signal {signal} ({})", signal_name(signal)),
            OUTSIDE_SIGNALS.contains(&signal),
        ),
        (None, Some(0)) => (
            "exited with status 0 (what it does on SIGTERM or SIGINT)".to_owned(),
            true,
        ),
        (None, code) => (format!("exited with status {}", code.unwrap_or(-1)), false),
    }
}

/// The same, read from the `docker run` client: the container's process's status, or 128 + the
/// signal that killed it (137 is SIGKILL: `docker kill`, `docker rm -f`, the OOM killer).
fn container_end(status: std::process::ExitStatus) -> (String, bool) {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(code) if code > 128 && code < 160 => {
            let signal = code - 128;
            (
                format!(
                    "was killed by signal {signal} ({}) in its container",
                    signal_name(signal)
                ),
                OUTSIDE_SIGNALS.contains(&signal),
            )
        }
        Some(_) => process_end(status),
        None => (
            format!(
                "lost its docker client (killed by signal {})",
                status.signal().unwrap_or(0)
            ),
            true,
        ),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "another signal",
    }
}

#[derive(Debug)]
pub(super) struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
    /// The pid file of a daemon announced (`expect_pid_file`) but not yet handed over
    /// (`watch`): a launch dropped in between (a run interrupted) must still stop it.
    unclaimed_daemon: Option<PathBuf>,
}

/// Starts a watchdog: `sh -c script name arg`, reading lines from a pipe whose only writer is
/// this process (our end is close-on-exec, so no other child holds it open), so that it sees
/// EOF when the harness dies. A process group of its own keeps it out of reach of signals sent
/// to the harness's group (Ctrl-C, `kill -- -PGID`).
pub(super) fn spawn_watchdog(
    script: &str,
    name: &str,
    arg: impl AsRef<std::ffi::OsStr>,
) -> io::Result<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(name)
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no pipe to the watchdog"))?;
    Ok((child, pipe))
}

impl Watchdog {
    /// Watches for the harness's death; then it removes `scratch`.
    pub(super) fn start(scratch: &Path) -> io::Result<Watchdog> {
        let (child, pipe) = spawn_watchdog(WATCHDOG_SCRIPT, "nbd-conform-watchdog", scratch)?;
        Ok(Watchdog {
            child,
            pipe: Some(pipe),
            unclaimed_daemon: None,
        })
    }

    /// The daemon about to be started writes its pid to `pid_file`: terminate it when the
    /// harness dies before [`Watchdog::watch`] was told.
    pub(super) fn expect_pid_file(&mut self, pid_file: &Path) -> io::Result<()> {
        self.unclaimed_daemon = Some(pid_file.to_owned());
        self.say(&format!("pidfile {}\n", pid_file.display()))
    }

    /// Also terminate `daemon` when the harness dies.
    pub(super) fn watch(&mut self, daemon: ForeignProcess) -> io::Result<()> {
        self.unclaimed_daemon = None;
        self.say(&format!("pid {}\n", daemon.pid))
    }

    fn say(&mut self, line: &str) -> io::Result<()> {
        match &mut self.pipe {
            Some(pipe) => pipe.write_all(line.as_bytes()),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
}

#[cfg(test)]
impl Watchdog {
    /// What the harness's death looks like to the watchdog: the pipe closes unannounced.
    pub(super) fn abandon(mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(pid_file) = self.unclaimed_daemon.take() {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 1);
            // Not written yet: the daemon has not forked or already failed (a watchdog left
            // to wait for it would outlive the run).
            if let Some(pid) = pid {
                // SAFETY: kill(2) touches no memory; the pid is the daemon's own record.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let dismissed = self.say("stop\n").is_ok();
        drop(self.pipe.take());
        if !dismissed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
