//! Starting child processes that die with the harness, and stopping processes we do not own.
//!
//! A child is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when the harness
//! dies, also on a panic, Ctrl-C or SIGKILL. The signal fires when the *thread* that forked the
//! child exits, and callers run on short-lived test threads, so every fork happens on one
//! long-lived spawner thread that receives requests over a channel.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Starts `command` on the spawner thread, with the parent-death signal set.
pub(super) async fn spawn_dying_with_harness(command: Command) -> io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped a request"))?
}

fn spawner() -> io::Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("nbd-conform-spawner".into())
                .spawn(move || {
                    // The sender lives in a static, so this loop lasts as long as the process.
                    for SpawnRequest { mut command, reply } in rx {
                        set_parent_death_signal(&mut command);
                        let _ = reply.send(command.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: getpid is async-signal-safe; the hook calls only prctl and getppid (both
    // async-signal-safe) and builds its errors without allocating.
    let harness = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The harness died between fork and prctl: the signal will never come.
            if libc::getppid() != harness {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A process we did not fork ourselves (a daemon), named by pid and start time so that a
/// recycled pid is never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ForeignProcess {
    pub(super) pid: i32,
    start_time: u64,
}

impl ForeignProcess {
    /// The live process with this pid, if there is one.
    pub(super) fn find(pid: i32) -> Option<ForeignProcess> {
        let stat = ProcStat::read(pid)?;
        (!stat.is_dead()).then_some(ForeignProcess {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Still running (a zombie waiting for its reaper counts as gone).
    pub(super) fn is_alive(&self) -> bool {
        ProcStat::read(self.pid)
            .is_some_and(|stat| stat.start_time == self.start_time && !stat.is_dead())
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub(super) fn terminate(&self, grace: Duration) {
        if !self.signal(libc::SIGTERM) {
            return;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal(libc::SIGKILL);
    }

    /// Sends `signal` if the process is still this one; says whether it was sent.
    fn signal(&self, signal: i32) -> bool {
        // SAFETY: kill has no memory-safety preconditions.
        self.is_alive() && unsafe { libc::kill(self.pid, signal) } == 0
    }
}

/// The start time (clock ticks after boot) of live process `pid`: with the pid, it names one
/// process for good.
pub(super) fn start_time(pid: i32) -> Option<u64> {
    let stat = ProcStat::read(pid)?;
    (!stat.is_dead()).then_some(stat.start_time)
}

/// The two fields of `/proc/PID/stat` we need.
struct ProcStat {
    state: char,
    start_time: u64,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "PID (COMM) STATE PPID …": COMM may contain anything, so split after its last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            state: fields.first()?.chars().next()?,
            // Field 22 of stat(5); `fields` starts at field 3.
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}
