//! The block sizes an export advertises and keeps (`serve --min-block N --max-payload N`).
//!
//! A server with a minimum block size above 1 must hold its own answers to it too: every
//! descriptor boundary on the grid (BS-REP-MINBLK-1), which [`align`] does by merging the
//! states of a block that straddles a boundary into the one state that is true of all of it.
//! An advertised maximum payload bounds a status chunk's descriptor list (CHUNK-MAXPL-1), which
//! [`descriptors_within`] turns into a count. The min-block and max-payload variants are fixed
//! points of the same and are applied on top of these.

use super::extents::{Allocation, Dirtiness, Extent};
use super::negotiate::BLOCK_SIZES;
use crate::wire::consts::limit;
use crate::wire::handshake::BlockSizes;

/// The sizes to advertise for `--min-block` and `--max-payload` (each optional), or why they
/// cannot be: a minimum that is not a power of two of at most 64 KiB (SIZE-MIN-1), or a
/// maximum below the preferred block size (SIZE-MAX-1) or above what we serve.
pub fn block_sizes(min_block: Option<u32>, max_payload: Option<u32>) -> Result<BlockSizes, String> {
    let minimum = min_block.unwrap_or(BLOCK_SIZES.minimum);
    if !minimum.is_power_of_two() || minimum > 1 << 16 {
        return Err(format!(
            "--min-block {minimum}: a minimum block size is a power of two of at most 65536"
        ));
    }
    let maximum = max_payload.unwrap_or(BLOCK_SIZES.maximum);
    if maximum > limit::MAX_IO_PAYLOAD {
        return Err(format!(
            "--max-payload {maximum}: this server serves at most {} bytes",
            limit::MAX_IO_PAYLOAD
        ));
    }
    // The usual 4 KiB preferred size, unless the minimum is larger or the maximum smaller: the
    // preferred size must sit between max(minimum, 512) and the maximum (SIZE-PREF-1).
    let floor = minimum.max(512);
    let below_max = if maximum >= floor {
        1u32 << (31 - maximum.leading_zeros())
    } else {
        floor
    };
    let preferred = BLOCK_SIZES.preferred.min(below_max).max(floor);
    if maximum < preferred {
        return Err(format!(
            "--max-payload {maximum}: below the preferred block size {preferred}"
        ));
    }
    Ok(BlockSizes {
        minimum,
        preferred,
        maximum,
    })
}

/// Most descriptors one status chunk may carry with `max_payload` advertised: its descriptor
/// list is the variable-length part the maximum bounds (8 bytes each, 16 under extended
/// headers), and never more than the 2^20 a chunk should hold.
pub fn descriptors_within(max_payload: u32, extended: bool) -> usize {
    let each: u32 = if extended { 16 } else { 8 };
    ((max_payload / each) as usize).clamp(1, limit::MAX_DESCRIPTORS_PER_CHUNK)
}

/// A state that can stand for a whole block whose parts are in several states.
pub trait Merge: Copy + Eq {
    /// The one state true of bytes in `self` and bytes in `other`.
    fn merge(self, other: Self) -> Self;
}

impl Merge for Allocation {
    /// Data claims nothing; zero claims zeros only; a hole claims both unallocated and zero.
    fn merge(self, other: Self) -> Self {
        use Allocation::*;
        match (self, other) {
            (Data, _) | (_, Data) => Data,
            (Zero, _) | (_, Zero) => Zero,
            (Hole, Hole) => Hole,
        }
    }
}

impl Merge for Dirtiness {
    /// Dirty is the safe answer (QEMU-DIRTY0-1).
    fn merge(self, other: Self) -> Self {
        if self == Dirtiness::Clean && other == Dirtiness::Clean {
            Dirtiness::Clean
        } else {
            Dirtiness::Dirty
        }
    }
}

/// `extents`, back to back from `offset` and meant to reach `end`, with every boundary between
/// them moved onto the `grid` (absolute multiples): a block that straddles a boundary takes the
/// merged state of its parts. Only `end` may stay off the grid (a request's or the export's
/// unaligned end). Where the scan stopped short of `end` inside a block, that block is left
/// out (the client asks again from its start), unless it is all there is.
pub fn align<S: Merge>(
    extents: Vec<Extent<S>>,
    offset: u64,
    grid: u64,
    end: u64,
) -> Vec<Extent<S>> {
    if grid <= 1 {
        return extents;
    }
    let mut out: Vec<Extent<S>> = Vec::with_capacity(extents.len());
    let mut emit = |length: u64, state: S| {
        if length == 0 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.state == state => last.length += length,
            _ => out.push(Extent::new(length, state)),
        }
    };
    // Emitted up to `done`; consumed up to `pos`. Bytes in [done, pos) lie in one block that
    // a later extent may still share, in the merged state `pending`.
    let (mut done, mut pos) = (offset, offset);
    let mut pending: Option<S> = None;
    for extent in extents.into_iter().filter(|e| e.length > 0) {
        let stop = pos + extent.length;
        if let Some(merged) = pending.take() {
            let block_end = (pos / grid + 1) * grid;
            if stop < block_end {
                pending = Some(merged.merge(extent.state));
                pos = stop;
                continue;
            }
            emit(block_end - done, merged.merge(extent.state));
            done = block_end;
        }
        let whole_end = stop / grid * grid;
        if whole_end > done {
            emit(whole_end - done, extent.state);
            done = whole_end;
        }
        pos = stop;
        if pos > done {
            pending = Some(extent.state);
        }
    }
    if let Some(state) = pending {
        if pos >= end || done == offset {
            emit(pos - done, state);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Allocation::*;

    fn lengths<S: Copy>(list: &[Extent<S>]) -> Vec<(u64, S)> {
        list.iter().map(|e| (e.length, e.state)).collect()
    }

    #[test]
    fn boundaries_move_onto_the_grid_with_the_merged_state() {
        // 4K data, 4K hole, 8K zero, 16K hole on a 8K grid: [0,8K) data+hole → data.
        let extents = vec![
            Extent::new(4096, Data),
            Extent::new(4096, Hole),
            Extent::new(8192, Zero),
            Extent::new(16384, Hole),
        ];
        let got = align(extents, 0, 8192, 32768);
        assert_eq!(lengths(&got), [(8192, Data), (8192, Zero), (16384, Hole)]);
        // Zero and hole in one block: zero (allocated is a safe claim, zero is true).
        let got = align(
            vec![Extent::new(4096, Hole), Extent::new(12288, Zero)],
            0,
            8192,
            16384,
        );
        assert_eq!(lengths(&got), [(16384, Zero)]);
    }

    #[test]
    fn only_the_end_stays_off_the_grid_and_the_total_is_kept() {
        let extents = vec![
            Extent::new(6000, Hole),
            Extent::new(100, Data),
            Extent::new(20000, Hole),
            Extent::new(1000, Zero),
        ];
        let got = align(extents, 65536, 4096, 65536 + 27100);
        let total: u64 = got.iter().map(|e| e.length).sum();
        assert_eq!(total, 27100);
        let mut at = 65536;
        for e in &got[..got.len() - 1] {
            at += e.length;
            assert_eq!(at % 4096, 0, "{got:?}");
        }
        // [64K, 68K) is all hole; the block the data falls in is data.
        assert_eq!((got[0].length, got[0].state), (4096, Hole));
        assert_eq!(got[1].state, Data);
    }

    /// A scan that stopped inside a block (REQ_ONE looks at few extents) does not end the
    /// answer off the grid: the client could not ask from there.
    #[test]
    fn a_block_the_scan_did_not_finish_is_left_out() {
        let extents = vec![Extent::new(65536, Hole), Extent::new(8192, Data)];
        let got = align(extents, 0, 65536, 1 << 20);
        assert_eq!(lengths(&got), [(65536, Hole)]);
        // Unless it is all there is.
        let got = align(vec![Extent::new(8192, Data)], 0, 65536, 1 << 20);
        assert_eq!(lengths(&got), [(8192, Data)]);
    }

    #[test]
    fn the_grid_of_one_changes_nothing() {
        let extents = vec![Extent::new(1, Data), Extent::new(2, Hole)];
        assert_eq!(align(extents.clone(), 7, 1, 10), extents);
    }

    #[test]
    fn sizes_are_checked_and_the_preferred_size_fits_between() {
        let b = block_sizes(Some(4096), Some(1 << 20)).unwrap();
        assert_eq!((b.minimum, b.preferred, b.maximum), (4096, 4096, 1 << 20));
        let b = block_sizes(Some(512), Some(1024)).unwrap();
        assert_eq!((b.minimum, b.preferred, b.maximum), (512, 1024, 1024));
        let b = block_sizes(Some(1 << 16), None).unwrap();
        assert_eq!(b.preferred, 1 << 16);
        assert!(block_sizes(Some(3000), None).is_err());
        assert!(block_sizes(Some(1 << 17), None).is_err());
        assert!(block_sizes(Some(4096), Some(2048)).is_err());
        assert_eq!(block_sizes(None, None).unwrap(), BLOCK_SIZES);
    }

    #[test]
    fn a_maximum_payload_bounds_the_descriptor_count() {
        assert_eq!(descriptors_within(2048, false), 256);
        assert_eq!(descriptors_within(2048, true), 128);
        assert_eq!(descriptors_within(u32::MAX, false), 1 << 20);
    }
}
