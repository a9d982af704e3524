//! Extents: runs of bytes in one state, and the rules that turn them into a legal reply.
//!
//! The image scanner and the dirty bitmaps both produce back-to-back [`Extent`]s starting at the
//! request offset. [`shape`] then applies every limit the reply must respect (never past the
//! requested length, a cap on descriptor length and count, REQ_ONE), and the `*_status`
//! functions give each state its number in the dialect being spoken. Keeping the numbers here,
//! apart from the states, is what stops the draft's colliding values from leaking into today's.

use crate::wire::consts::{context, draft};
use crate::wire::draft::DraftDescriptor;
use crate::wire::reply::Descriptor;

/// `length` bytes in state `state`. Extents in a list are contiguous; offsets are implicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent<S> {
    pub length: u64,
    pub state: S,
}

impl<S> Extent<S> {
    pub fn new(length: u64, state: S) -> Self {
        Extent { length, state }
    }
}

/// Allocation of a byte range in the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Allocated and (as far as we looked) not all zero.
    Data,
    /// Allocated, and reads as zeros.
    Zero,
    /// Not allocated (a hole in the sparse file); reads as zeros.
    Hole,
}

/// Dirtiness of a byte range in a dirty bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dirtiness {
    Clean,
    Dirty,
    /// Dirty, and a hole in the image now: the draft's hint `NBD_STATE_DIRTY_DEALLOCATED`
    /// (a client backing up the range need not read it). Today's bitmaps call it dirty.
    DirtyDeallocated,
}

/// The draft's dirtiness with its hint: every dirty byte that `allocation` (extents over the
/// same range) calls a hole becomes [`Dirtiness::DirtyDeallocated`]. Where the allocation scan
/// stopped short, dirty stays dirty.
pub fn with_deallocated_hint(
    dirty: &[Extent<Dirtiness>],
    allocation: &[Extent<Allocation>],
) -> Vec<Extent<Dirtiness>> {
    let mut out = ExtentList::new(usize::MAX);
    let mut holes = allocation.iter().copied();
    let mut hole = holes.next();
    for d in dirty {
        let mut left = d.length;
        while left > 0 {
            let Some(a) = hole.as_mut().filter(|a| a.length > 0) else {
                out.push(left, d.state);
                break;
            };
            let piece = left.min(a.length);
            let state = match (d.state, a.state) {
                (Dirtiness::Dirty, Allocation::Hole) => Dirtiness::DirtyDeallocated,
                (state, _) => state,
            };
            out.push(piece, state);
            left -= piece;
            a.length -= piece;
            if a.length == 0 {
                hole = holes.next();
            }
        }
    }
    out.into_vec()
}

/// A list that merges a pushed extent into the previous one when the states match, and refuses
/// to grow beyond a maximum number of extents (so a scan can stop as soon as it has enough).
#[derive(Debug, Clone)]
pub struct ExtentList<S> {
    extents: Vec<Extent<S>>,
    max_extents: usize,
}

impl<S: Copy + Eq> ExtentList<S> {
    pub fn new(max_extents: usize) -> Self {
        ExtentList {
            extents: Vec::new(),
            max_extents: max_extents.max(1),
        }
    }

    /// Appends `length` bytes in `state`. Returns false, without appending, when that would need
    /// one extent more than allowed: the caller should stop producing.
    pub fn push(&mut self, length: u64, state: S) -> bool {
        if length == 0 {
            return true;
        }
        if let Some(last) = self.extents.last_mut() {
            if last.state == state {
                last.length = last.length.saturating_add(length);
                return true;
            }
        }
        if self.extents.len() >= self.max_extents {
            return false;
        }
        self.extents.push(Extent::new(length, state));
        true
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    pub fn into_vec(self) -> Vec<Extent<S>> {
        self.extents
    }
}

/// Limits one block-status answer must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Length the client asked about; the answer never goes past it (we never overshoot).
    pub request_length: u64,
    /// Longest single descriptor the reply format (and our alignment policy) allows.
    pub max_descriptor_length: u64,
    /// Most descriptors in one chunk (BS-REP-CAP-1).
    pub max_descriptors: usize,
    /// `NBD_CMD_FLAG_REQ_ONE`: exactly one descriptor.
    pub req_one: bool,
}

/// Longest compact descriptor we send: 4 KiB below 2^32, so that capped descriptors stay
/// aligned (BS-REP-512-1) while fitting the 32-bit length field.
pub const MAX_COMPACT_DESCRIPTOR: u64 = 0xFFFF_F000;

/// Turns raw extents into the descriptors of one reply: merged, clipped to the request, and cut
/// short (a legal short reply, BS-REP-SHORT-1) at the first descriptor that would exceed the
/// length cap or the count cap. Returns an empty list only if `extents` covers nothing.
pub fn shape<S: Copy + Eq>(
    extents: impl IntoIterator<Item = Extent<S>>,
    limits: &ReplyLimits,
) -> Vec<Extent<S>> {
    let max_descriptors = if limits.req_one {
        1
    } else {
        limits.max_descriptors.max(1)
    };
    let mut merged = ExtentList::new(usize::MAX);
    for extent in extents {
        merged.push(extent.length, extent.state);
    }
    let mut out = Vec::new();
    let mut covered = 0u64;
    for extent in merged.into_vec() {
        let room = limits.request_length - covered;
        if room == 0 || out.len() == max_descriptors {
            break;
        }
        let length = extent.length.min(room);
        if length > limits.max_descriptor_length {
            out.push(Extent::new(limits.max_descriptor_length, extent.state));
            break;
        }
        out.push(Extent::new(length, extent.state));
        covered += length;
    }
    out
}

/// `base:allocation` flags for an allocation state.
pub fn allocation_status(state: Allocation) -> u32 {
    let flags = match state {
        Allocation::Data => 0,
        Allocation::Zero => context::STATE_ZERO,
        Allocation::Hole => context::STATE_HOLE | context::STATE_ZERO,
    };
    flags as u32
}

/// `qemu:dirty-bitmap:*` flags for a dirtiness state.
pub fn dirty_bitmap_status(state: Dirtiness) -> u32 {
    let flags = match state {
        Dirtiness::Clean => 0,
        Dirtiness::Dirty | Dirtiness::DirtyDeallocated => context::STATE_DIRTY,
    };
    flags as u32
}

/// The draft's allocation state value.
pub fn draft_allocation_status(state: Allocation) -> u16 {
    match state {
        Allocation::Data => draft::STATE_ALLOCATED,
        Allocation::Zero => draft::STATE_ZEROED,
        Allocation::Hole => draft::STATE_DEALLOCATED,
    }
}

/// The draft's dirtiness state value (polarity opposite to qemu's bitmaps).
pub fn draft_dirty_status(state: Dirtiness) -> u16 {
    match state {
        Dirtiness::Clean => draft::STATE_CLEAN,
        Dirtiness::Dirty => draft::STATE_DIRTY,
        Dirtiness::DirtyDeallocated => draft::STATE_DIRTY_DEALLOCATED,
    }
}

/// Standard descriptors (implicit offsets) from shaped extents.
pub fn to_descriptors<S: Copy>(
    extents: &[Extent<S>],
    status: impl Fn(S) -> u32,
) -> Vec<Descriptor> {
    extents
        .iter()
        .map(|e| Descriptor {
            length: e.length,
            flags: status(e.state) as u64,
        })
        .collect()
}

/// Draft descriptors (absolute offsets from `start`) from shaped extents. Lengths must already
/// fit in 32 bits (the shaping limits guarantee it).
pub fn to_draft_descriptors<S: Copy>(
    start: u64,
    extents: &[Extent<S>],
    status: impl Fn(S) -> u16,
) -> Vec<DraftDescriptor> {
    let mut offset = start;
    extents
        .iter()
        .map(|e| {
            let d = DraftDescriptor {
                offset,
                length: u32::try_from(e.length).unwrap_or(u32::MAX),
                status: status(e.state),
            };
            offset = offset.saturating_add(e.length);
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(request_length: u64) -> ReplyLimits {
        ReplyLimits {
            request_length,
            max_descriptor_length: u64::MAX,
            max_descriptors: 1 << 20,
            req_one: false,
        }
    }

    #[test]
    fn list_merges_equal_neighbours_and_skips_empty() {
        let mut list = ExtentList::new(10);
        assert!(list.push(10, Dirtiness::Clean));
        assert!(list.push(0, Dirtiness::Dirty));
        assert!(list.push(5, Dirtiness::Clean));
        assert!(list.push(7, Dirtiness::Dirty));
        assert_eq!(
            list.into_vec(),
            vec![
                Extent::new(15, Dirtiness::Clean),
                Extent::new(7, Dirtiness::Dirty)
            ]
        );
    }

    #[test]
    fn list_refuses_beyond_its_maximum_but_still_merges() {
        let mut list = ExtentList::new(1);
        assert!(list.push(1, Dirtiness::Clean));
        assert!(list.push(1, Dirtiness::Clean));
        assert!(!list.push(1, Dirtiness::Dirty));
        assert_eq!(list.into_vec(), vec![Extent::new(2, Dirtiness::Clean)]);
    }

    #[test]
    fn shape_clips_to_the_request() {
        let raw = vec![
            Extent::new(100, Allocation::Data),
            Extent::new(100, Allocation::Hole),
        ];
        let out = shape(raw, &limits(150));
        assert_eq!(
            out,
            vec![
                Extent::new(100, Allocation::Data),
                Extent::new(50, Allocation::Hole)
            ]
        );
    }

    #[test]
    fn shape_caps_descriptor_length_with_a_short_reply() {
        let raw = vec![Extent::new(u32::MAX as u64, Allocation::Hole)];
        let l = ReplyLimits {
            max_descriptor_length: MAX_COMPACT_DESCRIPTOR,
            ..limits(u32::MAX as u64)
        };
        assert_eq!(
            shape(raw, &l),
            vec![Extent::new(MAX_COMPACT_DESCRIPTOR, Allocation::Hole)]
        );
    }

    #[test]
    fn shape_caps_descriptor_count() {
        let raw: Vec<_> = (0..10)
            .map(|i| {
                Extent::new(
                    1,
                    if i % 2 == 0 {
                        Dirtiness::Clean
                    } else {
                        Dirtiness::Dirty
                    },
                )
            })
            .collect();
        let l = ReplyLimits {
            max_descriptors: 3,
            ..limits(10)
        };
        assert_eq!(shape(raw, &l).len(), 3);
    }

    #[test]
    fn shape_req_one_gives_one_descriptor_within_the_request() {
        let raw = vec![
            Extent::new(4096, Allocation::Zero),
            Extent::new(4096, Allocation::Data),
        ];
        let l = ReplyLimits {
            req_one: true,
            ..limits(1000)
        };
        assert_eq!(shape(raw, &l), vec![Extent::new(1000, Allocation::Zero)]);
    }

    #[test]
    fn statuses_keep_the_dialects_apart() {
        assert_eq!(allocation_status(Allocation::Hole), 3);
        assert_eq!(allocation_status(Allocation::Zero), 2);
        assert_eq!(allocation_status(Allocation::Data), 0);
        assert_eq!(draft_allocation_status(Allocation::Hole), 2);
        assert_eq!(draft_allocation_status(Allocation::Zero), 1);
        assert_eq!(dirty_bitmap_status(Dirtiness::Dirty), 1);
        assert_eq!(draft_dirty_status(Dirtiness::Dirty), 0);
        assert_eq!(draft_dirty_status(Dirtiness::Clean), 1);
    }

    #[test]
    fn dirty_holes_get_the_deallocated_hint() {
        use Allocation::{Data, Hole};
        use Dirtiness::{Clean, Dirty, DirtyDeallocated};
        let dirty = [Extent::new(100, Clean), Extent::new(200, Dirty)];
        let allocation = [Extent::new(150, Data), Extent::new(100, Hole)];
        assert_eq!(
            with_deallocated_hint(&dirty, &allocation),
            vec![
                Extent::new(100, Clean),
                Extent::new(50, Dirty),
                Extent::new(100, DirtyDeallocated),
                Extent::new(50, Dirty),
            ]
        );
    }

    #[test]
    fn draft_descriptors_carry_absolute_offsets() {
        let ex = [
            Extent::new(10, Allocation::Data),
            Extent::new(20, Allocation::Hole),
        ];
        let d = to_draft_descriptors(1000, &ex, draft_allocation_status);
        assert_eq!(d[0].offset, 1000);
        assert_eq!(d[1].offset, 1010);
        assert_eq!(d[1].length, 20);
        assert_eq!(d[1].status, 2);
    }
}
