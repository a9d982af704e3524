//! Launch every installed server on a real fixture and talk to it; check that stopping leaves
//! nothing behind. Servers that are not installed are skipped with a note (a failure under
//! `NBD_CONFORM_REQUIRE_PEERS=1`, as in `.ci/run`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::guard::Watchdog;
use super::scratch;
use super::spawner::ForeignProcess;
use super::*;
use crate::client::{Endpoint, Session, SessionOptions};
use crate::fixtures::{self, Built};
use crate::server::Fault;
use crate::wire::consts::{context, draft};
use crate::wire::draft::DraftQuery;

const FIXTURE: &str = "mixed-4m";
const SIZE: u64 = 4 << 20;

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        fixtures::load(&fixtures::fixtures_dir().join(format!("{FIXTURE}.toml")))
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
    let launched = launch(&kind.into(), FIXTURE, built(), dialect, &plain())
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

/// Launch, check the export through a session, drop, check everything is gone.
fn serve_and_stop(kind: ServerKind, structured: bool, contexts: &[&str]) {
    if !installed(kind) {
        return;
    }
    block_on(async {
        let launched = launch_timed(kind, Dialect::Standard).await;
        assert_eq!(launched.target.export, EXPORT_NAME);
        assert_eq!(launched.fixture, FIXTURE);
        let session = open(&launched, structured, contexts).await;
        let expected = match kind {
            ServerKind::QemuNbd => built().qcow2_size,
            _ => SIZE,
        };
        assert_eq!(session.negotiated.size, expected, "{}", kind.name());
        // The reference replays the fixture's bitmap writes, on a private copy.
        let writable = kind == ServerKind::Reference
            && built().truth.bitmaps().iter().any(|b| !b.writes.is_empty());
        assert_eq!(session.negotiated.read_only(), !writable, "{}", kind.name());
        let selected: Vec<&str> = session
            .negotiated
            .contexts
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        for wanted in contexts {
            assert!(
                selected.contains(wanted),
                "{}: {wanted} not in {selected:?}",
                kind.name()
            );
        }
        session.disconnect().await;
        let socket = socket(&launched);
        let pid = launched.pid();
        assert!(pid.is_some() != (kind == ServerKind::Reference));
        drop(launched);
        assert_gone(kind.name(), &socket, pid);
    });
}

#[test]
fn qemu_nbd_serves_the_qcow2_with_bitmaps_and_allocation_depth() {
    serve_and_stop(
        ServerKind::QemuNbd,
        true,
        &[
            "base:allocation",
            "qemu:dirty-bitmap:bm0",
            "qemu:allocation-depth",
        ],
    );
}

#[test]
fn nbdkit_serves_the_raw_file() {
    serve_and_stop(ServerKind::Nbdkit, true, &["base:allocation"]);
}

#[test]
fn nbd_server_serves_the_raw_file_with_simple_replies() {
    serve_and_stop(ServerKind::NbdServer, false, &[]);
}

#[test]
fn reference_serves_the_raw_file() {
    serve_and_stop(ServerKind::Reference, true, &["base:allocation"]);
}

#[test]
fn reference_shows_the_fixture_writes_in_its_dirty_bitmap() {
    block_on(async {
        let launched = launch_timed(ServerKind::Reference, Dialect::Standard).await;
        let bm0 = format!("{}bm0", context::QEMU_DIRTY_BITMAP_PREFIX);
        let mut session = open(&launched, true, &["base:allocation", &bm0]).await;
        let id = session
            .negotiated
            .contexts
            .iter()
            .find(|(_, name)| *name == bm0)
            .map(|(id, _)| *id)
            .expect("bm0 selected");
        let reply = session
            .block_status(0, SIZE, 0)
            .await
            .expect("block status");
        assert_eq!(reply.error(), None);
        let descriptors = reply
            .status_chunks()
            .find(|(context, _)| *context == id)
            .map(|(_, d)| d.to_vec())
            .expect("a chunk for bm0");
        // Writes at 2M and 3.5M, 64K granules: [0,2M) clean, then dirty.
        assert_eq!(descriptors[0].flags, 0, "{descriptors:?}");
        assert_eq!(descriptors[0].length, 2 << 20, "{descriptors:?}");
        assert!(
            descriptors.iter().any(|d| d.flags == context::STATE_DIRTY),
            "{descriptors:?}"
        );
        // The replay wrote the bytes back unchanged.
        let read = session.read(2 << 20, 4096).await.expect("read");
        assert_eq!(read.read_data(), Some(vec![0x77; 4096]));
        // It is writable, but on a copy: the cached image keeps its bytes.
        let reply = session.write(0, &[0x11; 512]).await.expect("write");
        assert_eq!(reply.error(), None);
        let mut cached = [0u8; 512];
        std::fs::File::open(&built().raw)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut cached, 0))
            .unwrap();
        assert_eq!(cached, [0xAA; 512]);
        session.disconnect().await;
    });
}

#[test]
fn reference_in_the_draft_dialect_shows_the_writes_too() {
    block_on(async {
        let launched = launch_timed(ServerKind::Reference, Dialect::Draft).await;
        assert_eq!(launched.dialect, Dialect::Draft);
        let mut session = open(&launched, false, &[]).await;
        assert_eq!(session.negotiated.size, SIZE);
        assert!(session.negotiated.advertises_draft_status());
        let reply = session
            .draft_status(0, SIZE, DraftQuery::Dirty)
            .await
            .expect("GET_LBA_STATUS");
        let crate::client::ReplyBody::Draft {
            error: 0,
            descriptors,
            ..
        } = &reply.body
        else {
            panic!("draft reply expected: {:?}", reply.body);
        };
        let status_at = |offset: u64| {
            descriptors
                .iter()
                .find(|d| d.offset <= offset && offset < d.offset + u64::from(d.length))
                .map(|d| d.status)
        };
        assert_eq!(status_at(0), Some(draft::STATE_CLEAN), "{descriptors:?}");
        assert!(
            matches!(
                status_at(2 << 20),
                Some(draft::STATE_DIRTY | draft::STATE_DIRTY_DEALLOCATED)
            ),
            "{descriptors:?}"
        );
        session.disconnect().await;
    });
}

#[test]
fn only_the_reference_speaks_the_draft() {
    let err = block_on(launch(
        &ServerKind::Nbdkit.into(),
        FIXTURE,
        built(),
        Dialect::Draft,
        &plain(),
    ))
    .expect_err("nbdkit has no draft dialect");
    assert!(matches!(err, LaunchError::Setup(_)), "{err}");
}

#[test]
fn a_server_that_fails_to_start_reports_its_output() {
    if !installed(ServerKind::QemuNbd) {
        return;
    }
    // qemu-nbd -f qcow2 on the raw file refuses it.
    let mut broken = built().clone();
    broken.qcow2 = broken.raw.clone();
    let err = block_on(launch(
        &ServerKind::QemuNbd.into(),
        FIXTURE,
        &broken,
        Dialect::Standard,
        &plain(),
    ))
    .expect_err("not a qcow2");
    let LaunchError::NotReady { output, .. } = &err else {
        panic!("NotReady expected, got {err}");
    };
    assert!(output.contains("qcow2"), "{err}");
    assert!(
        err.to_string().contains("qemu-nbd did not come up"),
        "{err}"
    );
}

#[test]
fn a_missing_image_is_a_fixture_error() {
    let mut broken = built().clone();
    broken.raw = PathBuf::from("/nonexistent/raw.img");
    for kind in [ServerKind::Reference, ServerKind::Nbdkit] {
        if !installed(kind) {
            continue;
        }
        let err = block_on(launch(
            &kind.into(),
            FIXTURE,
            &broken,
            Dialect::Standard,
            &plain(),
        ))
        .expect_err("no image");
        assert!(
            matches!(err, LaunchError::Fixture(_)),
            "{}: {err}",
            kind.name()
        );
    }
}

#[test]
fn not_installed_names_the_package() {
    let message = LaunchError::NotInstalled(ServerKind::Nbdkit).to_string();
    assert!(message.contains("apt-get install nbdkit"), "{message}");
    let message = LaunchError::NotInstalled(ServerKind::QemuNbd).to_string();
    assert!(message.contains("apt-get install qemu-utils"), "{message}");
}

#[test]
fn versions_of_installed_servers() {
    assert_eq!(
        ServerKind::Reference.installed_version().as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for kind in ServerKind::ALL {
        if let Some(version) = kind.installed_version() {
            eprintln!("{} {version}", kind.name());
            assert!(
                version.starts_with(|c: char| c.is_ascii_digit()),
                "{version}"
            );
        }
    }
}

#[test]
fn the_pool_shares_one_server_and_shuts_all_down() {
    let pool = Pool::default();
    let kinds: Vec<ServerKind> = ServerKind::ALL
        .into_iter()
        .filter(|k| installed(*k))
        .collect();
    let mut stopped = Vec::new();
    block_on(async {
        for &kind in &kinds {
            let first = pool
                .get(&kind.into(), FIXTURE, built(), Dialect::Standard, &plain())
                .await
                .unwrap();
            let second = pool
                .get(&kind.into(), FIXTURE, built(), Dialect::Standard, &plain())
                .await
                .unwrap();
            assert!(Arc::ptr_eq(&first, &second), "{}", kind.name());
            stopped.push((kind, socket(&first), first.pid()));
        }
        let draft = pool
            .get(
                &ServerKind::Reference.into(),
                FIXTURE,
                built(),
                Dialect::Draft,
                &plain(),
            )
            .await
            .unwrap();
        let standard = pool
            .get(
                &ServerKind::Reference.into(),
                FIXTURE,
                built(),
                Dialect::Standard,
                &plain(),
            )
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&draft, &standard));
        stopped.push((ServerKind::Reference, socket(&draft), None));
    });
    // Cases run on their own runtimes: the pooled servers outlive the one that started them.
    block_on(async {
        for &kind in &kinds {
            let launched = pool
                .get(&kind.into(), FIXTURE, built(), Dialect::Standard, &plain())
                .await
                .unwrap();
            let structured = kind != ServerKind::NbdServer;
            open(&launched, structured, &[]).await.disconnect().await;
        }
    });
    pool.shutdown_all();
    for (kind, socket, pid) in &stopped {
        assert_gone(kind.name(), socket, *pid);
    }
    pool.shutdown_all();
}

#[test]
fn many_cases_asking_at_once_get_one_server() {
    let pool = Arc::new(Pool::default());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                block_on(pool.get(
                    &ServerKind::Reference.into(),
                    FIXTURE,
                    built(),
                    Dialect::Standard,
                    &plain(),
                ))
                .unwrap()
            })
        })
        .collect();
    let launched: Vec<Arc<Launched>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(launched.iter().all(|l| Arc::ptr_eq(l, &launched[0])));
    let socket = socket(&launched[0]);
    pool.shutdown_all();
    assert_gone("reference", &socket, None);
}

#[test]
fn children_outlive_the_thread_that_asked_for_them() {
    // PDEATHSIG fires when the forking thread exits: the launch happens on a thread that ends
    // at once, and the server must still be there afterwards.
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let launched =
        std::thread::spawn(|| block_on(launch_timed(ServerKind::Nbdkit, Dialect::Standard)))
            .join()
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = launched.pid().expect("a process");
    assert!(
        ForeignProcess::find(pid).is_some(),
        "nbdkit died with its launching thread"
    );
    assert!(accepts(&socket(&launched)));
}

#[test]
fn a_watchdog_cleans_up_when_the_harness_is_gone() {
    let scratch = scratch::create(ServerKind::NbdServer.name()).unwrap();
    let dir = scratch.path().to_owned();
    std::fs::write(scratch.path().join("leftover"), b"x").unwrap();
    let mut daemon = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let process = ForeignProcess::find(daemon.id() as i32).expect("sleep runs");
    let mut watchdog = Watchdog::start(scratch.path()).unwrap();
    watchdog.watch(process).unwrap();
    // The harness "dies": its end of the pipe closes without a word.
    watchdog.abandon();
    let status = daemon.wait().unwrap();
    assert!(
        !status.success(),
        "the watchdog should have terminated it: {status}"
    );
    assert!(
        !dir.exists(),
        "the watchdog should have removed {}",
        dir.display()
    );
}

#[test]
fn a_dismissed_watchdog_does_nothing() {
    let scratch = scratch::create(ServerKind::NbdServer.name()).unwrap();
    let mut daemon = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let process = ForeignProcess::find(daemon.id() as i32).expect("sleep runs");
    let mut watchdog = Watchdog::start(scratch.path()).unwrap();
    watchdog.watch(process).unwrap();
    drop(watchdog);
    assert!(scratch.path().exists());
    assert!(process.is_alive());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn faulty_reference_servers_are_pooled_apart_and_still_replay_writes() {
    let pool = Pool::default();
    let faults = [Fault::DirtyMapMissingWrite];
    block_on(async {
        let clean = pool
            .get(
                &ServerKind::Reference.into(),
                FIXTURE,
                built(),
                Dialect::Standard,
                &plain(),
            )
            .await
            .unwrap();
        let faulty = pool
            .get(
                &ServerKind::Reference.into(),
                FIXTURE,
                built(),
                Dialect::Standard,
                &Behaviour::faults(&faults),
            )
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&clean, &faulty));
        let again = pool
            .get(
                &ServerKind::Reference.into(),
                FIXTURE,
                built(),
                Dialect::Standard,
                &Behaviour::faults(&[faults[0], faults[0]]),
            )
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&faulty, &again), "one server per set of faults");
        // The fixture's writes were replayed (WRITE replies are never faulty), but the faulty
        // bitmap denies them while the clean one shows them.
        let bitmap = format!("{}bm0", context::QEMU_DIRTY_BITMAP_PREFIX);
        let dirty = |reply: crate::client::Reply| {
            reply
                .status_chunks()
                .flat_map(|(_, d)| d.to_vec())
                .any(|d| d.flags & context::STATE_DIRTY != 0)
        };
        for (server, expect_dirty) in [(&clean, true), (&faulty, false)] {
            let mut s = open(server, true, &[&bitmap]).await;
            let reply = s.block_status(0, s.negotiated.size, 0).await.unwrap();
            assert_eq!(dirty(reply), expect_dirty);
            s.disconnect().await;
        }
    });
    pool.shutdown_all();
}

#[test]
fn only_the_reference_server_takes_faults() {
    let err = block_on(launch(
        &ServerKind::Nbdkit.into(),
        FIXTURE,
        built(),
        Dialect::Standard,
        &Behaviour::faults(&[Fault::Hang]),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("reference server only"), "{err}");
}

fn spawn(template: &str) -> Launcher {
    Launcher::Spawn(SpawnTemplate::parse(template).expect("template"))
}

async fn launch_spawned(template: &str) -> Result<Launched, LaunchError> {
    launch(
        &spawn(template),
        FIXTURE,
        built(),
        Dialect::Standard,
        &plain(),
    )
    .await
}

#[test]
fn a_spawn_template_serves_on_a_socket_and_stops_like_a_known_server() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    block_on(async {
        let launched = launch_spawned("nbdkit -f -r -U {socket} file {raw}")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(launched.server, "spawn:nbdkit");
        let session = open(&launched, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, SIZE);
        session.disconnect().await;
        let (socket, pid) = (socket(&launched), launched.pid());
        assert!(pid.is_some());
        drop(launched);
        assert_gone("spawned nbdkit", &socket, pid);
    });
}

#[test]
fn a_spawn_template_can_serve_on_a_loopback_port() {
    if !installed(ServerKind::QemuNbd) {
        return;
    }
    block_on(async {
        let launched = launch_spawned(
            "qemu-nbd -f qcow2 -r -t -e 8 -x {export} -b 127.0.0.1 -p {port} {qcow2}",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let Endpoint::Tcp { host, port } = launched.target.endpoint.clone() else {
            panic!("{:?} is not TCP", launched.target.endpoint);
        };
        assert_eq!(host, "127.0.0.1");
        let session = open(&launched, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, built().qcow2_size);
        session.disconnect().await;
        let pid = launched.pid();
        drop(launched);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            || pid.and_then(ForeignProcess::find).is_some()
        {
            assert!(
                Instant::now() < deadline,
                "qemu-nbd on port {port} outlived its stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn a_spawned_server_that_exits_reports_its_output() {
    // `sh -c` prints and exits: the launch must say so, with what it printed.
    let err = block_on(launch_spawned(
        "sh -c 'echo no export for you on \"$0\" >&2; exit 3' {socket}",
    ))
    .expect_err("it exits");
    let text = err.to_string();
    assert!(text.contains("spawn:sh did not come up"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("no export for you on /"), "{text}");
}

#[test]
fn a_spawn_template_naming_no_program_is_a_clear_error() {
    let err = block_on(launch_spawned("/nonexistent/nbd-srv -U {socket} {raw}"))
        .expect_err("no such program");
    let text = err.to_string();
    assert!(
        text.contains("cannot start /nonexistent/nbd-srv: no such program"),
        "{text}"
    );
}

#[test]
fn a_spawned_server_that_forks_away_is_refused_and_named() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    // Without -f nbdkit goes into the background: the process we start exits at once.
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("nbdkit.pid");
    let template = format!(
        "nbdkit -r -P {} -U {{socket}} file {{raw}}",
        pid_file.display()
    );
    let err = block_on(launch_spawned(&template)).expect_err("it daemonises");
    let pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    // The launcher stopped the runaway; if not, stop it here and fail below.
    let left = pid.and_then(ForeignProcess::find);
    if let Some(d) = left {
        d.terminate(Duration::from_secs(2));
    }
    assert!(
        left.is_none(),
        "the daemon {pid:?} outlived the refused launch"
    );
    let daemon = pid;
    let text = err.to_string();
    assert!(text.contains("went into the background"), "{text}");
    assert!(text.contains("the harness stopped it"), "{text}");
    assert!(daemon.is_some(), "nbdkit wrote no pid file: {text}");
}

#[test]
fn spawned_servers_are_pooled_per_template() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let pool = Pool::default();
    block_on(async {
        let a = spawn("nbdkit -f -r -U {socket} file {raw}");
        let b = spawn("nbdkit -f -r -U {socket} --filter=noextents file {raw}");
        let mut got = Vec::new();
        for l in [&a, &a, &b] {
            let launched = pool
                .get(l, FIXTURE, built(), Dialect::Standard, &plain())
                .await;
            got.push(launched.unwrap_or_else(|e| panic!("{e}")));
        }
        let [a1, a2, b1] = &got[..] else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(a1, a2));
        assert!(!Arc::ptr_eq(a1, b1));
        assert_ne!(a1.target, b1.target);
        pool.shutdown_all();
    });
}

#[test]
fn a_pooled_server_that_died_is_started_again() {
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let pool = Pool::default();
    block_on(async {
        let nbdkit = ServerKind::Nbdkit.into();
        let first = pool
            .get(&nbdkit, FIXTURE, built(), Dialect::Standard, &plain())
            .await;
        let first = first.unwrap_or_else(|e| panic!("{e}"));
        let pid = first.pid().expect("nbdkit runs in a process");
        // What a crash looks like from outside: the process is gone.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.is_running() {
            assert!(Instant::now() < deadline, "nbdkit {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        let second = pool
            .get(&nbdkit, FIXTURE, built(), Dialect::Standard, &plain())
            .await;
        let second = second.unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.is_running());
        let session = open(&second, true, &[context::BASE_ALLOCATION]).await;
        assert_eq!(session.negotiated.size, SIZE);
        session.disconnect().await;
        // A live server is shared, as before.
        let third = pool
            .get(&nbdkit, FIXTURE, built(), Dialect::Standard, &plain())
            .await;
        assert!(Arc::ptr_eq(&second, &third.unwrap()));
        pool.shutdown_all();
    });
}

/// True when docker answers and the peers' image is built (`docker/build-image.sh`); otherwise
/// prints why the caller skips (a failure under `NBD_CONFORM_REQUIRE_PEERS=1`).
fn have_image() -> bool {
    match container_version(ServerKind::Nbdkit, DEFAULT_IMAGE) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
                panic!("required peer missing: {e}");
            }
            eprintln!("SKIP: {e}");
            false
        }
    }
}

/// Whether a container whose name starts with `prefix` exists (running or not).
fn container_exists(prefix: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name=^{prefix}")])
        .output()
        .expect("docker ps");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Container names start with the scratch dir's name (see `container.rs`).
fn container_name(launched: &Launched) -> String {
    let socket = socket(launched);
    let dir = socket.parent().expect("socket in a temp dir");
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn known_servers_serve_from_a_container_and_leave_nothing_behind() {
    if !have_image() {
        return;
    }
    block_on(async {
        for kind in [
            ServerKind::QemuNbd,
            ServerKind::Nbdkit,
            ServerKind::NbdServer,
        ] {
            let launcher = Launcher::Container {
                kind,
                image: DEFAULT_IMAGE.to_owned(),
            };
            let launched = launch(&launcher, FIXTURE, built(), Dialect::Standard, &plain())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", launcher.name()));
            assert_eq!(launched.server, launcher.name());
            let structured = kind != ServerKind::NbdServer;
            let contexts: &[&str] = if structured {
                &[context::BASE_ALLOCATION]
            } else {
                &[]
            };
            let session = open(&launched, structured, contexts).await;
            let expected = match kind {
                ServerKind::QemuNbd => built().qcow2_size,
                _ => SIZE,
            };
            assert_eq!(session.negotiated.size, expected, "{}", launcher.name());
            session.disconnect().await;
            let name = container_name(&launched);
            assert!(container_exists(&name), "{name} should be running");
            let socket = socket(&launched);
            drop(launched);
            assert!(!container_exists(&name), "{name} outlived its stop");
            assert_gone(&launcher.name(), &socket, None);
        }
    });
}

#[test]
fn a_watchdog_removes_the_container_of_a_dead_harness() {
    if !have_image() {
        return;
    }
    let scratch = scratch::create("watchdog-container").unwrap();
    let name = scratch
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let started = std::process::Command::new("docker")
        .args(["run", "-d", "--rm", "--network", "none", "--name", &name])
        .args([DEFAULT_IMAGE, "sleep", "60"])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let mut watchdog = Watchdog::start(scratch.path()).unwrap();
    watchdog.watch_container(&name).unwrap();
    watchdog.abandon();
    let gone = !container_exists(&name);
    if !gone {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .output();
    }
    assert!(gone, "the watchdog should have removed container {name}");
    assert!(!scratch.path().exists());
}

#[test]
fn a_missing_image_says_how_to_build_it() {
    let launcher = Launcher::Container {
        kind: ServerKind::Nbdkit,
        image: "nbd-conform-no-such-image:none".to_owned(),
    };
    let err = block_on(launch(
        &launcher,
        FIXTURE,
        built(),
        Dialect::Standard,
        &plain(),
    ))
    .expect_err("no such image");
    let text = err.to_string();
    assert!(
        text.contains("docker/build-image.sh") || text.contains("cannot run docker"),
        "{text}"
    );
}
