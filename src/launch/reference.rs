//! The reference server, in-process on the launcher runtime.
//!
//! Its dirty bitmaps record writes made since it started, so a fixture's bitmap writes are
//! replayed after binding: the bytes of each written range are read from the raw image and
//! written back unchanged through a client session. That dirties the granules without changing
//! the content. The export is writable only for fixtures that need it, and then it is a private
//! copy of the raw image (same holes, same data), so that nothing a client writes can reach the
//! fixture cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::guard::{Guard, Running, Watchdog};
use super::scratch::{self, SOCKET};
use super::{LaunchError, Launched, Plan, ServerKind, EXPORT_NAME};
use crate::client::Endpoint;
use crate::client::{Session, SessionOptions, Target};
use crate::server::{Behaviour, Listen, ServeError, ServeOptions, Server};
use crate::Dialect;

/// Bytes per replayed WRITE (far below every payload cap) and per copied piece.
const CHUNK: u64 = 1024 * 1024;
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

/// Must run on the launcher runtime: the accept loop is spawned onto the current runtime.
/// Neither faults nor variants touch the WRITE replies the replay below depends on (the
/// fixtures' writes are whole 4 KiB blocks, which even a min-block variant accepts).
pub(super) async fn launch(
    plan: &Plan,
    dialect: Dialect,
    behaviour: Behaviour,
) -> Result<Launched, LaunchError> {
    let scratch = scratch::create(ServerKind::Reference.name()).map_err(LaunchError::scratch)?;
    let socket = scratch.path().join(SOCKET);
    let writable = !plan.writes.is_empty();
    let image = if writable {
        let copy = scratch.path().join("raw.img");
        copy_sparse(&plan.raw, &copy).map_err(|e| {
            LaunchError::Fixture(format!(
                "{}: cannot copy {}: {e}",
                plan.fixture,
                plan.raw.display()
            ))
        })?;
        copy
    } else {
        plan.raw.clone()
    };
    let server = Server::bind(ServeOptions {
        image,
        listen: Listen::Unix(socket.clone()),
        export_name: EXPORT_NAME.to_owned(),
        dialect,
        bitmaps: plan.bitmaps.clone(),
        writable,
        faults: behaviour.faults,
        variants: behaviour.variants,
        block_sizes: crate::server::negotiate::BLOCK_SIZES,
    })
    .await
    .map_err(|e| match e {
        ServeError::Image { .. } => LaunchError::Fixture(format!("{}: {e}", plan.fixture)),
        e => LaunchError::Setup(format!("the reference server cannot start: {e}")),
    })?;
    let watchdog = Watchdog::start(scratch.path()).map_err(LaunchError::watchdog)?;
    let task = tokio::spawn(server.run());
    let launched = Launched::new(
        ServerKind::Reference.name().to_owned(),
        ServerKind::Reference
            .installed_version()
            .unwrap_or_default(),
        plan,
        dialect,
        Endpoint::Unix(socket),
        Guard::new(Running::InProcess(task.abort_handle()), watchdog, scratch),
    );
    // On failure `launched` is dropped here, which stops the server again.
    replay_writes(&launched.target, dialect, &plan.raw, &plan.writes)
        .await
        .map_err(|e| e.for_fixture(&plan.fixture))?;
    Ok(launched)
}

/// Why a replay failed: the fixture's image, or the conversation with our own server.
enum ReplayError {
    Image(String),
    Server(String),
}

impl ReplayError {
    fn for_fixture(self, fixture: &str) -> LaunchError {
        match self {
            ReplayError::Image(why) => LaunchError::Fixture(format!("{fixture}: {why}")),
            ReplayError::Server(why) => {
                LaunchError::Setup(format!("replaying {fixture}'s bitmap writes: {why}"))
            }
        }
    }
}

async fn replay_writes(
    target: &Target,
    dialect: Dialect,
    raw: &Path,
    writes: &[(u64, u64)],
) -> Result<(), ReplayError> {
    if writes.is_empty() {
        return Ok(());
    }
    let image = File::open(raw)
        .map_err(|e| ReplayError::Image(format!("cannot open {}: {e}", raw.display())))?;
    let options = SessionOptions {
        timeout: REPLAY_TIMEOUT,
        structured: false,
        extended: false,
        contexts: Vec::new(),
        dialect,
    };
    let mut session = Session::open(target, &options)
        .await
        .map_err(|e| ReplayError::Server(e.to_string()))?;
    for &(offset, length) in writes {
        let end = offset.checked_add(length).ok_or_else(|| {
            ReplayError::Image(format!("bitmap write {offset}+{length} overflows"))
        })?;
        let mut at = offset;
        while at < end {
            let n = (end - at).min(CHUNK);
            let mut bytes = vec![0u8; n as usize];
            image.read_exact_at(&mut bytes, at).map_err(|e| {
                ReplayError::Image(format!(
                    "cannot read {n} bytes at {at} of {}: {e}",
                    raw.display()
                ))
            })?;
            let reply = session
                .write(at, &bytes)
                .await
                .map_err(|e| ReplayError::Server(e.to_string()))?;
            if let Some(error) = reply.error() {
                return Err(ReplayError::Server(format!(
                    "WRITE of {n} bytes at {at} failed with error {error}"
                )));
            }
            at += n;
        }
    }
    session.disconnect().await;
    Ok(())
}

/// Copies `src` to a new file `dst` with the same holes: only what SEEK_DATA finds is written.
fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    let from = File::open(src)?;
    let to = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let size = from.metadata()?.len();
    to.set_len(size)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        let Some(start) = seek(&from, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(&from, start, libc::SEEK_HOLE)?
            .unwrap_or(size)
            .min(size);
        let mut at = start;
        while at < end {
            let piece = &mut buf[..(end - at).min(CHUNK) as usize];
            from.read_exact_at(piece, at)?;
            to.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        // SEEK_HOLE always moves past `start` (a file ends in an implicit hole).
        pos = end.max(start + 1);
    }
    Ok(())
}

/// `lseek` with SEEK_DATA or SEEK_HOLE; `None` when there is nothing of that kind after `pos`.
fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let pos =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a descriptor `file` keeps open; no memory is involved.
    let found = unsafe { libc::lseek(file.as_raw_fd(), pos, whence) };
    match u64::try_from(found) {
        Ok(found) => Ok(Some(found)),
        Err(_) => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_ranges(path: &Path) -> Vec<(u64, u64)> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        let mut ranges = Vec::new();
        let mut pos = 0;
        while let Some(start) = seek(&file, pos, libc::SEEK_DATA).unwrap() {
            let end = seek(&file, start, libc::SEEK_HOLE).unwrap().unwrap_or(size);
            ranges.push((start, end));
            pos = end;
        }
        ranges
    }

    #[test]
    fn a_private_copy_has_the_same_holes_and_bytes() {
        let fixture = crate::fixtures::find("mixed-4m").unwrap();
        let built = fixture.build(&crate::fixtures::cache_dir()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("raw.img");
        copy_sparse(&built.raw, &copy).unwrap();
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(&built.raw).unwrap()
        );
        let ranges = data_ranges(&copy);
        assert_eq!(ranges, data_ranges(&built.raw));
        assert!(ranges.len() > 1, "a sparse fixture: {ranges:?}");
    }
}
