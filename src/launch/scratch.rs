//! The private temporary directory of one launched server: its socket, log and config.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A Unix socket path must fit `sun_path` (108 bytes with its NUL); leave room for the file name.
const MAX_DIR_LEN: usize = 80;
/// How much of a server's output an error message quotes.
const TAIL_BYTES: u64 = 2048;

/// A directory only this process uses (mode 0700), removed with everything in it on drop.
#[derive(Debug)]
pub(super) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A new directory whose name carries `label` (the server's name), for a human reading /tmp.
    pub(super) fn create(label: &str) -> io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Absolute, so that a socket path means the same in a container or after a chdir.
        let mut base = std::path::absolute(std::env::temp_dir())?;
        if base.as_os_str().len() > MAX_DIR_LEN - 40 {
            base = PathBuf::from("/tmp");
        }
        // A long program name (`--spawn`) must not push the socket path past `sun_path`.
        let label: String = label.chars().take(16).collect();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("nbd-conform-{}-{n}-{}", std::process::id(), label));
            // A directory left by an earlier process with the same pid is skipped, not reused.
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The last lines of a file in this directory (a server's output), or "" if there is none.
    pub(super) fn tail(&self, name: &str) -> String {
        tail(&self.path(name)).unwrap_or_default()
    }

    /// Removes the directory and everything in it; a second call does nothing.
    pub(super) fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove();
    }
}

fn tail(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
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
