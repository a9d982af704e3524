//! What the answer to a status query says: the descriptors of a BLOCK_STATUS reply (one list
//! per selected context) or of a draft GET_LBA_STATUS reply, before they are framed.
//!
//! An answer is built in stages, and each stage is a value that variants and then faults may
//! change before the next one starts:
//! 1. the [`Scan`]: how far to look, and whether to keep to one descriptor;
//! 2. each context's [`ContextExtents`]: the states found, before they are shaped;
//! 3. the [`StatusAnswer`] (or [`DraftAnswer`]): the descriptors, shaped to the reply's limits.
//!
//! With neither variants nor faults, every stage is passed on as it was built.

use std::io;

use super::contexts::ContextKind;
use super::export::Export;
use super::extents::{
    allocation_status, dirty_bitmap_status, draft_allocation_status, draft_dirty_status, shape,
    to_descriptors, to_draft_descriptors, with_deallocated_hint, Allocation, Dirtiness, Extent,
    ReplyLimits, MAX_COMPACT_DESCRIPTOR,
};
use super::image::{AfterBudget, ScanLimits};
use super::limits::{align, descriptors_within};
use crate::wire::consts::limit;
use crate::wire::draft::{DraftDescriptor, DraftQuery};
use crate::wire::reply::Descriptor;
use crate::Dialect;

/// How far a block-status answer looks from the request's offset, and whether it keeps to one
/// descriptor: the request's length and REQ_ONE, unless a variant or a fault says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub length: u64,
    pub req_one: bool,
    /// Bytes between the request's offset and the end of the export: the furthest a scan
    /// may look.
    pub room: u64,
}

/// The states one context's answer is made from, before they are shaped into descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextExtents {
    Allocation(Vec<Extent<Allocation>>),
    Dirtiness(Vec<Extent<Dirtiness>>),
}

impl ContextExtents {
    /// Every boundary on the advertised minimum block `grid` (BS-REP-MINBLK-1), before any
    /// variant or fault sees the states.
    fn align(self, offset: u64, grid: u64, end: u64) -> Self {
        match self {
            ContextExtents::Allocation(raw) => {
                ContextExtents::Allocation(align(raw, offset, grid, end))
            }
            ContextExtents::Dirtiness(raw) => {
                ContextExtents::Dirtiness(align(raw, offset, grid, end))
            }
        }
    }

    /// Today's descriptors: shaped to `limits`, never none. If in doubt, data is the safe
    /// answer for allocation and dirty the safe answer for a bitmap (QEMU-DIRTY0-1).
    fn descriptors(self, limits: &ReplyLimits) -> Vec<Descriptor> {
        match self {
            ContextExtents::Allocation(raw) => to_descriptors(
                &at_least_one(shape(raw, limits), limits, Allocation::Data),
                allocation_status,
            ),
            ContextExtents::Dirtiness(raw) => to_descriptors(
                &at_least_one(shape(raw, limits), limits, Dirtiness::Dirty),
                dirty_bitmap_status,
            ),
        }
    }

    /// The draft's descriptors, with absolute offsets from `offset`; the same safe answers.
    fn draft_descriptors(self, offset: u64, limits: &ReplyLimits) -> Vec<DraftDescriptor> {
        match self {
            ContextExtents::Allocation(raw) => to_draft_descriptors(
                offset,
                &at_least_one(shape(raw, limits), limits, Allocation::Data),
                draft_allocation_status,
            ),
            ContextExtents::Dirtiness(raw) => to_draft_descriptors(
                offset,
                &at_least_one(shape(raw, limits), limits, Dirtiness::Dirty),
                draft_dirty_status,
            ),
        }
    }
}

/// One context's part of a block-status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextAnswer {
    pub id: u32,
    pub kind: ContextKind,
    pub descriptors: Vec<Descriptor>,
}

/// The answer to one block-status request, before it is framed: one entry per status chunk,
/// in the order the chunks go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    /// The length the client asked about (whatever the [`Scan`] looked at).
    pub request_length: u64,
    /// Whether the client set REQ_ONE.
    pub req_one: bool,
    /// Whether the chunks carry 64-bit descriptors (extended headers).
    pub extended: bool,
    pub contexts: Vec<ContextAnswer>,
}

impl StatusAnswer {
    /// The (context id, descriptors) of each status chunk, for framing.
    pub fn into_chunks(self) -> Vec<(u32, Vec<Descriptor>)> {
        self.contexts
            .into_iter()
            .map(|context| (context.id, context.descriptors))
            .collect()
    }
}

/// The answer to one GET_LBA_STATUS request: absolute-offset descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftAnswer {
    pub query: DraftQuery,
    pub offset: u64,
    pub length: u64,
    pub descriptors: Vec<DraftDescriptor>,
}

/// The answer to a block-status request over `[offset, offset + length)` for the selected
/// `contexts` (ids without a context are skipped).
pub async fn block_status(
    export: &Export,
    contexts: &[u32],
    extended: bool,
    offset: u64,
    length: u64,
    req_one: bool,
) -> io::Result<StatusAnswer> {
    let (variants, faults) = (&export.variants, &export.faults);
    let mut scan = Scan {
        length,
        req_one,
        room: export.size().saturating_sub(offset),
    };
    variants.scan(&mut scan);
    faults.scan(&mut scan);
    let grid = export.minimum_block();
    let limits = ReplyLimits {
        request_length: scan.length,
        // A capped descriptor ends on the grid too.
        max_descriptor_length: if extended {
            u64::MAX
        } else {
            MAX_COMPACT_DESCRIPTOR / grid * grid
        },
        // The descriptor list is the part of a chunk the maximum payload bounds (CHUNK-MAXPL-1).
        max_descriptors: descriptors_within(export.block_sizes().maximum, extended),
        req_one: scan.req_one,
    };
    // REQ_ONE wants one extent, but on a grid the first block may hold several.
    let max_extents = if scan.req_one && grid <= 1 {
        1
    } else {
        limit::MAX_DESCRIPTORS_PER_CHUNK
    };
    let mut answer = StatusAnswer {
        request_length: length,
        req_one,
        extended,
        contexts: Vec::with_capacity(contexts.len()),
    };
    for &id in contexts {
        let Some(kind) = export.contexts.kind(id) else {
            continue;
        };
        let mut extents = match kind {
            ContextKind::Allocation => {
                let limits = ScanLimits::new(max_extents, AfterBudget::Stop);
                ContextExtents::Allocation(allocation(export, offset, scan.length, limits).await?)
            }
            ContextKind::DirtyBitmap(i) => {
                ContextExtents::Dirtiness(dirtiness(export, i, offset, scan.length, max_extents))
            }
        }
        .align(offset, grid, offset + scan.length.min(scan.room));
        variants.restate(&mut extents);
        faults.restate(Dialect::Standard, &mut extents);
        faults.forget_writes(offset, &mut extents, &export.written);
        answer.contexts.push(ContextAnswer {
            id,
            kind,
            descriptors: extents.descriptors(&limits),
        });
    }
    variants.reshape(&mut answer);
    faults.reshape(&mut answer);
    Ok(answer)
}

/// The draft's answer over `[offset, offset + length)`: descriptors covering the request, or
/// for a query the server cannot express the request itself with status 0 (DRAFT-UNK-1).
pub async fn lba_status(
    export: &Export,
    offset: u64,
    length: u64,
    query: DraftQuery,
) -> io::Result<DraftAnswer> {
    let limits = ReplyLimits {
        request_length: length,
        max_descriptor_length: u32::MAX as u64,
        max_descriptors: limit::MAX_DESCRIPTORS_PER_CHUNK,
        req_one: false,
    };
    let max_extents = limit::MAX_DESCRIPTORS_PER_CHUNK;
    let extents = match query {
        DraftQuery::Allocated => {
            let limits = ScanLimits::new(max_extents, AfterBudget::AssumeData);
            Some(ContextExtents::Allocation(
                allocation(export, offset, length, limits).await?,
            ))
        }
        // The first bitmap answers GET_DIRTY; without one, the query was planned as unknown.
        // Its dirty holes carry the draft's DIRTY_DEALLOCATED hint.
        DraftQuery::Dirty => {
            let dirty = dirtiness(export, 0, offset, length, max_extents);
            let limits = ScanLimits::new(max_extents, AfterBudget::Stop);
            let holes = allocation(export, offset, length, limits).await?;
            Some(ContextExtents::Dirtiness(with_deallocated_hint(
                &dirty, &holes,
            )))
        }
        DraftQuery::Other(_) => None,
    };
    let descriptors = match extents {
        Some(mut extents) => {
            export.faults.restate(Dialect::Draft, &mut extents);
            extents.draft_descriptors(offset, &limits)
        }
        None => vec![DraftDescriptor {
            offset,
            length: u32::try_from(length).unwrap_or(u32::MAX),
            status: 0,
        }],
    };
    let mut answer = DraftAnswer {
        query,
        offset,
        length,
        descriptors,
    };
    export.faults.reshape_draft(&mut answer);
    Ok(answer)
}

async fn allocation(
    export: &Export,
    offset: u64,
    length: u64,
    limits: ScanLimits,
) -> io::Result<Vec<Extent<Allocation>>> {
    export
        .image_io(move |image| image.allocation(offset, length, limits))
        .await
}

fn dirtiness(
    export: &Export,
    bitmap: usize,
    offset: u64,
    length: u64,
    max_extents: usize,
) -> Vec<Extent<Dirtiness>> {
    export
        .bitmaps
        .get(bitmap)
        .map(|b| b.extents(offset, length, max_extents))
        .unwrap_or_default()
}

/// A reply always carries at least one descriptor (BS-REP-ATLEAST1-1); should a source come back
/// empty, answer the safe state for as much of the request as one descriptor may cover.
fn at_least_one<S: Copy>(shaped: Vec<Extent<S>>, limits: &ReplyLimits, safe: S) -> Vec<Extent<S>> {
    if shaped.is_empty() {
        vec![Extent::new(
            limits.request_length.min(limits.max_descriptor_length),
            safe,
        )]
    } else {
        shaped
    }
}
