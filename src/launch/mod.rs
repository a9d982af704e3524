//! Launchers: the harness starts a server under test on a built fixture and says where it
//! listens.
//!
//! Every server serves its fixture read-only (a case that writes gets a server of its own on a
//! private copy, [`launch_writable`], `copy`) in a private temp dir, on a fresh Unix socket (or,
//! for a `--spawn` template with `{port}`, a free port on 127.0.0.1), under the export name
//! [`EXPORT_NAME`], so cases address the same name everywhere:
//! - reference: in-process on the launcher runtime, in either dialect; a fixture's bitmap writes
//!   are replayed so its dirty bitmaps show them, which makes that export writable (on a private
//!   copy of the raw image) (`reference`);
//! - qemu-nbd on the qcow2 (with the fixture's bitmaps and `qemu:allocation-depth`), nbdkit's
//!   file plugin and nbd-server on the raw file (`process`), or the same inside a container
//!   (`container`);
//! - any server from a `--spawn` command template (`template`, `spawned`).
//!
//! The last three only say what differs (a `child_server::Recipe`: the command, where it
//! listens, what the process it starts is); `child_server` starts each, waits until it answers,
//! quotes its log when it does not, and hands it to the guard that kills and reaps it.
//!
//! [`launch`] starts one; [`Pool`] shares one per (server, fixture, dialect, [`Behaviour`])
//! across the cases of a process. Only the reference server takes faults or variants. The parts:
//! - `kind`: the servers ([`ServerKind`]) and their installed versions;
//! - `runtime`: the process-wide runtime launches and the reference server run on;
//! - `spawner`: child processes that die with the harness, and signalling daemons safely;
//! - `scratch`: the per-server temp dir (socket, log, config), short enough for a socket path;
//! - `child_server`: the one skeleton of every server in a process of its own;
//! - `guard`: stopping a server and cleaning up, also when the harness dies abruptly;
//! - `pool`: the shared servers (one that died is started again);
//! - `reaper`: the run's container labels, removal by label, and the sweep of dead runs'.
//!
//! Cleanup (design §8): dropping a [`Launched`] or calling [`Pool::shutdown_all`] stops the
//! server and removes its temp dir. If the harness dies without doing either (panic=abort,
//! Ctrl-C, SIGKILL, or simply exiting with pooled servers up: statics are never dropped), the
//! kernel kills qemu-nbd and nbdkit (`PR_SET_PDEATHSIG`), and each server's watchdog process
//! terminates nbd-server (a daemon, out of PDEATHSIG's reach) and removes the temp dir. The
//! watchdog sits in a process group of its own, so Ctrl-C or a signal to the harness's group
//! does not reach it; only killing a watchdog itself leaves its nbd-server and temp dir behind
//! (the next `run` sweeps temp dirs of dead pids: [`sweep_orphaned_scratch`]). Containers are
//! `reaper`'s: labelled with the run, removed by label on exit ([`shutdown`]), by the run's own
//! watchdog, or by the next harness's sweep.
//! Connections the reference server already accepted outlive a stop until their clients hang up.
//!
//! A server that ends while the harness still uses it is a [`ServerDeath`] (how, when, its last
//! output), noticed once by whoever sees it first (a case, the pool) and handed to the suite by
//! [`take_deaths`].

mod child_server;
mod container;
mod copy;
mod guard;
mod kind;
mod pool;
mod process;
mod reaper;
mod reference;
mod runtime;
mod scratch;
mod spawned;
mod spawner;
mod template;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use container::{version_in as container_version, DEFAULT_IMAGE};
pub use kind::ServerKind;
pub use pool::Pool;
pub use reaper::RUN_LABEL as CONTAINER_RUN_LABEL;
pub use scratch::mask as mask_scratch_dirs;
pub use scratch::sweep_orphaned as sweep_orphaned_scratch;
pub use template::{SpawnTemplate, PLACEHOLDERS};

use crate::client::{Endpoint, Target};
use crate::fixtures::Built;
use crate::server::{Behaviour, BitmapSpec};
use crate::Dialect;
use guard::Guard;

/// The export name every launched server is given (nbdkit accepts any name).
pub const EXPORT_NAME: &str = "conform";

/// A running server. Dropping it (the last `Arc` of a pooled one) stops the server.
#[derive(Debug)]
pub struct Launched {
    /// "qemu-nbd", "reference", or "spawn:PROGRAM" for a `--spawn` template.
    pub server: String,
    /// The installed version; for a spawned server, its template.
    pub version: String,
    pub target: Target,
    pub dialect: Dialect,
    pub fixture: String,
    guard: Mutex<Option<Guard>>,
    /// The private copy of the fixture a writable server serves, removed after the server
    /// (fields drop in order, and [`Launched::stop`] takes the guard first).
    copy: Option<tempfile::TempDir>,
    started: Instant,
    /// Its death, once noticed: recorded for [`take_deaths`] when it is set, so that one death
    /// is one [`ServerDeath`] however many cases and pools ask.
    death: std::sync::OnceLock<ServerDeath>,
}

impl Launched {
    fn new(
        server: String,
        version: String,
        plan: &Plan,
        dialect: Dialect,
        endpoint: Endpoint,
        guard: Guard,
    ) -> Launched {
        Launched {
            server,
            version,
            target: Target {
                endpoint,
                export: EXPORT_NAME.to_owned(),
            },
            dialect,
            fixture: plan.fixture.clone(),
            guard: Mutex::new(Some(guard)),
            copy: None,
            started: Instant::now(),
            death: std::sync::OnceLock::new(),
        }
    }

    /// The server's death, if it ended without the harness stopping it (crashed, killed,
    /// exited); recorded for [`take_deaths`] the first time it is noticed. `None` while it runs
    /// and once the harness stopped it.
    pub fn notice_death(&self) -> Option<ServerDeath> {
        if let Some(death) = self.death.get() {
            return Some(death.clone());
        }
        let mut guard = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        let guard = guard.as_mut()?;
        let (how, from_outside) = guard.running.ended()?;
        let death = ServerDeath {
            server: self.server.clone(),
            fixture: self.fixture.clone(),
            lived: self.started.elapsed(),
            how,
            from_outside,
            log_tail: guard.log_tail(),
        };
        if self.death.set(death.clone()).is_ok() {
            deaths().push((self.dialect, death));
        }
        self.death.get().cloned()
    }

    /// False once the server has ended: stopped, or crashed (a case may crash a server on
    /// purpose, e.g. nbdkit 1.32 on a 4 GiB block-status request).
    pub fn is_running(&self) -> bool {
        let mut guard = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().is_some_and(|g| g.running.is_running())
    }

    /// The in-process reference server: nothing outside the harness can kill it alone.
    pub fn in_process(&self) -> bool {
        let guard = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .is_some_and(|g| matches!(g.running, guard::Running::InProcess(_)))
    }

    /// Stops the server now, even while others hold this `Launched`; later calls do nothing.
    pub(crate) fn stop(&self) {
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(guard);
    }

    /// The server's process id (None for the in-process reference server, or once stopped).
    #[cfg(test)]
    fn pid(&self) -> Option<i32> {
        let guard = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().and_then(|g| g.running.pid())
    }
}

/// A launched server that ended while the harness still used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDeath {
    /// As [`Launched::server`] (and [`Launcher::name`]) say it.
    pub server: String,
    pub fixture: String,
    /// How long it had been up when its end was noticed (an upper bound).
    pub lived: Duration,
    /// "was killed by signal 9 (SIGKILL)", "exited with status 1", "exited (its daemon)".
    pub how: String,
    /// Ended by something outside it: a signal that only a sender outside the server sends
    /// (KILL, TERM, INT, HUP), or a clean exit (status 0, what qemu-nbd and nbdkit do on
    /// SIGTERM). Otherwise it crashed (abort, segfault, an error status), which a request can
    /// cause and which is then a finding of that request's case.
    pub from_outside: bool,
    /// The end of its stdout and stderr.
    pub log_tail: String,
}

impl ServerDeath {
    /// One line for a target's note: what, when, how, and what it printed last.
    pub fn describe(&self) -> String {
        format!(
            "{} (fixture {}) {} {:.1} s after it started; {}",
            self.server,
            self.fixture,
            self.how,
            self.lived.as_secs_f64(),
            self.last_words()
        )
    }

    /// Its last `n` non-empty output lines, oldest first.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let lines: Vec<&str> = self
            .log_tail
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }

    /// What it printed last: nothing that changes from run to run or from a process to a
    /// container (a crash's signal does: nbdkit 1.32.5's assertion ends in SIGABRT here and
    /// SIGSEGV in the image), for a case's note, which its snapshot holds.
    pub fn last_words(&self) -> String {
        match self.log_tail.lines().rfind(|l| !l.trim().is_empty()) {
            Some(line) => format!("it printed last: {}", line.trim()),
            None => "it printed nothing".to_owned(),
        }
    }
}

type Deaths = Mutex<Vec<(Dialect, ServerDeath)>>;

fn deaths() -> std::sync::MutexGuard<'static, Vec<(Dialect, ServerDeath)>> {
    static DEATHS: Deaths = Mutex::new(Vec::new());
    DEATHS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The deaths noticed so far of servers `launcher` started in `dialect`, oldest first; each is
/// handed out once.
pub fn take_deaths(launcher: &Launcher, dialect: Dialect) -> Vec<ServerDeath> {
    let name = launcher.name();
    let mut all = deaths();
    let (mine, others): (Vec<_>, Vec<_>) = all
        .drain(..)
        .partition(|(d, death)| *d == dialect && death.server == name);
    *all = others;
    mine.into_iter().map(|(_, death)| death).collect()
}

/// Why a server could not be launched. Never a conformance verdict: a case that cannot get its
/// server is graded `error`.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{}", .0.not_installed())]
    NotInstalled(ServerKind),
    #[error("cannot start {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
    #[error(
        "{server} did not come up on {listen}: {reason}{}",
        quote_output(output)
    )]
    NotReady {
        server: String,
        /// The socket path or `host:port` it was told to listen on.
        listen: String,
        reason: String,
        /// The tail of the server's stdout and stderr.
        output: String,
    },
    #[error("fixture {0}")]
    Fixture(String),
    #[error("{0}")]
    Setup(String),
}

impl LaunchError {
    fn scratch(e: std::io::Error) -> LaunchError {
        LaunchError::Setup(format!("cannot prepare the server's temp dir: {e}"))
    }

    fn watchdog(e: std::io::Error) -> LaunchError {
        LaunchError::Setup(format!("cannot start the cleanup watchdog (sh): {e}"))
    }
}

fn quote_output(output: &str) -> String {
    if output.is_empty() {
        " (it printed nothing)".to_owned()
    } else {
        format!("; its output ends with:\n{output}")
    }
}

/// What a launcher needs from a built fixture, owned so that a launch can move to the launcher
/// runtime.
#[derive(Debug, Clone)]
struct Plan {
    fixture: String,
    raw: PathBuf,
    qcow2: PathBuf,
    bitmaps: Vec<BitmapSpec>,
    /// Every `(offset, len)` written after the bitmaps were created, sorted, without repeats.
    writes: Vec<(u64, u64)>,
    /// The images are a private copy and the server serves them writable.
    writable: bool,
}

impl Plan {
    /// The image `kind` serves: the qcow2 for qemu-nbd (bitmaps, backing chain), else the raw.
    fn image_for(&self, kind: ServerKind) -> &std::path::Path {
        match kind {
            ServerKind::QemuNbd => &self.qcow2,
            _ => &self.raw,
        }
    }

    /// The same plan with absolute image paths.
    fn absolute(&self) -> std::io::Result<Plan> {
        Ok(Plan {
            raw: std::path::absolute(&self.raw)?,
            qcow2: std::path::absolute(&self.qcow2)?,
            ..self.clone()
        })
    }

    /// A fixture error if `image` is gone (say, its cache entry was deleted mid-run).
    fn require(&self, image: &std::path::Path) -> Result<(), LaunchError> {
        std::fs::metadata(image).map(drop).map_err(|e| {
            LaunchError::Fixture(format!("{}: image {}: {e}", self.fixture, image.display()))
        })
    }

    fn new(fixture: &str, built: &Built) -> Plan {
        let bitmaps = built.truth.bitmaps();
        let mut writes: Vec<(u64, u64)> = bitmaps
            .iter()
            .flat_map(|b| b.writes.iter().copied())
            .collect();
        writes.sort_unstable();
        writes.dedup();
        Plan {
            fixture: fixture.to_owned(),
            raw: built.raw.clone(),
            qcow2: built.qcow2.clone(),
            bitmaps: bitmaps
                .iter()
                .map(|b| BitmapSpec {
                    name: b.name.clone(),
                    granularity: b.granularity,
                })
                .collect(),
            writes,
            writable: false,
        }
    }
}

/// A server the harness starts on each fixture: one it knows, or any server from a `--spawn`
/// template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Launcher {
    Known(ServerKind),
    /// A known server (not the reference) in a container of `image` (`docker/`).
    Container {
        kind: ServerKind,
        image: String,
    },
    Spawn(SpawnTemplate),
}

impl Launcher {
    /// "qemu-nbd", "reference", or "spawn:PROGRAM".
    pub fn name(&self) -> String {
        match self {
            Launcher::Known(kind) => kind.name().to_owned(),
            Launcher::Container { kind, image } => format!("{} in {image}", kind.name()),
            Launcher::Spawn(template) => format!("spawn:{}", template.program_name()),
        }
    }

    /// What a report says the server is: name and version, or the template.
    pub fn describe(&self) -> String {
        match self {
            Launcher::Known(kind) => format!(
                "{} {}",
                kind.name(),
                kind.installed_version()
                    .unwrap_or_else(|| "not installed".into())
            ),
            Launcher::Container { kind, image } => format!(
                "{} {} in {image}",
                kind.name(),
                container::version_in(*kind, image).unwrap_or_else(|e| format!("(unknown: {e})"))
            ),
            Launcher::Spawn(template) => format!("spawned: {template}"),
        }
    }

    /// The dialects it may speak: a spawned server is taken at the user's word.
    pub fn dialects(&self) -> &'static [Dialect] {
        match self {
            Launcher::Known(kind) => kind.dialects(),
            Launcher::Container { .. } => &[Dialect::Standard],
            Launcher::Spawn(_) => &[Dialect::Standard, Dialect::Draft],
        }
    }
}

impl From<ServerKind> for Launcher {
    fn from(kind: ServerKind) -> Launcher {
        Launcher::Known(kind)
    }
}

/// Starts the server `launcher` names serving `built` (raw for reference, nbdkit and
/// nbd-server, qcow2 for qemu-nbd), read-only, on a fresh Unix socket in a private temp dir;
/// returns once a handshake works. (The reference server is writable, on a private copy, for
/// fixtures with bitmap writes: see the module doc.)
///
/// `behaviour` holds faults (clauses broken on purpose, design §7) or variants (legal choices
/// taken on purpose); only the reference server takes them, any other server with either is a
/// setup error. [`Behaviour::default`] is the plain server.
///
/// The work runs on the launcher's own runtime, so the caller's runtime may be short-lived and
/// need not have any driver enabled.
pub async fn launch(
    launcher: &Launcher,
    fixture_name: &str,
    built: &Built,
    dialect: Dialect,
    behaviour: &Behaviour,
) -> Result<Launched, LaunchError> {
    start(launcher, Plan::new(fixture_name, built), dialect, behaviour).await
}

/// [`launch`] on a private, writable copy of the fixture's images (in a temp dir removed with
/// the server), for a case that writes: what it writes reaches neither the fixture cache nor
/// any other case's server.
pub async fn launch_writable(
    launcher: &Launcher,
    fixture_name: &str,
    built: &Built,
    dialect: Dialect,
    behaviour: &Behaviour,
) -> Result<Launched, LaunchError> {
    let dir = scratch::create("copy").map_err(LaunchError::scratch)?;
    let plan = Plan::new(fixture_name, built).writable_copy(dir.path())?;
    let mut launched = start(launcher, plan, dialect, behaviour).await?;
    launched.copy = Some(dir);
    Ok(launched)
}

async fn start(
    launcher: &Launcher,
    plan: Plan,
    dialect: Dialect,
    behaviour: &Behaviour,
) -> Result<Launched, LaunchError> {
    if !launcher.dialects().contains(&dialect) {
        return Err(LaunchError::Setup(format!(
            "{} speaks only the standard dialect, not {dialect:?}",
            launcher.name()
        )));
    }
    if *launcher != Launcher::Known(ServerKind::Reference) && !behaviour.is_plain() {
        return Err(LaunchError::Setup(format!(
            "faults and variants are for the reference server only, not {}",
            launcher.name()
        )));
    }
    if STOPPING.load(Ordering::SeqCst) {
        return Err(LaunchError::Setup("the harness is shutting down".into()));
    }
    let behaviour = behaviour.clone();
    let runtime = runtime::handle().map_err(LaunchError::Setup)?;
    let name = launcher.name();
    let launcher = launcher.clone();
    let (deliver, delivered) = tokio::sync::oneshot::channel();
    let in_flight = InFlight::enter();
    // If the caller goes away, the task still finishes and drops its result (the server) itself,
    // before it leaves the count of launches in flight that `shutdown` waits for.
    runtime.spawn(async move {
        let _in_flight = in_flight;
        let launched = match launcher {
            Launcher::Known(ServerKind::Reference) => {
                reference::launch(&plan, dialect, behaviour).await
            }
            Launcher::Known(kind) => process::launch(kind, &plan, dialect).await,
            Launcher::Container { kind, image } => {
                container::launch(kind, &image, &plan, dialect).await
            }
            Launcher::Spawn(template) => spawned::launch(&template, &plan, dialect).await,
        };
        if let Err(unwanted) = deliver.send(launched) {
            drop(unwanted);
        }
    });
    delivered
        .await
        .map_err(|e| LaunchError::Setup(format!("launching {name} failed: {e}")))?
}

/// Set by [`shutdown`]: launches in flight give up, and no new one starts.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Launches that have not yet handed over (or dropped) their server.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// How long [`shutdown`] waits for launches in flight to give up.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// One launch in [`IN_FLIGHT`], for as long as it lives.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// True once [`shutdown`] began: a launch waiting for its server gives up.
fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// The orderly end of a process that launched servers (`run`, also when interrupted): launches
/// in flight give up and drop what they started, every pooled server stops, and the containers
/// of this run are removed by label (also one whose `docker run` dockerd was still creating).
/// Blocking; bounded (some 40 s at worst, far less in practice). No launch starts afterwards.
pub fn shutdown() {
    STOPPING.store(true, Ordering::SeqCst);
    Pool::global().shutdown_all();
    let deadline = Instant::now() + SETTLE_LIMIT;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Pool::global().shutdown_all();
    reaper::remove_own();
}
