//! The one skeleton every server in a process of its own goes through (`process`, `container`,
//! `spawned`): it makes the server's temp dir and watchdog, starts its command (dying with the
//! harness, stdout and stderr in `server.log` there), waits until a handshake works, and hands
//! it all to a [`Guard`], which kills and reaps it when dropped. A launcher only says what
//! differs, as a [`Recipe`]: the command, where the server listens, what the process the command
//! starts is (which decides how the server is found, watched and stopped), and what a missing
//! program or a server that answered means.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::guard::{Guard, Running, Watchdog};
use super::scratch::{self, SOCKET};
use super::spawner::{spawn_dying_with_harness, ForeignProcess};
use super::template::Listen;
use super::{LaunchError, Launched, Plan, EXPORT_NAME};
use crate::client::{Endpoint, Handshake, Target};
use crate::Dialect;

/// How long a server gets to complete its first handshake (and a daemon to go into the
/// background before that).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// How long one readiness probe waits for the greeting and the reply to ABORT.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The server's stdout and stderr, in its temp dir; its tail is quoted when it fails to come up.
const LOG: &str = "server.log";
/// Why a launch gave up when the harness began to shut down.
const SHUTTING_DOWN: &str = "the harness is shutting down";
/// How long a stopping harness still waits for a forked daemon's pid file, to stop it.
const DAEMON_PID_GRACE: Duration = Duration::from_secs(2);
/// How much of a server's output an error message quotes.
const TAIL_BYTES: u64 = 2048;

/// What one kind of launcher decides about its servers; [`launch`] does all the rest.
pub(super) trait Recipe {
    /// The server's name in reports and errors: "qemu-nbd", "nbdkit in IMAGE", "spawn:sh".
    fn server(&self) -> String;

    /// A word for the temp dir's name, for a human reading /tmp.
    fn label(&self) -> String;

    /// Where the server listens: on `nbd.sock` in its temp dir unless the recipe says otherwise.
    fn listen(&self) -> Listen {
        Listen::Socket
    }

    /// The command that starts the server at `place`, having written any config it reads
    /// into the temp dir.
    fn command(&self, place: &Place<'_>) -> Result<ServerCommand, LaunchError>;

    /// What it means that the command's program is not there; `None` makes it a failure to
    /// start like any other.
    fn missing_program(&self, _program: &OsStr) -> Option<LaunchError> {
        None
    }

    /// The last word once a handshake worked: a recipe that must hold the process it started
    /// checks it still does.
    fn check_answered(
        &self,
        _server: &str,
        _running: &mut Running,
        _endpoint: &Endpoint,
    ) -> Result<(), LaunchError> {
        Ok(())
    }
}

/// Where [`launch`] put one server, for its command line to name.
pub(super) struct Place<'a> {
    /// The server's private temp dir (mode 0700).
    pub(super) dir: &'a Path,
    /// `nbd.sock` in that dir, named even when the server listens on a port (a template may
    /// use `{socket}` for something else).
    pub(super) socket: &'a Path,
    /// Where the harness connects.
    pub(super) endpoint: &'a Endpoint,
}

/// A command line, run directly (no shell), and what the process it starts is.
pub(super) struct ServerCommand {
    pub(super) program: OsString,
    pub(super) args: Vec<OsString>,
    pub(super) process: Process,
}

/// What the process a [`ServerCommand`] starts is: that decides how the server is found, what
/// the watchdog is told, and how the server is stopped.
pub(super) enum Process {
    /// The server itself, in the foreground: killed and reaped to stop it.
    Server,
    /// A process that puts the server into the background and exits, the daemon writing its pid
    /// to `pid_file` (nbd-server): the daemon is terminated, also by the watchdog.
    Daemonizer { pid_file: PathBuf },
    /// The attached `docker run` client of container `name`: the container is removed, also by
    /// the watchdog.
    ContainerClient { name: String },
}

/// Starts the server `recipe` describes and waits until a handshake works. `version` is what
/// the report says; `plan` the fixture it serves.
pub(super) async fn launch(
    recipe: &impl Recipe,
    version: String,
    plan: &Plan,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    let server = recipe.server();
    let scratch = scratch::create(&recipe.label()).map_err(LaunchError::scratch)?;
    let mut watchdog = Watchdog::start(scratch.path()).map_err(LaunchError::watchdog)?;
    let socket = scratch.path().join(SOCKET);
    let endpoint = match recipe.listen() {
        Listen::Socket => Endpoint::Unix(socket.clone()),
        Listen::Port => Endpoint::Tcp {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: free_loopback_port().map_err(|e| {
                LaunchError::Setup(format!("cannot find a free port on 127.0.0.1: {e}"))
            })?,
        },
    };
    let command = recipe.command(&Place {
        dir: scratch.path(),
        socket: &socket,
        endpoint: &endpoint,
    })?;
    if let Process::Daemonizer { pid_file } = &command.process {
        watchdog
            .expect_pid_file(pid_file)
            .map_err(LaunchError::watchdog)?;
    }
    let child = match start(&command, &scratch).await {
        Ok(child) => child,
        Err(e) => return Err(spawn_error(recipe, &command, e)),
    };
    let mut running = match command.process {
        Process::Server => Running::Child(child),
        Process::Daemonizer { pid_file } => {
            let daemon = find_daemon(&server, &endpoint, &scratch, child, &pid_file).await?;
            // Held before the watchdog is told, so that the daemon is stopped if telling fails.
            let running = Running::Daemon(daemon);
            watchdog.watch(daemon).map_err(LaunchError::watchdog)?;
            running
        }
        Process::ContainerClient { name } => Running::Container {
            client: child,
            name,
            removed: false,
        },
    };
    wait_until_ready(&server, &endpoint, &scratch, &mut running).await?;
    recipe.check_answered(&server, &mut running, &endpoint)?;
    Ok(Launched::new(
        server,
        version,
        plan,
        dialect,
        endpoint,
        Guard::new(running, watchdog, scratch),
    ))
}

/// Starts the command in the foreground, dying with the harness, its stdout and stderr in the
/// log.
async fn start(command: &ServerCommand, scratch: &TempDir) -> io::Result<Child> {
    let log = File::create(scratch.path().join(LOG))?;
    let mut child = Command::new(&command.program);
    child
        .args(&command.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn_dying_with_harness(child).await
}

fn spawn_error(recipe: &impl Recipe, command: &ServerCommand, e: io::Error) -> LaunchError {
    let missing = match e.kind() {
        io::ErrorKind::NotFound => recipe.missing_program(&command.program),
        _ => None,
    };
    missing.unwrap_or_else(|| LaunchError::Spawn(describe(command), e))
}

/// The daemon that `daemonizer` puts into the background, found through its pid file once
/// `daemonizer` has exited.
async fn find_daemon(
    server: &str,
    endpoint: &Endpoint,
    scratch: &TempDir,
    mut daemonizer: Child,
    pid_file: &Path,
) -> Result<ForeignProcess, LaunchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let Some(status) = wait_for_exit(&mut daemonizer, deadline).await else {
        let _ = daemonizer.kill();
        let _ = daemonizer.wait();
        return Err(not_ready(
            server,
            endpoint,
            scratch,
            "it never went into the background",
        ));
    };
    if !status.success() {
        let why = format!("it exited with {status}");
        return Err(not_ready(server, endpoint, scratch, &why));
    }
    // Once the harness is stopping, the daemon forked already: wait a little longer for its pid
    // file and hand it over even then (the caller holds it, and stops it), since no one else
    // would (the watchdog is dismissed with this launch). Giving up at once left one running.
    let mut stop_grace: Option<Instant> = None;
    loop {
        let daemon = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .and_then(ForeignProcess::find);
        if let Some(daemon) = daemon {
            return Ok(daemon);
        }
        if super::stopping() {
            let until = *stop_grace.get_or_insert_with(|| Instant::now() + DAEMON_PID_GRACE);
            if Instant::now() >= until {
                return Err(not_ready(server, endpoint, scratch, SHUTTING_DOWN));
            }
        }
        if Instant::now() >= deadline {
            let why = "its daemon wrote no pid file or exited";
            return Err(not_ready(server, endpoint, scratch, why));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The child's exit status, or `None` if it is still running at `deadline`.
async fn wait_for_exit(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            _ => return None,
        }
    }
}

/// Polls until a handshake reaches the option phase (qemu-nbd listens before it has opened its
/// image, so a connection alone proves nothing); a server that exits first is NotReady with its
/// output.
async fn wait_until_ready(
    server: &str,
    endpoint: &Endpoint,
    scratch: &TempDir,
    running: &mut Running,
) -> Result<(), LaunchError> {
    let target = Target {
        endpoint: endpoint.clone(),
        export: EXPORT_NAME.to_owned(),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let failure = match Handshake::start(&target, PROBE_TIMEOUT, None).await {
            Ok(handshake) => {
                let _ = handshake.abort().await;
                return Ok(());
            }
            Err(e) => e,
        };
        if let Some(why) = has_exited(running) {
            return Err(not_ready(server, endpoint, scratch, &why));
        }
        if super::stopping() {
            return Err(not_ready(server, endpoint, scratch, SHUTTING_DOWN));
        }
        if Instant::now() >= deadline {
            let why = format!("no handshake within {READY_TIMEOUT:?} (last try: {failure})");
            return Err(not_ready(server, endpoint, scratch, &why));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How the server's process ended, or `None` while it runs.
pub(super) fn has_exited(running: &mut Running) -> Option<String> {
    match running {
        Running::InProcess(_) => None,
        Running::Child(child) | Running::Container { client: child, .. } => {
            match child.try_wait() {
                Ok(Some(status)) => Some(format!("it exited with {status}")),
                Ok(None) => None,
                Err(e) => Some(format!("cannot wait for it: {e}")),
            }
        }
        Running::Daemon(daemon) => (!daemon.is_alive()).then(|| "its daemon exited".to_owned()),
    }
}

fn not_ready(server: &str, endpoint: &Endpoint, scratch: &TempDir, why: &str) -> LaunchError {
    LaunchError::NotReady {
        server: server.to_owned(),
        listen: endpoint.to_string(),
        reason: why.to_owned(),
        output: tail(&scratch.path().join(LOG)).unwrap_or_default(),
    }
}

/// The end of the output of the server whose temp dir is `scratch` (empty if it has none).
pub(super) fn log_tail(scratch: &Path) -> String {
    tail(&scratch.join(LOG)).unwrap_or_default()
}

/// The command line as an error message shows it.
fn describe(command: &ServerCommand) -> String {
    let mut line = command.program.to_string_lossy().into_owned();
    for arg in &command.args {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The last lines of a server's output.
fn tail(log: &Path) -> io::Result<String> {
    let mut file = File::open(log)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // Drop a line cut in half by the seek.
    let text = match (len > TAIL_BYTES, text.find('\n')) {
        (true, Some(i)) => &text[i + 1..],
        _ => &text[..],
    };
    Ok(text.trim().to_owned())
}

/// A port the kernel just handed out on loopback. Another process could take it before the
/// server binds it; then the server fails to start and says so in its output.
fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
