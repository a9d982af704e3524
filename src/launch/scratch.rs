//! The private temporary directory of one launched server (its socket, log and config): a
//! [`TempDir`], removed with everything in it on drop, named so that its socket path fits.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tempfile::TempDir;

/// Where every launched server listens (unless a template asks for a port), in its temp dir.
pub(super) const SOCKET: &str = "nbd.sock";

/// A Unix socket path must fit `sun_path` (108 bytes with its NUL). A base dir longer than this
/// is replaced by /tmp, which leaves room for the dir's name (at most 43 bytes, below) and
/// [`SOCKET`] in it.
const MAX_BASE_LEN: usize = 40;
/// How much of the label the name keeps: a long program name (`--spawn`) must not push the
/// socket path past `sun_path`.
const MAX_LABEL_LEN: usize = 16;

/// The prefix of every scratch dir, before the harness's pid.
const PREFIX: &str = "nbd-conform-";

/// Removes the scratch dirs of harnesses that are gone: their pid (in the name) runs no
/// process. Their watchdogs remove them, but nothing watches a writable fixture copy's dir, and
/// a watchdog can be killed too. A pid means something only in this pid namespace: a temp dir
/// shared with a harness in another one is not this sweep's to judge, so keep TMPDIR private.
pub fn sweep_orphaned() {
    let mut bases = vec![PathBuf::from("/tmp")];
    if let Ok(base) = std::path::absolute(std::env::temp_dir()) {
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && super::spawner::start_time(pid).is_none() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A new directory only this process uses (mode 0700), whose name carries the harness's pid and
/// `label` (the server's name), for a human reading /tmp.
pub(super) fn create(label: &str) -> io::Result<TempDir> {
    // Absolute, so that a socket path means the same in a container or after a chdir.
    let mut base = std::path::absolute(std::env::temp_dir())?;
    if base.as_os_str().len() > MAX_BASE_LEN {
        base = PathBuf::from("/tmp");
    }
    let label: String = label.chars().take(MAX_LABEL_LEN).collect();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-{label}-", std::process::id()))
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(base)
}
