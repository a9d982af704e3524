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

/// `text` with every scratch dir of this process (and what follows it in a path) written
/// `{dir}`: the errors of servers launched per fixture differ only there, and masked they
/// compare equal (`run` prints each such error once, with a count).
pub fn mask(text: &str) -> String {
    let marker = format!("{PREFIX}{}-", std::process::id());
    let ends_path = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ':' | ',' | ')');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        // The base dir goes too: `{dir}` names the whole dir, as in a --spawn template.
        let start = rest[..at].rfind(ends_path).map_or(0, |i| i + 1);
        let end = rest[at..].find(ends_path).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str("{dir}");
        // What the path names inside the dir (`/nbd.sock`) is the same every time: kept.
        let inside = rest[at..end].find('/').map_or(end, |i| at + i);
        out.push_str(&rest[inside..end]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_dirs_are_masked_and_what_is_inside_kept() {
        let pid = std::process::id();
        let a = format!("cannot start: /tmp/nbd-conform-{pid}-false-Ab12Cd/nbd.sock: refused");
        let b = format!("cannot start: /tmp/nbd-conform-{pid}-false-Zz99Yy/nbd.sock: refused");
        assert_eq!(super::mask(&a), "cannot start: {dir}/nbd.sock: refused");
        assert_eq!(super::mask(&a), super::mask(&b));
        let other = "cannot start: /tmp/nbd-conform-1-x-Ab/nbd.sock";
        assert_eq!(
            super::mask(other),
            other,
            "another process's dir is not ours to mask"
        );
    }
}
