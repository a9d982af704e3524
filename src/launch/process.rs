//! Third-party servers as child processes: qemu-nbd, nbdkit and nbd-server, each started
//! through the `child_server` skeleton. Their command lines live here, for the container
//! launcher too.
//!
//! Each serves the fixture read-only on `nbd.sock` in its temp dir (writable when the plan is
//! a private copy for a case that writes).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;

use super::child_server::{self, Place, Process, Recipe, ServerCommand};
use super::{LaunchError, Launched, Plan, ServerKind, EXPORT_NAME};
use crate::Dialect;

/// Starts `kind` (not the reference server) and waits until a handshake works.
pub(super) async fn launch(
    kind: ServerKind,
    plan: &Plan,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    let version = kind
        .installed_version()
        .ok_or(LaunchError::NotInstalled(kind))?;
    plan.require(plan.image_for(kind))?;
    child_server::launch(&Local { kind, plan }, version, plan, dialect).await
}

/// A known server, run on this machine.
struct Local<'a> {
    kind: ServerKind,
    plan: &'a Plan,
}

impl Recipe for Local<'_> {
    fn server(&self) -> String {
        self.kind.name().to_owned()
    }

    fn label(&self) -> String {
        self.server()
    }

    fn command(&self, place: &Place<'_>) -> Result<ServerCommand, LaunchError> {
        let image = self.plan.image_for(self.kind);
        let (args, process) = match self.kind {
            ServerKind::NbdServer => {
                // nbd-server daemonises (its `-d` would serve a single connection), so the
                // process we start exits at once and the daemon is found through its pid file.
                let config = place.dir.join("nbd-server.conf");
                let pid_file = place.dir.join("nbd-server.pid");
                fs::write(
                    &config,
                    nbd_server_config(place.socket, image, self.plan.writable)?,
                )
                .map_err(LaunchError::scratch)?;
                let args = vec![
                    OsString::from("-C"),
                    config.into_os_string(),
                    OsString::from("-p"),
                    pid_file.clone().into_os_string(),
                ];
                (args, Process::Daemonizer { pid_file })
            }
            kind => (
                foreground_args(kind, self.plan, place.socket, image),
                Process::Server,
            ),
        };
        Ok(ServerCommand {
            program: self.kind.name().into(),
            args,
            process,
        })
    }

    fn missing_program(&self, _program: &OsStr) -> Option<LaunchError> {
        Some(LaunchError::NotInstalled(self.kind))
    }
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
            let mut args = words(&["-f", "qcow2", "-t", "-e", "32", "-x", EXPORT_NAME]);
            if !plan.writable {
                args.push("-r".into());
            }
            args.extend([OsString::from("-k"), socket.into()]);
            for bitmap in &plan.bitmaps {
                args.extend(words(&["-B", &bitmap.name]));
            }
            args.extend([OsString::from("-A"), image.into()]);
            args
        }
        // nbdkit serves any export name, so EXPORT_NAME needs no flag.
        ServerKind::Nbdkit => {
            let mut args = words(&["-f", "--exit-with-parent"]);
            if !plan.writable {
                args.push("-r".into());
            }
            args.push("-U".into());
            args.extend([socket.into(), OsString::from("file"), image.into()]);
            args
        }
        ServerKind::Reference | ServerKind::NbdServer => {
            unreachable!("{} is not a foreground child", kind.name())
        }
    }
}

/// One export, named [`EXPORT_NAME`] (the section name), on a Unix socket only.
pub(super) fn nbd_server_config(
    socket: &Path,
    raw: &Path,
    writable: bool,
) -> Result<String, LaunchError> {
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
        "[generic]\n    unixsock = {}\n    allowlist = true\n[{EXPORT_NAME}]\n    exportname = {}\n    readonly = {}\n",
        value(socket)?,
        value(raw)?,
        !writable
    ))
}
