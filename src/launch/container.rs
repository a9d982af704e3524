//! The servers the harness knows, run inside a container image (`docker run`) instead of as
//! local processes (design §5; the image is built by `docker/build-image.sh`).
//!
//! The container gets no network (`--network none`): the server listens on a Unix socket in
//! the server's scratch dir, which is bind-mounted at the same path, as is the fixture's
//! directory (read-only). Same paths inside and out means the same command lines as the process
//! launcher's. The container runs attached, so the `docker run` client lives exactly as long as
//! the container; stopping removes the container (`docker rm -f`). Every container (the version
//! probe's too) carries the run's labels (`reaper`), by which an orderly exit, the run watchdog
//! (if the harness dies first) and the next harness (if the watchdog died too) remove it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::child_server::{self, Place, Process, Recipe, ServerCommand};
use super::kind::parse_version;
use super::process::{foreground_args, nbd_server_config};
use super::reaper;
use super::{LaunchError, Launched, Plan, ServerKind};
use crate::Dialect;

/// The image `docker/build-image.sh` builds on a Debian bookworm machine.
pub const DEFAULT_IMAGE: &str = "nbd-conform-peers:bookworm";

/// Starts `kind` in a container of `image` on the fixture of `plan`.
pub(super) async fn launch(
    kind: ServerKind,
    image: &str,
    plan: &Plan,
    dialect: Dialect,
) -> Result<Launched, LaunchError> {
    if kind == ServerKind::Reference {
        return Err(LaunchError::Setup(
            "the reference server runs in-process, not in a container".into(),
        ));
    }
    let version = version_in(kind, image)?;
    plan.require(plan.image_for(kind))?;
    // Same paths inside and out only works with absolute ones (a relative NBD_CONFORM_CACHE
    // or TMPDIR would become a docker volume name).
    let plan = &plan.absolute().map_err(LaunchError::scratch)?;
    let recipe = InContainer { kind, image, plan };
    child_server::launch(&recipe, version, plan, dialect).await
}

/// A known server in a container of `image`, serving `plan` (with absolute paths).
struct InContainer<'a> {
    kind: ServerKind,
    image: &'a str,
    plan: &'a Plan,
}

impl Recipe for InContainer<'_> {
    fn server(&self) -> String {
        format!("{} in {}", self.kind.name(), self.image)
    }

    fn label(&self) -> String {
        format!("{}-container", self.kind.name())
    }

    fn command(&self, place: &Place<'_>) -> Result<ServerCommand, LaunchError> {
        let (kind, plan) = (self.kind, self.plan);
        // The temp dir's name is unique per process and launch; the clock's nanoseconds keep
        // two harnesses that drew the same name (in different mount namespaces, one dockerd)
        // apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{}-{nanos:08x}",
            place
                .dir
                .file_name()
                .map_or_else(|| "nbd-conform".into(), |n| n.to_string_lossy())
        );
        let mut mounts: Vec<PathBuf> = Vec::new();
        for file in [&plan.raw, &plan.qcow2] {
            if let Some(dir) = file.parent() {
                if !mounts.iter().any(|m| m == dir) {
                    mounts.push(dir.to_owned());
                }
            }
        }
        let server_command: Vec<OsString> = match kind {
            ServerKind::NbdServer => {
                // nbd-server goes into the background; a container ends with its first
                // process, so a shell waits in the foreground once the daemon is up.
                let config = place.dir.join("nbd-server.conf");
                fs::write(
                    &config,
                    nbd_server_config(place.socket, &plan.raw, plan.writable)?,
                )
                .map_err(LaunchError::scratch)?;
                // The shell stays as long as the daemon does, so that a crashed nbd-server
                // ends its container and the pool starts a new one.
                // The daemon writes its pid file after the first process has returned: wait
                // for it (5 s at most) before watching the pid.
                let script = r#"nbd-server -C "$0" -p "$1" || exit 1
tries=0
while [ ! -s "$1" ]; do
  tries=$((tries + 1)); [ "$tries" -gt 100 ] && exit 1; sleep 0.05
done
while kill -0 "$(cat "$1")" 2>/dev/null; do sleep 0.2; done"#;
                vec![
                    "sh".into(),
                    "-c".into(),
                    script.into(),
                    config.into(),
                    place.dir.join("nbd-server.pid").into(),
                ]
            }
            _ => {
                let mut words = vec![OsString::from(kind.name())];
                words.extend(foreground_args(
                    kind,
                    plan,
                    place.socket,
                    plan.image_for(kind),
                ));
                words
            }
        };
        // As the harness's own user: the server's socket must be one the harness may connect
        // to, and the 0700 temp dir one the server may enter.
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
        let mut args: Vec<OsString> = [
            "run",
            "--rm",
            "--name",
            &name,
            "--network",
            "none",
            "--user",
            &user,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.extend(reaper::labels().into_iter().map(OsString::from));
        for dir in &mounts {
            args.push("--mount".into());
            args.push(bind(dir, !plan.writable));
        }
        args.push("--mount".into());
        args.push(bind(place.dir, false));
        args.push(self.image.into());
        args.extend(server_command);
        Ok(ServerCommand {
            program: "docker".into(),
            args,
            process: Process::ContainerClient { name },
        })
    }
}

/// `type=bind,source=DIR,target=DIR[,readonly]`: `--mount`, not `-v`, because `-v` makes a
/// missing source dir, and a create still in flight in dockerd after the harness removed the
/// server's temp dir (it stopped, or died) would bring that dir back, empty and orphaned.
/// `--mount` reads its value as CSV: a path with a comma or quote is quoted.
fn bind(dir: &Path, read_only: bool) -> OsString {
    let csv = |field: String| {
        if field.contains([',', '"']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field
        }
    };
    let path = dir.to_string_lossy();
    let mut spec = format!(
        "type=bind,{},{}",
        csv(format!("source={path}")),
        csv(format!("target={path}"))
    );
    if read_only {
        spec.push_str(",readonly");
    }
    spec.into()
}

/// The version of `kind` in `image`, asked once per process. An image that is missing, or a
/// docker that does not answer, is a setup error that says how to get the image.
pub fn version_in(kind: ServerKind, image: &str) -> Result<String, LaunchError> {
    type Versions = Mutex<HashMap<(ServerKind, String), Result<String, String>>>;
    static VERSIONS: OnceLock<Versions> = OnceLock::new();
    let key = (kind, image.to_owned());
    let versions = VERSIONS.get_or_init(Default::default);
    if let Some(known) = versions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return known.clone().map_err(LaunchError::Setup);
    }
    let found = ask_version_in(kind, image);
    versions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, found.clone());
    found.map_err(LaunchError::Setup)
}

fn ask_version_in(kind: ServerKind, image: &str) -> Result<String, String> {
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if !inspect.status.success() {
        return Err(format!(
            "container image {image} is not here ({}); build it with docker/build-image.sh",
            String::from_utf8_lossy(&inspect.stderr).trim()
        ));
    }
    for flag in kind.version_flags() {
        let out = Command::new("docker")
            .args(["run", "--rm", "--network", "none"])
            .args(reaper::labels())
            .args([image, kind.name(), flag])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        let text = [out.stdout, out.stderr].concat();
        if let Some(version) = parse_version(&String::from_utf8_lossy(&text)) {
            return Ok(version);
        }
    }
    Err(format!(
        "{} does not answer for its version in {image}; is it installed there?",
        kind.name()
    ))
}
