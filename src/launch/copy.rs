//! Private copies of a fixture's images: a server that may be written serves a copy, so that
//! nothing a client writes reaches the fixture cache or another case's server.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{LaunchError, Plan};

/// Bytes per copied piece.
const CHUNK: u64 = 1024 * 1024;

impl Plan {
    /// The same plan on a private copy of the images in `dir` (the qcow2's backing file, named
    /// relative to it, is copied next to it), served writable.
    pub(super) fn writable_copy(&self, dir: &Path) -> Result<Plan, LaunchError> {
        let copy = |from: &Path| -> Result<PathBuf, LaunchError> {
            let to = dir.join(from.file_name().unwrap_or_default());
            copy_sparse(from, &to).map_err(|e| {
                LaunchError::Fixture(format!(
                    "{}: cannot copy {}: {e}",
                    self.fixture,
                    from.display()
                ))
            })?;
            Ok(to)
        };
        let backing = self
            .qcow2
            .with_file_name(crate::fixtures::build::BACKING_FILE);
        if backing.is_file() {
            copy(&backing)?;
        }
        Ok(Plan {
            raw: copy(&self.raw)?,
            qcow2: copy(&self.qcow2)?,
            writable: true,
            ..self.clone()
        })
    }
}

/// Copies `src` to a new file `dst` with the same holes: only what SEEK_DATA finds is written.
pub(super) fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
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
