//! Launch every installed server on a real fixture and talk to it; check that stopping leaves
//! nothing behind. Servers that are not installed are skipped with a note (a failure under
//! `NBD_CONFORM_REQUIRE_PEERS=1`, as in `.ci/run`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::guard::Watchdog;
use super::reaper;
use super::scratch;
use super::spawner::{start_time, ForeignProcess};
use super::*;
use crate::client::{Endpoint, Session, SessionOptions};
use crate::fixtures::{self, Built};
use crate::server::Fault;
use crate::wire::consts::{context, draft};
use crate::wire::draft::DraftQuery;

mod cleanup;
mod container;
mod known;
mod pool;
mod spawned;

const FIXTURE: &str = "mixed-4m";
const SIZE: u64 = 4 << 20;

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        fixtures::find(FIXTURE)
            .and_then(|f| f.build(&fixtures::cache_dir()))
            .unwrap_or_else(|e| panic!("fixture {FIXTURE}: {e}"))
    })
}

/// Each test gets its own current-thread runtime, like the cases of a run.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(future)
}

/// What every case runs on: no faults, no variants.
fn plain() -> Behaviour {
    Behaviour::default()
}

/// Starts the plain `kind` on `built`.
async fn launch_known(
    kind: ServerKind,
    built: &Built,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    launch(&kind.into(), FIXTURE, built, dialect, &plain()).await
}

fn spawn(template: &str) -> Launcher {
    Launcher::Spawn(SpawnTemplate::parse(template).expect("template"))
}

/// The plain `kind` from `pool`.
async fn pooled(pool: &Pool, kind: ServerKind, dialect: Dialect) -> Arc<Launched> {
    pool.get(&kind.into(), FIXTURE, built(), dialect, &plain())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()))
}

fn installed(kind: ServerKind) -> bool {
    if kind.installed_version().is_some() {
        return true;
    }
    let why = LaunchError::NotInstalled(kind).to_string();
    if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
        panic!("required peer missing: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

async fn launch_timed(kind: ServerKind, dialect: Dialect) -> Launched {
    let started = Instant::now();
    let launched = launch_known(kind, built(), dialect)
        .await
        .unwrap_or_else(|e| panic!("launch {}: {e}", kind.name()));
    eprintln!(
        "{} {} ({dialect:?}) ready in {:?}",
        kind.name(),
        launched.version,
        started.elapsed()
    );
    launched
}

async fn open(launched: &Launched, structured: bool, contexts: &[&str]) -> Session {
    let options = SessionOptions {
        timeout: Duration::from_secs(5),
        structured,
        extended: false,
        contexts: contexts.iter().map(|c| c.to_string()).collect(),
        dialect: launched.dialect,
    };
    Session::open(&launched.target, &options)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", launched.server))
}

fn socket(launched: &Launched) -> PathBuf {
    match &launched.target.endpoint {
        Endpoint::Unix(path) => path.clone(),
        other => panic!("launched servers listen on Unix sockets, not {other:?}"),
    }
}

fn accepts(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Any process whose command line mentions `dir` (servers, their forks, watchdogs).
fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
                && ForeignProcess::find(*pid).is_some()
        })
        .collect()
}

/// Nothing of a stopped server is left: socket, temp dir, processes.
fn assert_gone(what: &str, socket: &Path, pid: Option<i32>) {
    let dir = socket.parent().expect("socket in a temp dir").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_mentioning(&dir);
        let alive = pid.and_then(ForeignProcess::find);
        if left.is_empty() && alive.is_none() && !dir.exists() && !accepts(socket) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after stopping, dir exists {}, socket accepts {}, pid alive {alive:?}, \
             processes {left:?}",
            dir.exists(),
            accepts(socket)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
