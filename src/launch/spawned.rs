//! Any server, from a `--spawn` template (see `template`): started on each fixture like the
//! servers the harness knows, watched the same way, stopped the same way.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, TcpListener};

use super::guard::{Guard, Running, Watchdog};
use super::process::{describe, has_exited, start_program, wait_until_ready};
use super::scratch::Scratch;
use super::spawner::ForeignProcess;
use super::template::{Listen, SpawnTemplate, Values};
use super::{LaunchError, Launched, Plan, EXPORT_NAME};
use crate::client::Endpoint;
use crate::Dialect;

/// Starts the template's server on the fixture of `plan` and waits until a handshake works.
pub(super) async fn launch(
    template: &SpawnTemplate,
    plan: &Plan,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    let name = template.program_name();
    let server = format!("spawn:{name}");
    plan.require(&plan.raw)?;
    plan.require(&plan.qcow2)?;
    let scratch = Scratch::create(&name).map_err(LaunchError::scratch)?;
    // The watchdog removes the temp dir if the harness dies; the server itself dies with the
    // harness through PDEATHSIG, as long as it stays the process we started.
    let watchdog = Watchdog::start(&scratch).map_err(LaunchError::watchdog)?;
    let socket = scratch.path("nbd.sock");
    let (endpoint, port) = match template.listen() {
        Listen::Socket => (Endpoint::Unix(socket.clone()), 0),
        Listen::Port => {
            let port = free_loopback_port().map_err(|e| {
                LaunchError::Setup(format!("cannot find a free port on 127.0.0.1: {e}"))
            })?;
            let host = Ipv4Addr::LOCALHOST.to_string();
            (Endpoint::Tcp { host, port }, port)
        }
    };
    let words = template.render(&Values {
        raw: &plan.raw,
        qcow2: &plan.qcow2,
        socket: &socket,
        port,
        export: EXPORT_NAME,
        dir: scratch.dir(),
    });
    let (program, args) = words
        .split_first()
        .ok_or_else(|| LaunchError::Setup("the --spawn template is empty".into()))?;
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let child = start_program(program.as_ref(), &args, &scratch)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LaunchError::Setup(format!(
                "cannot start {program}: no such program (the first word of --spawn is run \
                 directly, without a shell)"
            )),
            _ => LaunchError::Spawn(describe(program, &args), e),
        })?;
    let mut running = Running::Child(child);
    wait_until_ready(&server, &endpoint, &scratch, &mut running).await?;
    // It answered, but the process we started is gone: the server forked into the background,
    // out of the harness's reach (it could be neither stopped nor cleaned up).
    if let Some(how) = has_exited(&mut running) {
        let stopped = match &endpoint {
            // Our private dir: whoever listens there is the server that ran away. Stop it.
            Endpoint::Unix(path) => {
                let pids = listeners_on_unix_socket(path);
                for p in pids.iter().filter_map(|&pid| ForeignProcess::find(pid)) {
                    p.terminate(RUNAWAY_GRACE);
                }
                format!("; the harness stopped it (pid {pids:?})")
            }
            // A port anyone could hold: name it, leave it.
            Endpoint::Tcp { .. } => "; it is still running, stop it by hand".to_owned(),
        };
        return Err(LaunchError::Setup(format!(
            "{server} answered on {endpoint}, but the process the harness started {how}: the \
             server went into the background, out of the harness's reach{stopped}. Keep it in \
             the foreground (e.g. nbdkit -f, qemu-nbd without --fork)"
        )));
    }
    Ok(Launched::new(
        server,
        template.text().to_owned(),
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

/// How long a server that went into the background gets between SIGTERM and SIGKILL.
const RUNAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The processes holding a listening Unix socket bound at `path` (from `/proc/net/unix` and
/// the processes' descriptors). Empty if there is none or `/proc` cannot tell.
fn listeners_on_unix_socket(path: &std::path::Path) -> Vec<i32> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    let wanted = path.to_string_lossy();
    // "Num RefCount Protocol Flags Type St Inode Path"; state 01 is listening.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(7) == Some(&&*wanted) && fields.get(5) == Some(&"01"))
                .then(|| format!("socket:[{}]", fields[6]))
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == &**i))
                })
            })
        })
        .collect()
}

/// A port the kernel just handed out on loopback. Another process could take it before the
/// server binds it; then the server fails to start and says so in its output.
fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
