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
        .prefix(&format!("nbd-conform-{}-{label}-", std::process::id()))
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(base)
}
