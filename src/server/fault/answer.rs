//! What faults change in what a status answer says, at each stage the clean server builds it
//! in ([`crate::server::status`]): how far it looks, the states it found, and the descriptors
//! and chunks it shaped from them.

use super::{Fault, Faults};
use crate::server::bitmap::DirtyBitmap;
use crate::server::contexts::ContextKind;
use crate::server::extents::{Allocation, Dirtiness, Extent};
use crate::server::status::{ContextAnswer, ContextExtents, DraftAnswer, Scan, StatusAnswer};
use crate::wire::draft::{DraftDescriptor, DraftQuery};
use crate::wire::reply::Descriptor;
use crate::Dialect;

/// How far `unaligned-to-min-block` moves boundaries, how far `draft-overlap` reaches, and how
/// long the descriptor of `draft-descriptor-outside` is.
const OFF_GRID: u64 = 512;
/// A context id no catalogue hands out (ids are small positions).
const STRANGER_CONTEXT_ID: u32 = 0x00BA_D1D0;
/// What `draft-undefined-status` puts in a GET_ALLOCATED descriptor.
const UNDEFINED_DRAFT_STATUS: u16 = 0x8000;

impl Faults {
    /// How far to scan and whether to keep to one descriptor.
    pub fn scan(&self, scan: &mut Scan) {
        if scan.req_one && self.has(Fault::ReqOneOverrun) {
            scan.length = scan.room;
        } else if scan.req_one && self.has(Fault::ReqOneIgnored) {
            scan.req_one = false;
        } else if !scan.req_one && self.has(Fault::DescriptorsPastRequest) {
            scan.length = scan.room;
        }
    }

    /// The states of one context as the reply will tell them.
    pub fn restate(&self, dialect: Dialect, extents: &mut ContextExtents) {
        match extents {
            ContextExtents::Allocation(extents) => {
                let lie = match dialect {
                    Dialect::Standard => Fault::ZeroOverData,
                    Dialect::Draft => Fault::DraftZeroedOverData,
                };
                if self.has(lie) {
                    for e in extents.iter_mut().filter(|e| e.state == Allocation::Data) {
                        e.state = Allocation::Zero;
                    }
                }
            }
            ContextExtents::Dirtiness(extents) => {
                let lie = match dialect {
                    Dialect::Standard => Fault::DirtyMapMissingWrite,
                    Dialect::Draft => Fault::DraftDirtyMissingWrite,
                };
                if self.has(lie) {
                    for e in extents.iter_mut() {
                        e.state = Dirtiness::Clean;
                    }
                }
                if dialect == Dialect::Draft && self.has(Fault::DraftDeallocatedHintOverData) {
                    for e in extents.iter_mut().filter(|e| e.state == Dirtiness::Dirty) {
                        e.state = Dirtiness::DirtyDeallocated;
                    }
                }
            }
        }
    }

    /// `zero-over-written`: the allocation extents from `offset` on, each data extent a
    /// client wrote into since the server started (`written`) called ZERO.
    pub fn forget_writes(&self, offset: u64, extents: &mut ContextExtents, written: &DirtyBitmap) {
        let ContextExtents::Allocation(extents) = extents else {
            return;
        };
        if !self.has(Fault::ZeroOverWritten) {
            return;
        }
        let mut at = offset;
        for e in extents.iter_mut() {
            let touched = |e: &Extent<Allocation>| {
                written
                    .extents(at, e.length, usize::MAX)
                    .iter()
                    .any(|d| d.state == Dirtiness::Dirty)
            };
            if e.state == Allocation::Data && touched(e) {
                e.state = Allocation::Zero;
            }
            at = at.saturating_add(e.length);
        }
    }

    /// Each context's descriptors, then the list of chunks, of a block-status answer.
    pub fn reshape(&self, answer: &mut StatusAnswer) {
        for context in &mut answer.contexts {
            let list = &mut context.descriptors;
            if list.is_empty() {
                continue;
            }
            if self.has(Fault::DescriptorsPastRequest) && !answer.req_one {
                keep_one_past(list, answer.request_length);
            }
            if self.has(Fault::UnalignedToMinBlock) && context.kind == ContextKind::Allocation {
                move_boundaries_off_grid(list);
            }
            if self.has(Fault::ZeroLengthDescriptor) && !answer.extended && !answer.req_one {
                let flags = list[0].flags ^ 1;
                list.insert(0, Descriptor { length: 0, flags });
            }
        }
        let Some(first) = answer.contexts.first().cloned() else {
            return;
        };
        if self.has(Fault::DuplicateContextChunk) {
            answer.contexts.push(first.clone());
        }
        if self.has(Fault::StrangerContextId) {
            answer.contexts.push(ContextAnswer {
                id: STRANGER_CONTEXT_ID,
                ..first
            });
        }
    }

    /// The descriptors of a GET_LBA_STATUS answer.
    pub fn reshape_draft(&self, answer: &mut DraftAnswer) {
        match answer.query {
            DraftQuery::Other(_) => self.reshape_fallback(&mut answer.descriptors),
            query => {
                self.reshape_answered(answer.offset, answer.length, query, &mut answer.descriptors)
            }
        }
    }

    /// `draft-fallback-split`: the fallback (one status-0 descriptor) in two halves.
    fn reshape_fallback(&self, list: &mut Vec<DraftDescriptor>) {
        let [clean] = list[..] else {
            return;
        };
        if !self.has(Fault::DraftFallbackSplit) || clean.length < 2 {
            return;
        }
        let half = clean.length / 2;
        *list = vec![
            DraftDescriptor {
                length: half,
                ..clean
            },
            DraftDescriptor {
                offset: clean.offset + half as u64,
                length: clean.length - half,
                ..clean
            },
        ];
    }

    /// The descriptors of an answered (not fallback) query over `[offset, offset+length)`.
    fn reshape_answered(
        &self,
        offset: u64,
        length: u64,
        query: DraftQuery,
        list: &mut Vec<DraftDescriptor>,
    ) {
        if list.is_empty() {
            return;
        }
        if self.has(Fault::DraftOverlap) {
            overlap_with_safe_state(list);
        }
        if self.has(Fault::DraftUndefinedStatus) && query == DraftQuery::Allocated {
            list[0].status = UNDEFINED_DRAFT_STATUS;
        }
        // Not for a request too short to need that many descriptors: the client would stop at
        // the parameter length before it looked at them (DRAFT-BOUND-1).
        if self.has(Fault::DraftDescriptorOutside) && (list.len() as u64) < length {
            // Status 0 is the safe answer of both queries (ALLOCATED, DIRTY).
            list.push(DraftDescriptor {
                offset: offset.saturating_add(length),
                length: OFF_GRID as u32,
                status: 0,
            });
        }
    }
}

/// `descriptors-past-request`: keeps every descriptor that starts inside the request, and the
/// first one after it.
fn keep_one_past(list: &mut Vec<Descriptor>, request_length: u64) {
    let mut start = 0u64;
    let first_outside = list.iter().position(|d| {
        let outside = start >= request_length;
        start = start.saturating_add(d.length);
        outside
    });
    if let Some(i) = first_outside {
        list.truncate(i + 1);
    }
}

/// `unaligned-to-min-block`: every boundary between data (status 0, the safe answer) and
/// anything else moves 512 bytes into the other side, so a 4 KiB-aligned boundary lands on an
/// odd multiple of 512. Only data grows, so nothing is called zero that is not.
fn move_boundaries_off_grid(list: &mut [Descriptor]) {
    for i in 1..list.len() {
        let (left, right) = (list[i - 1], list[i]);
        if left.flags == 0 && right.flags != 0 && right.length > OFF_GRID {
            list[i - 1].length += OFF_GRID;
            list[i].length -= OFF_GRID;
        } else if left.flags != 0 && right.flags == 0 && left.length > OFF_GRID {
            list[i - 1].length -= OFF_GRID;
            list[i].length += OFF_GRID;
        }
    }
}

/// `draft-overlap`: at the first boundary between status 0 (the safe answer of both queries)
/// and another status, the status-0 descriptor reaches up to 512 bytes into its neighbour.
fn overlap_with_safe_state(list: &mut [DraftDescriptor]) {
    for i in 1..list.len() {
        let (left, right) = (list[i - 1], list[i]);
        if left.status == 0 && right.status != 0 {
            let reach = right.length.min(OFF_GRID as u32);
            list[i - 1].length = left.length.saturating_add(reach);
            return;
        }
        if left.status != 0 && right.status == 0 {
            let reach = left.length.min(OFF_GRID as u32);
            list[i].offset -= reach as u64;
            list[i].length = right.length.saturating_add(reach);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::extents::Extent;

    fn d(length: u64, flags: u64) -> Descriptor {
        Descriptor { length, flags }
    }

    fn answer(descriptors: Vec<Descriptor>) -> StatusAnswer {
        StatusAnswer {
            request_length: 12288,
            req_one: false,
            extended: false,
            contexts: vec![ContextAnswer {
                id: 0,
                kind: ContextKind::Allocation,
                descriptors,
            }],
        }
    }

    #[test]
    fn no_faults_change_nothing() {
        let none = Faults::default();
        let clean = answer(vec![d(4096, 0), d(8192, 3)]);
        let mut reshaped = clean.clone();
        none.reshape(&mut reshaped);
        assert_eq!(reshaped, clean);
        let clean_scan = Scan {
            length: 100,
            req_one: true,
            room: 1000,
        };
        let mut scan = clean_scan;
        none.scan(&mut scan);
        assert_eq!(scan, clean_scan);
        let clean_extents = ContextExtents::Allocation(vec![Extent::new(512, Allocation::Data)]);
        let mut extents = clean_extents.clone();
        none.restate(Dialect::Standard, &mut extents);
        assert_eq!(extents, clean_extents);
    }

    #[test]
    fn extra_chunks_copy_the_first_context() {
        let f = Faults::new([Fault::DuplicateContextChunk, Fault::StrangerContextId]);
        let mut reshaped = answer(vec![d(4096, 0)]);
        f.reshape(&mut reshaped);
        let ids: Vec<u32> = reshaped.contexts.iter().map(|c| c.id).collect();
        assert_eq!(ids, [0, 0, STRANGER_CONTEXT_ID]);
        assert!(reshaped
            .contexts
            .iter()
            .all(|c| c.descriptors == [d(4096, 0)]));
    }

    #[test]
    fn past_request_keeps_one_more() {
        let mut list = vec![d(100, 0), d(100, 3), d(100, 0), d(100, 3)];
        keep_one_past(&mut list, 150);
        assert_eq!(list, vec![d(100, 0), d(100, 3), d(100, 0)]);
        let mut exact = vec![d(100, 0), d(100, 3)];
        keep_one_past(&mut exact, 100);
        assert_eq!(exact, vec![d(100, 0), d(100, 3)]);
    }

    #[test]
    fn off_grid_boundaries_only_grow_data() {
        let mut list = vec![d(65536, 0), d(65536, 3), d(4096, 0), d(65536, 2)];
        move_boundaries_off_grid(&mut list);
        assert_eq!(
            list,
            vec![d(66048, 0), d(64512, 3), d(5120, 0), d(65024, 2)]
        );
    }

    #[test]
    fn draft_overlap_extends_the_safe_side() {
        let mut list = vec![
            DraftDescriptor {
                offset: 0,
                length: 4096,
                status: 2,
            },
            DraftDescriptor {
                offset: 4096,
                length: 4096,
                status: 0,
            },
        ];
        overlap_with_safe_state(&mut list);
        assert_eq!((list[1].offset, list[1].length), (3584, 4608));
        assert_eq!(list[0].length, 4096);
    }

    #[test]
    fn draft_fallback_splits_in_halves() {
        let f = Faults::new([Fault::DraftFallbackSplit]);
        let mut answer = DraftAnswer {
            query: DraftQuery::Other(0x8000),
            offset: 4096,
            length: 4097,
            descriptors: vec![DraftDescriptor {
                offset: 4096,
                length: 4097,
                status: 0,
            }],
        };
        f.reshape_draft(&mut answer);
        let pieces: Vec<(u64, u32)> = answer
            .descriptors
            .iter()
            .map(|d| (d.offset, d.length))
            .collect();
        assert_eq!(pieces, [(4096, 2048), (6144, 2049)]);
    }
}
