//! What variants change in what a status answer says, at the stages the clean server builds it
//! in ([`crate::server::status`]), just before the faults have their turn: how far it looks,
//! the states it found, and the descriptors and chunks it shaped from them.

use super::{Variant, Variants};
use crate::server::contexts::ContextKind;
use crate::server::extents::{Allocation, Dirtiness};
use crate::server::status::{ContextExtents, Scan, StatusAnswer};
use crate::wire::consts::context;
use crate::wire::reply::Descriptor;

/// Piece length of `split-holes`.
const SPLIT_PIECE: u64 = 64 << 10;
/// Descriptors per chunk under `short-replies`.
const SHORT_REPLY_DESCRIPTORS: usize = 3;

impl Variants {
    /// How far to scan: `past-request` looks on to the end of the extent that crosses the
    /// request's end.
    pub fn scan(&self, scan: &mut Scan) {
        if self.has(Variant::PastRequest) && !scan.req_one {
            scan.length = scan.room;
        }
    }

    /// The states of one context as the reply will tell them.
    pub fn restate(&self, extents: &mut ContextExtents) {
        match extents {
            ContextExtents::Allocation(extents) => {
                for e in extents.iter_mut() {
                    if self.has(Variant::StatusZero)
                        || (self.has(Variant::ZeroAsData) && e.state == Allocation::Zero)
                    {
                        e.state = Allocation::Data;
                    }
                }
            }
            ContextExtents::Dirtiness(extents) => {
                if self.has(Variant::DirtyEverywhere) {
                    for e in extents.iter_mut() {
                        e.state = Dirtiness::Dirty;
                    }
                }
            }
        }
    }

    /// Each context's descriptors, then the order of chunks, of a block-status answer.
    pub fn reshape(&self, answer: &mut StatusAnswer) {
        for context in &mut answer.contexts {
            let base_allocation = context.kind == ContextKind::Allocation;
            self.descriptors(
                &mut context.descriptors,
                answer.request_length,
                answer.req_one,
                base_allocation,
            );
        }
        if self.has(Variant::ReverseChunks) {
            answer.contexts.reverse();
        }
    }

    /// One context's descriptors for a request of `request_length` bytes.
    fn descriptors(
        &self,
        list: &mut Vec<Descriptor>,
        request_length: u64,
        req_one: bool,
        base_allocation: bool,
    ) {
        if list.is_empty() {
            return;
        }
        if self.has(Variant::PastRequest) && !req_one {
            keep_through_request_end(list, request_length);
        }
        if base_allocation && self.has(Variant::HoleWithoutZero) {
            for d in list.iter_mut() {
                if d.flags == context::STATE_HOLE | context::STATE_ZERO {
                    d.flags = context::STATE_HOLE;
                }
            }
        }
        if base_allocation && self.has(Variant::SplitHoles) && !req_one {
            *list = split_holes(list);
        }
        if self.has(Variant::OneDescriptor) {
            list.truncate(1);
        } else if self.has(Variant::ShortReplies) {
            list.truncate(SHORT_REPLY_DESCRIPTORS);
        }
    }
}

/// `past-request`: the scan ran to the end of the export; keep the descriptors up to and
/// including the one that reaches the request's end, so the last one overshoots truthfully.
fn keep_through_request_end(list: &mut Vec<Descriptor>, request_length: u64) {
    let mut end = 0u64;
    if let Some(i) = list.iter().position(|d| {
        end = end.saturating_add(d.length);
        end >= request_length
    }) {
        list.truncate(i + 1);
    }
}

/// `split-holes`: every descriptor with a non-zero status longer than two pieces becomes an
/// odd number of pieces alternating its status and 0, so that neighbours still differ and the
/// pieces at both ends keep the true status.
fn split_holes(list: &[Descriptor]) -> Vec<Descriptor> {
    let mut out = Vec::with_capacity(list.len());
    for d in list {
        let pieces = d.length / SPLIT_PIECE;
        if d.flags == 0 || pieces < 3 {
            out.push(*d);
            continue;
        }
        let pieces = if pieces % 2 == 0 { pieces - 1 } else { pieces };
        for i in 0..pieces {
            let length = if i + 1 == pieces {
                d.length - SPLIT_PIECE * (pieces - 1)
            } else {
                SPLIT_PIECE
            };
            let flags = if i % 2 == 0 { d.flags } else { 0 };
            out.push(Descriptor { length, flags });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(length: u64, flags: u64) -> Descriptor {
        Descriptor { length, flags }
    }

    #[test]
    fn no_variant_changes_nothing() {
        let none = Variants::default();
        let mut list = vec![d(4096, 0), d(1 << 20, 3), d(4096, 0)];
        let before = list.clone();
        none.descriptors(&mut list, 1 << 20, false, true);
        assert_eq!(list, before);
        let clean_scan = Scan {
            length: 10,
            req_one: false,
            room: 100,
        };
        let mut scan = clean_scan;
        none.scan(&mut scan);
        assert_eq!(scan, clean_scan);
    }

    #[test]
    fn split_holes_alternate_and_keep_true_ends() {
        let out = split_holes(&[d(4096, 0), d(4 * SPLIT_PIECE + 512, 3), d(4096, 0)]);
        let flags: Vec<u64> = out.iter().map(|d| d.flags).collect();
        assert_eq!(flags, [0, 3, 0, 3, 0]);
        assert_eq!(
            out.iter().map(|d| d.length).sum::<u64>(),
            8192 + 4 * SPLIT_PIECE + 512
        );
        assert!(out.windows(2).all(|w| w[0].flags != w[1].flags));
    }

    #[test]
    fn past_request_keeps_the_crossing_descriptor() {
        let mut list = vec![d(4096, 0), d(8192, 3), d(4096, 0)];
        keep_through_request_end(&mut list, 6000);
        assert_eq!(list, [d(4096, 0), d(8192, 3)]);
    }
}
