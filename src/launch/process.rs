//! Third-party servers as child processes: qemu-nbd, nbdkit and nbd-server.
//!
//! Each serves the fixture read-only on `nbd.sock` in its scratch directory, with its stdout
//! and stderr in `server.log` there (quoted when it fails to come up).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::guard::{Guard, Running, Watchdog};
use super::scratch::Scratch;
use super::spawner::{spawn_dying_with_harness, ForeignProcess};
use super::{LaunchError, Launched, Plan, ServerKind, EXPORT_NAME};
use crate::client::{Endpoint, Handshake, Target};
use crate::Dialect;

/// How long a server gets to complete its first handshake.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// How long one readiness probe waits for the greeting and the reply to ABORT.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const LOG: &str = "server.log";

/// Starts `kind` (not the reference server) and waits until a handshake works.
pub(super) async fn launch(
    kind: ServerKind,
    plan: &Plan,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    let version = kind
        .installed_version()
        .ok_or(LaunchError::NotInstalled(kind))?;
    let image = plan.image_for(kind);
    plan.require(image)?;
    let scratch = Scratch::create(kind.name()).map_err(LaunchError::scratch)?;
    let mut watchdog = Watchdog::start(&scratch).map_err(LaunchError::watchdog)?;
    let socket = scratch.path("nbd.sock");
    let mut running = match kind {
        ServerKind::NbdServer => {
            let daemon = start_nbd_server(&scratch, &socket, image).await?;
            let running = Running::Daemon(daemon);
            watchdog.watch(daemon).map_err(LaunchError::watchdog)?;
            running
        }
        _ => {
            let args = foreground_args(kind, plan, &socket, image);
            Running::Child(start_child(kind, args, &scratch).await?)
        }
    };
    let endpoint = Endpoint::Unix(socket.clone());
    wait_until_ready(kind.name(), &endpoint, &scratch, &mut running).await?;
    Ok(Launched::new(
        kind.name().to_owned(),
        version,
        plan,
        dialect,
        endpoint,
        Guard {
            running,
            watchdog: Some(watchdog),
            scratch,
        },
    ))
}

/// The command line of a server that stays in the foreground.
pub(super) fn foreground_args(
    kind: ServerKind,
    plan: &Plan,
    socket: &Path,
    image: &Path,
) -> Vec<OsString> {
    let words = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
    match kind {
        ServerKind::QemuNbd => {
            // -t: keep serving after the first client; -e 32: cases connect side by side
            // (the default of 1 makes a second client wait in the handshake).
            let mut args = words(&["-f", "qcow2", "-r", "-t", "-e", "32", "-x", EXPORT_NAME]);
            args.extend([OsString::from("-k"), socket.into()]);
            for bitmap in &plan.bitmaps {
                args.extend(words(&["-B", &bitmap.name]));
            }
            args.extend([OsString::from("-A"), image.into()]);
            args
        }
        // nbdkit serves any export name, so EXPORT_NAME needs no flag.
        ServerKind::Nbdkit => {
            let mut args = words(&["-f", "--exit-with-parent", "-r", "-U"]);
            args.extend([socket.into(), OsString::from("file"), image.into()]);
            args
        }
        ServerKind::Reference | ServerKind::NbdServer => {
            unreachable!("{} is not a foreground child", kind.name())
        }
    }
}

async fn start_child(
    kind: ServerKind,
    args: Vec<OsString>,
    scratch: &Scratch,
) -> Result<Child, LaunchError> {
    start_program(OsStr::new(kind.name()), &args, scratch)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LaunchError::NotInstalled(kind),
            _ => LaunchError::Spawn(describe(kind.name(), &args), e),
        })
}

/// Starts `program` with `args` in the foreground, dying with the harness, its stdout and
/// stderr in the scratch dir's log.
pub(super) async fn start_program(
    program: &OsStr,
    args: &[OsString],
    scratch: &Scratch,
) -> io::Result<Child> {
    let log = File::create(scratch.path(LOG))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn_dying_with_harness(command).await
}

/// nbd-server daemonises (its `-d` would serve a single connection), so the process we start
/// exits at once and the daemon is found through its pid file.
async fn start_nbd_server(
    scratch: &Scratch,
    socket: &Path,
    raw: &Path,
) -> Result<ForeignProcess, LaunchError> {
    let kind = ServerKind::NbdServer;
    let config = scratch.path("nbd-server.conf");
    let pid_file = scratch.path("nbd-server.pid");
    fs::write(&config, nbd_server_config(socket, raw)?).map_err(LaunchError::scratch)?;
    let args = vec![
        OsString::from("-C"),
        config.into_os_string(),
        OsString::from("-p"),
        pid_file.clone().into_os_string(),
    ];
    let mut parent = start_child(kind, args, scratch).await?;
    let socket = &Endpoint::Unix(socket.to_owned());
    let deadline = Instant::now() + READY_TIMEOUT;
    let Some(status) = wait_for_exit(&mut parent, deadline).await else {
        let _ = parent.kill();
        let _ = parent.wait();
        return Err(not_ready(
            kind.name(),
            socket,
            scratch,
            "it never went into the background",
        ));
    };
    if !status.success() {
        return Err(not_ready(
            kind.name(),
            socket,
            scratch,
            &format!("it exited with {status}"),
        ));
    }
    loop {
        let daemon = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .and_then(ForeignProcess::find);
        if let Some(daemon) = daemon {
            return Ok(daemon);
        }
        if Instant::now() >= deadline {
            return Err(not_ready(
                kind.name(),
                socket,
                scratch,
                "its daemon wrote no pid file or exited",
            ));
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

/// One export, named [`EXPORT_NAME`] (the section name), on a Unix socket only.
pub(super) fn nbd_server_config(socket: &Path, raw: &Path) -> Result<String, LaunchError> {
    let value = |path: &Path| {
        let text = path.to_str().filter(|t| !t.contains(['\n', '\\']));
        text.map(str::to_owned).ok_or_else(|| {
            LaunchError::Setup(format!(
                "nbd-server cannot be configured with the path {}",
                path.display()
            ))
        })
    };
    Ok(format!(
        "[generic]\n    unixsock = {}\n    allowlist = true\n[{EXPORT_NAME}]\n    exportname = {}\n    readonly = true\n",
        value(socket)?,
        value(raw)?
    ))
}

/// Polls until a handshake reaches the option phase (qemu-nbd listens before it has opened its
/// image, so a connection alone proves nothing); a server that exits first is NotReady with its
/// output.
pub(super) async fn wait_until_ready(
    server: &str,
    endpoint: &Endpoint,
    scratch: &Scratch,
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
        if Instant::now() >= deadline {
            let why = format!("no handshake within {READY_TIMEOUT:?} (last try: {failure})");
            return Err(not_ready(server, endpoint, scratch, &why));
        }
        tokio::time::sleep(POLL).await;
    }
}

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

pub(super) fn not_ready(
    server: &str,
    endpoint: &Endpoint,
    scratch: &Scratch,
    why: &str,
) -> LaunchError {
    LaunchError::NotReady {
        server: server.to_owned(),
        listen: endpoint.to_string(),
        reason: why.to_owned(),
        output: scratch.tail(LOG),
    }
}

pub(super) fn describe(program: &str, args: &[OsString]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
