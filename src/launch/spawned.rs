//! Any server, from a `--spawn` template (see `template`): started on each fixture like the
//! servers the harness knows, watched the same way, stopped the same way.

use std::ffi::{OsStr, OsString};

use super::child_server::{self, has_exited, Place, Process, Recipe, ServerCommand};
use super::guard::Running;
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
    plan.require(&plan.raw)?;
    plan.require(&plan.qcow2)?;
    let version = template.text().to_owned();
    child_server::launch(&Spawned { template, plan }, version, plan, dialect).await
}

/// A template's server on the fixture of `plan`. The watchdog removes its temp dir if the
/// harness dies; the server itself dies with the harness through PDEATHSIG, as long as it stays
/// the process we started.
struct Spawned<'a> {
    template: &'a SpawnTemplate,
    plan: &'a Plan,
}

impl Recipe for Spawned<'_> {
    fn server(&self) -> String {
        format!("spawn:{}", self.label())
    }

    fn label(&self) -> String {
        self.template.program_name()
    }

    fn listen(&self) -> Listen {
        self.template.listen()
    }

    fn command(&self, place: &Place<'_>) -> Result<ServerCommand, LaunchError> {
        let port = match place.endpoint {
            Endpoint::Tcp { port, .. } => *port,
            Endpoint::Unix(_) => 0,
        };
        let words = self.template.render(&Values {
            raw: &self.plan.raw,
            qcow2: &self.plan.qcow2,
            socket: place.socket,
            port,
            export: EXPORT_NAME,
            dir: place.dir,
        });
        let (program, args) = words
            .split_first()
            .ok_or_else(|| LaunchError::Setup("the --spawn template is empty".into()))?;
        Ok(ServerCommand {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            process: Process::Server,
        })
    }

    fn missing_program(&self, program: &OsStr) -> Option<LaunchError> {
        Some(LaunchError::Setup(format!(
            "cannot start {}: no such program (the first word of --spawn is run directly, \
             without a shell)",
            program.to_string_lossy()
        )))
    }

    /// It answered, but the process we started is gone: the server forked into the
    /// background, out of the harness's reach (it could be neither stopped nor cleaned up).
    fn check_answered(
        &self,
        server: &str,
        running: &mut Running,
        endpoint: &Endpoint,
    ) -> Result<(), LaunchError> {
        let Some(how) = has_exited(running) else {
            return Ok(());
        };
        let stopped = match endpoint {
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
        Err(LaunchError::Setup(format!(
            "{server} answered on {endpoint}, but the process the harness started {how}: the \
             server went into the background, out of the harness's reach{stopped}. Keep it in \
             the foreground (e.g. nbdkit -f, qemu-nbd without --fork)"
        )))
    }
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
