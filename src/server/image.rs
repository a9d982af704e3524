//! The image file behind the export: positional I/O, hole punching, and the allocation scan
//! that answers `base:allocation` and the draft's GET_ALLOCATED.
//!
//! Every function here blocks; the transmission loop calls them through `spawn_blocking`.
//! Only positional calls (`pread`, `pwrite`, `fallocate`, `lseek` with SEEK_DATA/SEEK_HOLE, whose
//! result we use rather than the file position) touch the shared descriptor, so concurrent
//! connections never disturb each other.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::extents::{Allocation, Extent, ExtentList};

/// Zero detection looks at blocks of this size, aligned to absolute image offsets, so the same
/// byte always falls in the same block whatever the request offset.
pub const ZERO_GRID: u64 = 4096;
/// How much allocated data one request may read for zero detection before it settles for a
/// shorter answer (BS-REP-SHORT-1); keeps one request cheap on a large, fully allocated image.
pub const SCAN_DATA_BUDGET: u64 = 64 * 1024 * 1024;
/// Bytes read per `pread` while scanning.
const SCAN_BATCH: u64 = 1024 * 1024;
/// Bytes written per `pwrite` when zeroes must be written out.
const ZERO_WRITE_BATCH: u64 = 1024 * 1024;

/// What a scan does once its data budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBudget {
    /// End the answer where the budget ran out (a short reply).
    Stop,
    /// Keep following holes and data with SEEK_DATA/SEEK_HOLE, but report allocated ranges as
    /// data without reading them. Used where covering the whole request matters more
    /// (the draft, DRAFT-DESC-COVER-1).
    AssumeData,
}

/// Bounds on one allocation scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Bytes of allocated data that may be read for zero detection.
    pub data_budget: u64,
    /// Most (merged) extents to produce; e.g. 1 for REQ_ONE.
    pub max_extents: usize,
    pub after_budget: AfterBudget,
}

impl ScanLimits {
    pub fn new(max_extents: usize, after_budget: AfterBudget) -> Self {
        ScanLimits {
            data_budget: SCAN_DATA_BUDGET,
            max_extents,
            after_budget,
        }
    }
}

/// An open image file and its size at open time (the export size).
#[derive(Debug)]
pub struct Image {
    file: File,
    size: u64,
    writable: bool,
}

impl Image {
    /// Opens `path` read-only, or read-write when `writable`. Regular files and block devices
    /// are accepted. Anything else is refused before it is opened: a directory, a FIFO (opening
    /// one waits for a writer, so `serve` would hang before it listens), a socket, or a
    /// character device such as `/dev/zero` (whose size reads as 0, an export with nothing in
    /// it).
    pub fn open(path: &Path, writable: bool) -> io::Result<Image> {
        use std::os::unix::fs::FileTypeExt;
        let kind = std::fs::metadata(path)?.file_type();
        let refused = if kind.is_dir() {
            Some("is a directory")
        } else if kind.is_fifo() {
            Some("is a FIFO, not an image")
        } else if kind.is_socket() {
            Some("is a socket, not an image")
        } else if kind.is_char_device() {
            Some("is a character device, not an image (a block device or a regular file is)")
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        // Seeking to the end works for block devices too, whose metadata length is 0.
        let size = (&file).seek(SeekFrom::End(0))?;
        Ok(Image {
            file,
            size,
            writable,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Reads exactly `length` bytes at `offset`; bytes past the current end of file (if the file
    /// shrank behind our back) read as zeros.
    pub fn read(&self, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; length];
        read_fully_at(&self.file, &mut buf, offset)?;
        Ok(buf)
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deallocates `[offset, offset + length)`, keeping the file size. Returns false when the
    /// file system cannot punch holes (TRIM is advisory, so callers may ignore that).
    pub fn punch_hole(&self, offset: u64, length: u64) -> io::Result<bool> {
        if length == 0 {
            return Ok(true);
        }
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(length))
        else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by `self`.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
            _ => Err(err),
        }
    }

    /// Makes `[offset, offset + length)` read as zeros: by punching a hole when `may_punch`
    /// (and the file system can), otherwise by writing zero bytes.
    pub fn write_zeroes(&self, offset: u64, length: u64, may_punch: bool) -> io::Result<()> {
        if may_punch && self.punch_hole(offset, length)? {
            return Ok(());
        }
        let zeros = vec![0u8; length.min(ZERO_WRITE_BATCH) as usize];
        let mut done = 0u64;
        while done < length {
            let n = (length - done).min(ZERO_WRITE_BATCH) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Allocation of `[offset, offset + length)` as back-to-back extents from `offset`; see
    /// [`scan_allocation`].
    pub fn allocation(
        &self,
        offset: u64,
        length: u64,
        limits: ScanLimits,
    ) -> io::Result<Vec<Extent<Allocation>>> {
        scan_allocation(&self.file, offset, length, limits)
    }
}

/// Allocation of `[offset, offset + length)` in `file`, as back-to-back extents from `offset`.
///
/// Holes come from SEEK_DATA/SEEK_HOLE. Allocated ranges are read on the [`ZERO_GRID`] and each
/// block is classed as zero or data. The answer may stop early (data budget or extent cap), but
/// it is never empty when `length > 0`. If the file system cannot report holes, everything is
/// treated as allocated.
pub fn scan_allocation(
    file: &File,
    offset: u64,
    length: u64,
    limits: ScanLimits,
) -> io::Result<Vec<Extent<Allocation>>> {
    let end = offset.saturating_add(length);
    let mut out = ExtentList::new(limits.max_extents);
    let mut budget = limits.data_budget;
    let mut pos = offset;
    // Where the last hole ended, SEEK_DATA already said data starts: no need to ask again.
    let mut data_known_at = None;
    while pos < end {
        let (state, run_end) = if data_known_at == Some(pos) {
            (RunKind::Data, data_run_end(file, pos, end)?)
        } else {
            next_run(file, pos, end)?
        };
        data_known_at = (state == RunKind::Hole && run_end < end).then_some(run_end);
        let more = match state {
            RunKind::Hole => out.push(run_end - pos, Allocation::Hole),
            RunKind::Data => scan_data_run(
                file,
                pos,
                run_end,
                &mut budget,
                limits.after_budget,
                &mut out,
            )?,
        };
        if !more {
            break;
        }
        pos = run_end;
    }
    if out.is_empty() && length > 0 {
        // Only reachable when the very first block was refused, which the list never does;
        // kept so that callers can rely on "at least one extent".
        out.push(length.min(ZERO_GRID), Allocation::Data);
    }
    Ok(out.into_vec())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKind {
    Hole,
    Data,
}

/// The hole or data run starting at `pos`, clipped to `end`.
fn next_run(file: &File, pos: u64, end: u64) -> io::Result<(RunKind, u64)> {
    let data = match seek(file, pos, libc::SEEK_DATA) {
        Ok(found) => found,
        // No hole support on this file (e.g. some block devices): all data.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok((RunKind::Data, end)),
        Err(e) => return Err(e),
    };
    match data {
        None => Ok((RunKind::Hole, end)),
        Some(d) if d > pos => Ok((RunKind::Hole, d.min(end))),
        Some(_) => Ok((RunKind::Data, data_run_end(file, pos, end)?)),
    }
}

/// The end of the data run at `pos` (known to be data), clipped to `end`.
fn data_run_end(file: &File, pos: u64, end: u64) -> io::Result<u64> {
    // A concurrent punch can make SEEK_HOLE answer `pos` itself; still make progress.
    let hole = seek(file, pos, libc::SEEK_HOLE)?.unwrap_or(end);
    Ok(hole.clamp(pos + 1, end))
}

/// `lseek` with SEEK_DATA or SEEK_HOLE; `None` when there is no such position after `pos`
/// (ENXIO, which also covers `pos` past the end of file).
fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let Ok(pos) = libc::off_t::try_from(pos) else {
        return Ok(None);
    };
    // SAFETY: lseek only reads its integer arguments; the descriptor is owned by `file`.
    let found = unsafe { libc::lseek(file.as_raw_fd(), pos, whence) };
    if found >= 0 {
        return Ok(Some(found as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// Classifies the allocated run `[pos, run_end)` block by block into `out`. Returns false when
/// the scan must end here (extent cap, or budget spent with [`AfterBudget::Stop`]).
fn scan_data_run(
    file: &File,
    mut pos: u64,
    run_end: u64,
    budget: &mut u64,
    after_budget: AfterBudget,
    out: &mut ExtentList<Allocation>,
) -> io::Result<bool> {
    let mut buf = Vec::new();
    while pos < run_end {
        if *budget == 0 {
            return Ok(match after_budget {
                AfterBudget::Stop => false,
                AfterBudget::AssumeData => out.push(run_end - pos, Allocation::Data),
            });
        }
        // Batches end on the grid so that a budget cut never splits a block.
        let batch_end = run_end.min(align_down(pos, ZERO_GRID).saturating_add(SCAN_BATCH));
        buf.resize((batch_end - pos) as usize, 0);
        read_fully_at(file, &mut buf, pos)?;
        if !classify_blocks(&buf, pos, out) {
            return Ok(false);
        }
        *budget = budget.saturating_sub(batch_end - pos);
        pos = batch_end;
    }
    Ok(true)
}

/// Pushes one extent per grid block of `buf` (which starts at image offset `start`).
fn classify_blocks(buf: &[u8], start: u64, out: &mut ExtentList<Allocation>) -> bool {
    let mut at = 0usize;
    while at < buf.len() {
        let offset = start + at as u64;
        let block_end =
            (align_down(offset, ZERO_GRID) + ZERO_GRID - start).min(buf.len() as u64) as usize;
        let block = &buf[at..block_end];
        let state = if is_all_zero(block) {
            Allocation::Zero
        } else {
            Allocation::Data
        };
        if !out.push(block.len() as u64, state) {
            return false;
        }
        at = block_end;
    }
    true
}

fn is_all_zero(block: &[u8]) -> bool {
    static ZEROS: [u8; ZERO_GRID as usize] = [0; ZERO_GRID as usize];
    // Comparing against a zero block compiles to memcmp, fast even in debug builds.
    block.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

fn align_down(value: u64, to: u64) -> u64 {
    value - value % to
}

/// `pread` until `buf` is full; whatever lies past end of file is left as zeros.
fn read_fully_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: u64 = 1024 * 1024;

    /// A 4 MiB sparse image: data at [1M, 1M+8K), an allocated zero block right after it, a
    /// data block at 3M, the rest holes. Returns None if the temp file system cannot punch holes
    /// (then sparse layout cannot be tested reliably).
    fn sparse_image() -> Option<(tempfile::NamedTempFile, Image)> {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4 * MIB).unwrap();
        tmp.as_file().write_all_at(&[0xAB; 8192], MIB).unwrap();
        // An explicitly written zero block is allocated but reads as zero.
        tmp.as_file().write_all_at(&[0; 4096], MIB + 8192).unwrap();
        tmp.as_file().write_all_at(&[1; 4096], 3 * MIB).unwrap();
        tmp.flush().unwrap();
        let image = Image::open(tmp.path(), true).unwrap();
        // Make sure the untouched area really is a hole (some file systems preallocate).
        image.punch_hole(0, MIB).ok()?.then_some(())?;
        let first = seek(image_file(&image), 0, libc::SEEK_DATA).ok()?;
        (first == Some(MIB)).then_some((tmp, image))
    }

    fn image_file(image: &Image) -> &File {
        &image.file
    }

    fn unlimited() -> ScanLimits {
        ScanLimits::new(usize::MAX, AfterBudget::Stop)
    }

    #[test]
    fn whole_image_layout() {
        let Some((_tmp, image)) = sparse_image() else {
            eprintln!("skipping: no hole support in the temp directory");
            return;
        };
        let ex = image.allocation(0, 4 * MIB, unlimited()).unwrap();
        assert_eq!(
            ex,
            vec![
                Extent::new(MIB, Allocation::Hole),
                Extent::new(8192, Allocation::Data),
                Extent::new(4096, Allocation::Zero),
                Extent::new(2 * MIB - 12288, Allocation::Hole),
                Extent::new(4096, Allocation::Data),
                Extent::new(MIB - 4096, Allocation::Hole),
            ]
        );
        assert_eq!(ex.iter().map(|e| e.length).sum::<u64>(), 4 * MIB);
    }

    #[test]
    fn unaligned_request_inside_data_keeps_the_absolute_grid() {
        let Some((_tmp, image)) = sparse_image() else {
            return;
        };
        // Starts 100 bytes into the data, ends 100 bytes into the zero block.
        let ex = image.allocation(MIB + 100, 8192, unlimited()).unwrap();
        assert_eq!(
            ex,
            vec![
                Extent::new(8092, Allocation::Data),
                Extent::new(100, Allocation::Zero)
            ]
        );
    }

    #[test]
    fn punched_range_becomes_a_hole() {
        let Some((_tmp, image)) = sparse_image() else {
            return;
        };
        assert!(image.punch_hole(3 * MIB, 4096).unwrap());
        let ex = image.allocation(2 * MIB, 2 * MIB, unlimited()).unwrap();
        assert_eq!(ex, vec![Extent::new(2 * MIB, Allocation::Hole)]);
        assert_eq!(image.read(3 * MIB, 4096).unwrap(), vec![0; 4096]);
    }

    #[test]
    fn extent_cap_stops_at_the_first_change() {
        let Some((_tmp, image)) = sparse_image() else {
            return;
        };
        let ex = image
            .allocation(0, 4 * MIB, ScanLimits::new(1, AfterBudget::Stop))
            .unwrap();
        assert_eq!(ex, vec![Extent::new(MIB, Allocation::Hole)]);
    }

    #[test]
    fn spent_budget_gives_a_short_answer_or_assumes_data() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file()
            .write_all_at(&vec![7u8; 3 * MIB as usize], 0)
            .unwrap();
        let image = Image::open(tmp.path(), false).unwrap();
        let small = ScanLimits {
            data_budget: MIB,
            ..ScanLimits::new(usize::MAX, AfterBudget::Stop)
        };
        let short = image.allocation(0, 3 * MIB, small).unwrap();
        assert_eq!(short, vec![Extent::new(MIB, Allocation::Data)]);
        let assumed = image
            .allocation(
                0,
                3 * MIB,
                ScanLimits {
                    after_budget: AfterBudget::AssumeData,
                    ..small
                },
            )
            .unwrap();
        assert_eq!(assumed, vec![Extent::new(3 * MIB, Allocation::Data)]);
    }

    #[test]
    fn zero_blocks_inside_data_are_found() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut content = vec![0u8; 16384];
        content[5000] = 1;
        tmp.as_file().write_all_at(&content, 0).unwrap();
        let image = Image::open(tmp.path(), false).unwrap();
        let ex = image.allocation(0, 16384, unlimited()).unwrap();
        assert_eq!(
            ex,
            vec![
                Extent::new(4096, Allocation::Zero),
                Extent::new(4096, Allocation::Data),
                Extent::new(8192, Allocation::Zero),
            ]
        );
    }

    #[test]
    fn write_zeroes_without_punching_writes_zero_bytes() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().write_all_at(&[9u8; 8192], 0).unwrap();
        let image = Image::open(tmp.path(), true).unwrap();
        image.write_zeroes(100, 5000, false).unwrap();
        let data = image.read(0, 8192).unwrap();
        assert!(data[..100].iter().all(|&b| b == 9));
        assert!(data[100..5100].iter().all(|&b| b == 0));
        assert!(data[5100..].iter().all(|&b| b == 9));
    }

    #[test]
    fn reads_past_a_shrunken_file_are_zero() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().write_all_at(&[5u8; 100], 0).unwrap();
        let image = Image::open(tmp.path(), false).unwrap();
        let data = image.read(50, 100).unwrap();
        assert_eq!(&data[..50], &[5u8; 50]);
        assert_eq!(&data[50..], &[0u8; 50]);
    }

    #[test]
    fn refuses_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Image::open(dir.path(), false).is_err());
        // Refused without being opened: a FIFO would block the open, /dev/zero has no size.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = Image::open(&fifo, false).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
        let e = Image::open(Path::new("/dev/zero"), false).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }
}
