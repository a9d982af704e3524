//! Fault injection: ways to make the reference server break one clause on purpose, so that the
//! suite can show that each of its checks fires (design §7: a check that no fault can make fail
//! tests nothing).
//!
//! A [`Fault`] names one misbehaviour and the one clause it breaks (`nbd-conform serve --fault
//! list`). The export keeps its faults in a [`Faults`] set, and each layer of the server asks it
//! at one narrow point; with no faults every hook below leaves its input alone, so the clean
//! server is byte for byte what it always was:
//! - negotiation ([`Faults::block_sizes`], [`Faults::meta_context_ids`]);
//! - request checking ([`Faults::accepts_past_end`], [`Faults::refuses_unknown_query`]);
//! - what a block-status reply describes: the scan ([`Faults::status_scan`]), the states
//!   ([`Faults::restate_allocation`], [`Faults::restate_dirtiness`]), each context's descriptors
//!   ([`Faults::descriptors`]) and the list of chunks ([`Faults::chunks`]);
//! - how it is framed: chunk bodies ([`Faults::bodies`]), headers and payload bytes
//!   ([`Faults::frames`]), error chunks ([`Faults::status_error`]);
//! - the draft's replies ([`Faults::draft_fallback`], [`Faults::draft_descriptors`],
//!   [`Faults::draft_status`], [`Faults::draft_error`]);
//! - hostile behaviours ([`Faults::hostile`], carried out by `transmit`): never answering,
//!   dripping, absurd lengths, garbage, hanging up mid-reply.
//!
//! Faults touch only the replies to block-status (and GET_LBA_STATUS) requests: the handshake,
//! READ and WRITE stay correct, so the harness can still connect, read back what is called zero,
//! and replay a fixture's writes into the dirty bitmaps. A fault may change what the server
//! advertises only when it needs to (`unaligned-to-min-block` advertises a 4 KiB minimum block).

use std::str::FromStr;

use bytes::{BufMut, BytesMut};

use super::catalogue::catalogue;
use super::extents::{Allocation, Dirtiness, Extent, MAX_COMPACT_DESCRIPTOR};
use super::replies::{draft_error, draft_status, OutgoingChunk, ReplyForm};
use crate::wire::consts::{chunk_type, draft, reply_flag};
use crate::wire::draft::{DraftDescriptor, DraftQuery};
use crate::wire::handshake::BlockSizes;
use crate::wire::reply::{ChunkBody, Descriptor, ReplyHeader};
use crate::Dialect;

/// Where a fault is meant to be met: the cases of which dialect catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDialect {
    Standard,
    Draft,
    Both,
}

impl FaultDialect {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultDialect::Standard => "standard",
            FaultDialect::Draft => "draft",
            FaultDialect::Both => "both",
        }
    }

    /// The dialects whose cases are run against this fault.
    pub fn dialects(self) -> &'static [Dialect] {
        match self {
            FaultDialect::Standard => &[Dialect::Standard],
            FaultDialect::Draft => &[Dialect::Draft],
            FaultDialect::Both => &[Dialect::Standard, Dialect::Draft],
        }
    }
}

/// Everything said about one fault, in one place: a row of the [`Fault`] table.
#[derive(Debug, Clone, Copy)]
pub struct FaultSpec {
    pub name: &'static str,
    pub dialect: FaultDialect,
    /// The one clause the fault breaks (an id of `crate::clauses`).
    pub clause: &'static str,
    pub description: &'static str,
}

impl FaultSpec {
    /// A fault met by the cases of today's dialect.
    const fn standard(name: &'static str, clause: &'static str, description: &'static str) -> Self {
        FaultSpec::new(FaultDialect::Standard, name, clause, description)
    }

    /// A fault met by the cases of the 2016 draft.
    const fn draft(name: &'static str, clause: &'static str, description: &'static str) -> Self {
        FaultSpec::new(FaultDialect::Draft, name, clause, description)
    }

    /// A fault met by the cases of both dialects.
    const fn both(name: &'static str, clause: &'static str, description: &'static str) -> Self {
        FaultSpec::new(FaultDialect::Both, name, clause, description)
    }

    const fn new(
        dialect: FaultDialect,
        name: &'static str,
        clause: &'static str,
        description: &'static str,
    ) -> Self {
        FaultSpec {
            name,
            dialect,
            clause,
            description,
        }
    }
}

catalogue! {
    /// One way to break the protocol on purpose. Each row: the name, the one clause the fault
    /// breaks, and what it does (`serve --fault list`, docs/faults.md).
    pub enum Fault: FaultSpec {
        // Today's block status: what a reply says.
        ReqOneOverrun => FaultSpec::standard("req-one-overrun", "BS-REQ-ONE-2",
            "with REQ_ONE, the one descriptor runs on to the end of its extent, past the requested length"),
        ReqOneIgnored => FaultSpec::standard("req-one-ignored", "BS-REQ-ONE-1",
            "REQ_ONE is ignored: as many descriptors as without it"),
        ZeroOverData => FaultSpec::standard("zero-over-data", "ALLOC-TRUTH-1",
            "base:allocation calls data ZERO (read-back also catches it, as ALLOC-ZERO-1)"),
        DescriptorsPastRequest => FaultSpec::standard("descriptors-past-request", "BS-REP-SUM-1",
            "descriptors continue past the requested range: one more after the one that crosses its end"),
        ZeroLengthDescriptor => FaultSpec::standard("zero-length-descriptor", "BS-REP-NZ-1",
            "a zero-length descriptor opens each compact status chunk (not with REQ_ONE)"),
        UnalignedToMinBlock => FaultSpec::standard("unaligned-to-min-block", "BS-REP-MINBLK-1",
            "advertises a 4 KiB minimum block, then moves every data/hole boundary 512 bytes off that grid"),
        DirtyMapMissingWrite => FaultSpec::standard("dirty-map-missing-write", "QEMU-DB-COVER-1",
            "qemu:dirty-bitmap contexts report every granule clean, missing the writes"),
        SuccessPastEnd => FaultSpec::standard("success-past-end", "BS-REQ-OOB-1",
            "a block-status request that starts inside the export but runs past its end succeeds"),
        // Today's block status: chunks and framing.
        DuplicateContextChunk => FaultSpec::standard("duplicate-context-chunk", "BS-REP-PERCTX-1",
            "the first context's status chunk is sent twice"),
        StrangerContextId => FaultSpec::standard("stranger-context-id", "BS-REP-IDVALID-1",
            "an extra status chunk for a context id SET_META_CONTEXT never handed out"),
        WrongCookie => FaultSpec::standard("wrong-cookie", "TX-COOKIE-1",
            "block-status chunks carry a cookie other than the request's"),
        NoDoneFlag => FaultSpec::standard("no-done-flag", "BS-COMPLETE-1",
            "the last block-status chunk lacks DONE, so the reply never ends"),
        ChunkLengthMismatch => FaultSpec::standard("chunk-length-mismatch", "BS-REP-LEN-1",
            "compact status chunks carry 4 stray bytes, so their length is not 4 + 8n"),
        CompactChunkUnderEh => FaultSpec::standard("compact-chunk-under-eh", "BS-REP-NOEXT-1",
            "under extended headers, status comes in 32-bit BLOCK_STATUS chunks (type 5)"),
        StructuredHeaderUnderEh => FaultSpec::standard("structured-header-under-eh", "EH-REP-1",
            "under extended headers, status chunks come with 20-byte structured headers"),
        ExtCountMismatch => FaultSpec::standard("ext-count-mismatch", "BS-EXT-COUNT-1",
            "BLOCK_STATUS_EXT chunks claim one descriptor more than they carry"),
        ExtOffsetMismatch => FaultSpec::standard("ext-offset-mismatch", "EH-REP-2",
            "extended status chunks carry an offset 4 KiB past the request's"),
        ErrorMessageOverrun => FaultSpec::standard("error-message-overrun", "ERRCHUNK-ERR-1",
            "error chunks for block status announce a message 16 bytes longer than the chunk holds"),
        // Negotiation.
        ContextIdReused => FaultSpec::standard("context-id-reused", "SMC-REPLY-1",
            "SET_META_CONTEXT hands out one id for every context it selects"),
        // Disconnect.
        DiscDropsOutstanding => FaultSpec::standard("disc-drops-outstanding", "TX-DISC-1",
            "a block-status request with NBD_CMD_DISC right behind it is never answered: the server just closes"),
        DiscAnswersEio => FaultSpec::standard("disc-answers-eio", "TX-DISC-1",
            "a block-status request with NBD_CMD_DISC right behind it gets EIO instead of its answer (ESHUTDOWN would be allowed)"),
        // The 2016 draft.
        DraftNoFallback => FaultSpec::draft("draft-no-fallback", "DRAFT-UNK-1",
            "an unknown query type gets EINVAL instead of the status-0 fallback descriptor"),
        DraftFallbackSplit => FaultSpec::draft("draft-fallback-split", "DRAFT-UNK-1",
            "the fallback comes as two status-0 halves: neither descriptor has the request's range"),
        DraftErrorNoTrailer => FaultSpec::draft("draft-error-no-trailer", "DRAFT-ERR-1",
            "an error reply without its P trailer, and the connection stays open"),
        DraftShortTrailer => FaultSpec::draft("draft-short-trailer", "DRAFT-ERR-1",
            "an error reply announces P = 14 and sends 6 bytes"),
        DraftShortDescriptors => FaultSpec::draft("draft-short-descriptors", "DRAFT-REP-1",
            "a successful reply's P counts one descriptor more than is sent"),
        DraftOverlap => FaultSpec::draft("draft-overlap", "DRAFT-DESC-ORDER-1",
            "a status-0 descriptor reaches 512 bytes into its neighbour, so the two overlap"),
        DraftZeroedOverData => FaultSpec::draft("draft-zeroed-over-data", "DRAFT-ALLOC-1",
            "GET_ALLOCATED calls data ZEROED (the truth oracle also catches it, as ALLOC-TRUTH-1)"),
        DraftDescriptorOutside => FaultSpec::draft("draft-descriptor-outside", "DRAFT-DESC-RANGE-1",
            "an extra 512-byte status-0 descriptor just past the requested range"),
        DraftUndefinedStatus => FaultSpec::draft("draft-undefined-status", "DRAFT-STATE-1",
            "GET_ALLOCATED's first descriptor carries status 0x8000, which the query does not define"),
        DraftDirtyMissingWrite => FaultSpec::draft("draft-dirty-missing-write", "DRAFT-DIRTY-COVER-1",
            "GET_DIRTY reports every granule clean, missing the writes"),
        // Hostile behaviours.
        Hang => FaultSpec::both("hang", "BS-COMPLETE-1",
            "hostile: never answers a block-status request (reads and discards until the client leaves)"),
        Drip => FaultSpec::both("drip", "BS-COMPLETE-1",
            "hostile: block-status replies trickle out one byte per second"),
        HugeLength => FaultSpec::standard("huge-length", "CHUNK-INCONS-1",
            "hostile: a compact status chunk claims 0xfffffff0 payload bytes, then streams zeros"),
        DraftHugeLength => FaultSpec::draft("draft-huge-length", "DRAFT-BOUND-1",
            "hostile: a GET_LBA_STATUS reply claims P = 0xfffffff0, then streams zeros"),
        GarbageAfterHandshake => FaultSpec::both("garbage-after-handshake", "TX-SIMPLE-1",
            "hostile: 4 KiB of garbage where the first block-status reply of a connection belongs"),
        CloseMidReply => FaultSpec::standard("close-mid-reply", "TX-NODROP-1",
            "hostile: sends half of each block-status reply, then closes the connection"),
    }
}

impl Fault {
    /// The one clause id the fault breaks.
    pub fn clause(self) -> &'static str {
        self.spec().clause
    }

    pub fn dialect(self) -> FaultDialect {
        self.spec().dialect
    }

    pub fn description(self) -> &'static str {
        self.spec().description
    }

    /// Every fault name, comma-separated (for usage errors).
    pub fn names() -> String {
        Fault::ALL.map(Fault::name).join(", ")
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::from_name(s)
            .ok_or_else(|| format!("unknown fault {s:?}; the faults are: {}", Fault::names()))
    }
}

/// What the disconnect faults do to a status request that has NBD_CMD_DISC right behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeDisc {
    /// Close without answering it.
    Drop,
    /// Answer it with EIO.
    Eio,
}

/// What the hostile faults make the transmission loop do with a status reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Send nothing; read and discard until the client leaves.
    Hang,
    /// Send the reply one byte per second.
    Drip,
    /// A compact status chunk header claiming this many payload bytes, then zeros.
    HugeChunk(u32),
    /// A draft reply header and a P of this many bytes, then zeros.
    HugeDraftP(u32),
    /// Garbage before the first status reply of the connection.
    Garbage,
    /// Half the reply, then close.
    CloseMidReply,
}

/// The lie told by `huge-length` and `draft-huge-length`: just under 4 GiB.
pub const HUGE_LENGTH: u32 = 0xFFFF_FFF0;
/// Bytes per write while streaming towards a huge claimed length.
pub const STREAM_PIECE: usize = 64 * 1024;
/// `drip`: one byte per this long.
pub const DRIP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// `garbage-after-handshake`: 4 KiB that start with no reply magic.
pub fn garbage() -> Vec<u8> {
    b"\xde\xad\xbe\xef not an NBD reply; "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect()
}

/// How far `unaligned-to-min-block` moves boundaries, and the minimum block it advertises.
const OFF_GRID: u64 = 512;
const ADVERTISED_MINIMUM: u32 = 4096;
/// A context id no catalogue hands out (ids are small positions).
pub const STRANGER_CONTEXT_ID: u32 = 0x00BA_D1D0;
/// What `wrong-cookie` XORs into the cookie.
const COOKIE_MANGLE: u64 = 0xFFFF;
/// What `ext-offset-mismatch` adds to the header offset.
const OFFSET_SKEW: u64 = 4096;
/// What `draft-undefined-status` puts in a GET_ALLOCATED descriptor.
const UNDEFINED_DRAFT_STATUS: u16 = 0x8000;

/// One context's descriptors, and what they answer.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorScope {
    /// The length the client asked about.
    pub request_length: u64,
    /// Whether the client set REQ_ONE.
    pub req_one: bool,
    pub extended: bool,
    /// `base:allocation` (status 0 is the safe answer there, not in a dirty bitmap).
    pub base_allocation: bool,
}

/// The faults an export carries: sorted, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Faults(Vec<Fault>);

impl Faults {
    pub fn new(faults: impl IntoIterator<Item = Fault>) -> Faults {
        let mut list: Vec<Fault> = faults.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        Faults(list)
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    // ---- negotiation ---------------------------------------------------------------------

    /// The block sizes to advertise.
    pub fn block_sizes(&self, clean: BlockSizes) -> BlockSizes {
        if !self.has(Fault::UnalignedToMinBlock) {
            return clean;
        }
        BlockSizes {
            minimum: ADVERTISED_MINIMUM,
            preferred: clean.preferred.max(ADVERTISED_MINIMUM),
            ..clean
        }
    }

    /// The ids to show in SET_META_CONTEXT replies for the selected `ids`.
    pub fn meta_context_ids(&self, ids: &[u32]) -> Vec<u32> {
        match ids.first() {
            Some(&first) if self.has(Fault::ContextIdReused) => vec![first; ids.len()],
            _ => ids.to_vec(),
        }
    }

    // ---- request checking ----------------------------------------------------------------

    /// `success-past-end`: the length to answer for a block-status request that starts inside
    /// an export of `size` bytes but runs past its end (None: refuse it, as the clean server does).
    pub fn accepts_past_end(&self, offset: u64, length: u64, size: u64) -> Option<u64> {
        let runs_past = offset < size && offset.checked_add(length).is_some_and(|e| e > size);
        (self.has(Fault::SuccessPastEnd) && runs_past).then(|| size - offset)
    }

    /// `draft-no-fallback`: refuse the query types the clean server answers with the fallback.
    pub fn refuses_unknown_query(&self) -> bool {
        self.has(Fault::DraftNoFallback)
    }

    // ---- what a block-status reply describes ----------------------------------------------

    /// How far to scan and whether to keep to one descriptor, for a request of `length` bytes
    /// with `room` bytes between its offset and the end of the export.
    pub fn status_scan(&self, length: u64, req_one: bool, room: u64) -> (u64, bool) {
        if req_one && self.has(Fault::ReqOneOverrun) {
            (room, true)
        } else if req_one && self.has(Fault::ReqOneIgnored) {
            (length, false)
        } else if !req_one && self.has(Fault::DescriptorsPastRequest) {
            (room, false)
        } else {
            (length, req_one)
        }
    }

    /// Allocation states as the reply will tell them.
    pub fn restate_allocation(&self, dialect: Dialect, extents: &mut [Extent<Allocation>]) {
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

    /// Dirtiness as the reply will tell it.
    pub fn restate_dirtiness(&self, dialect: Dialect, extents: &mut [Extent<Dirtiness>]) {
        let lie = match dialect {
            Dialect::Standard => Fault::DirtyMapMissingWrite,
            Dialect::Draft => Fault::DraftDirtyMissingWrite,
        };
        if self.has(lie) {
            for e in extents.iter_mut() {
                e.state = Dirtiness::Clean;
            }
        }
    }

    /// One context's descriptors, shaped for the scan of [`Faults::status_scan`].
    pub fn descriptors(&self, list: &mut Vec<Descriptor>, scope: DescriptorScope) {
        if list.is_empty() {
            return;
        }
        if self.has(Fault::DescriptorsPastRequest) && !scope.req_one {
            keep_one_past(list, scope.request_length);
        }
        if self.has(Fault::UnalignedToMinBlock) && scope.base_allocation {
            move_boundaries_off_grid(list);
        }
        if self.has(Fault::ZeroLengthDescriptor) && !scope.extended && !scope.req_one {
            let flags = list[0].flags ^ 1;
            list.insert(0, Descriptor { length: 0, flags });
        }
    }

    /// The (context id, descriptors) list of one reply.
    pub fn chunks(&self, chunks: &mut Vec<(u32, Vec<Descriptor>)>) {
        let Some(first) = chunks.first().cloned() else {
            return;
        };
        if self.has(Fault::DuplicateContextChunk) {
            chunks.push(first.clone());
        }
        if self.has(Fault::StrangerContextId) {
            chunks.push((STRANGER_CONTEXT_ID, first.1));
        }
    }

    // ---- how a block-status reply is framed ------------------------------------------------

    /// Chunk bodies, before they are encoded.
    pub fn bodies(&self, bodies: &mut [ChunkBody]) {
        for body in bodies.iter_mut() {
            let ChunkBody::BlockStatusExt {
                context_id,
                count,
                descriptors,
            } = body
            else {
                continue;
            };
            if self.has(Fault::ExtCountMismatch) {
                *count = count.wrapping_add(1);
            }
            if self.has(Fault::CompactChunkUnderEh) {
                *body = ChunkBody::BlockStatus {
                    context_id: *context_id,
                    descriptors: fit_in_32_bits(descriptors),
                };
            }
        }
    }

    /// Headers and payloads of the chunks of one successful status reply.
    pub fn frames(&self, frames: &mut [OutgoingChunk]) {
        for frame in frames.iter_mut() {
            if self.has(Fault::StructuredHeaderUnderEh) {
                if let ReplyHeader::Extended {
                    flags,
                    chunk_type,
                    cookie,
                    length,
                    ..
                } = frame.header
                {
                    frame.header = ReplyHeader::Structured {
                        flags,
                        chunk_type,
                        cookie,
                        length: length as u32,
                    };
                }
            }
            if self.has(Fault::ChunkLengthMismatch) {
                if let ReplyHeader::Structured {
                    chunk_type: chunk_type::BLOCK_STATUS,
                    length,
                    ..
                } = &mut frame.header
                {
                    frame.payload.put_slice(&[0xA5; 4]);
                    *length += 4;
                }
            }
            if self.has(Fault::ExtOffsetMismatch) {
                if let ReplyHeader::Extended { offset, .. } = &mut frame.header {
                    *offset = offset.wrapping_add(OFFSET_SKEW);
                }
            }
            if self.has(Fault::WrongCookie) {
                let mangled = frame.header.cookie() ^ COOKIE_MANGLE;
                set_cookie(&mut frame.header, mangled);
            }
        }
        if self.has(Fault::NoDoneFlag) {
            if let Some(last) = frames.last_mut() {
                clear_done(&mut last.header);
            }
        }
    }

    /// The error reply to a refused block-status request.
    pub fn status_error(
        &self,
        form: ReplyForm,
        dst: &mut BytesMut,
        cookie: u64,
        offset: u64,
        errno: u32,
        message: &str,
    ) {
        match form.error_chunk(cookie, offset, errno, message) {
            Some(mut chunk) if self.has(Fault::ErrorMessageOverrun) => {
                // Payload: error (4 bytes), message length (2), message.
                let overrun = (message.len() as u16).saturating_add(16);
                chunk.payload[4..6].copy_from_slice(&overrun.to_be_bytes());
                chunk.encode(dst);
            }
            _ => form.error(dst, cookie, offset, errno, message),
        }
    }

    // ---- the draft -----------------------------------------------------------------------

    /// The unknown-type fallback (`clean` is the one correct descriptor).
    pub fn draft_fallback(&self, clean: DraftDescriptor) -> Vec<DraftDescriptor> {
        if !self.has(Fault::DraftFallbackSplit) || clean.length < 2 {
            return vec![clean];
        }
        let half = clean.length / 2;
        vec![
            DraftDescriptor {
                length: half,
                ..clean
            },
            DraftDescriptor {
                offset: clean.offset + half as u64,
                length: clean.length - half,
                ..clean
            },
        ]
    }

    /// The descriptors of an answered (not fallback) query over `[offset, offset+length)`.
    pub fn draft_descriptors(
        &self,
        list: &mut Vec<DraftDescriptor>,
        query: DraftQuery,
        offset: u64,
        length: u64,
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

    /// A successful GET_LBA_STATUS reply.
    pub fn draft_status(&self, dst: &mut BytesMut, cookie: u64, descriptors: &[DraftDescriptor]) {
        if !self.has(Fault::DraftShortDescriptors) || descriptors.is_empty() {
            return draft_status(dst, cookie, descriptors);
        }
        draft_status(dst, cookie, descriptors);
        dst.truncate(dst.len() - draft::DESCRIPTOR_LEN);
    }

    /// A failed GET_LBA_STATUS reply.
    pub fn draft_error(&self, dst: &mut BytesMut, cookie: u64, errno: u32) {
        if self.has(Fault::DraftErrorNoTrailer) {
            ReplyHeader::Simple {
                error: errno,
                cookie,
            }
            .encode(dst);
        } else if self.has(Fault::DraftShortTrailer) {
            ReplyHeader::Simple {
                error: errno,
                cookie,
            }
            .encode(dst);
            dst.put_u32(draft::DESCRIPTOR_LEN as u32);
            dst.put_slice(&[0; 6]);
        } else {
            draft_error(dst, cookie, errno);
        }
    }

    // ---- hostile behaviours ---------------------------------------------------------------

    /// What to do to a status request that NBD_CMD_DISC follows at once, if anything.
    pub fn before_disc(&self) -> Option<BeforeDisc> {
        if self.has(Fault::DiscDropsOutstanding) {
            Some(BeforeDisc::Drop)
        } else if self.has(Fault::DiscAnswersEio) {
            Some(BeforeDisc::Eio)
        } else {
            None
        }
    }

    /// What to do instead of simply sending a status reply on a connection with `form`.
    pub fn hostile(&self, form: ReplyForm, draft: bool) -> Option<Hostile> {
        if self.has(Fault::Hang) {
            Some(Hostile::Hang)
        } else if self.has(Fault::Drip) {
            Some(Hostile::Drip)
        } else if self.has(Fault::HugeLength) && !draft && form == ReplyForm::Structured {
            Some(Hostile::HugeChunk(HUGE_LENGTH))
        } else if self.has(Fault::DraftHugeLength) && draft {
            Some(Hostile::HugeDraftP(HUGE_LENGTH))
        } else if self.has(Fault::GarbageAfterHandshake) {
            Some(Hostile::Garbage)
        } else if self.has(Fault::CloseMidReply) {
            Some(Hostile::CloseMidReply)
        } else {
            None
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

/// `compact-chunk-under-eh`: 64-bit descriptors squeezed into 32-bit ones without lying: the
/// list stops (a legal short reply) at the first one too long for 32 bits, cut to fit.
fn fit_in_32_bits(descriptors: &[Descriptor]) -> Vec<Descriptor> {
    let mut out = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        if d.length > MAX_COMPACT_DESCRIPTOR {
            out.push(Descriptor {
                length: MAX_COMPACT_DESCRIPTOR,
                ..*d
            });
            break;
        }
        out.push(*d);
    }
    out
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

fn set_cookie(header: &mut ReplyHeader, value: u64) {
    match header {
        ReplyHeader::Simple { cookie, .. }
        | ReplyHeader::Structured { cookie, .. }
        | ReplyHeader::Extended { cookie, .. } => *cookie = value,
    }
}

fn clear_done(header: &mut ReplyHeader) {
    match header {
        ReplyHeader::Structured { flags, .. } | ReplyHeader::Extended { flags, .. } => {
            *flags &= !reply_flag::DONE
        }
        ReplyHeader::Simple { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(length: u64, flags: u64) -> Descriptor {
        Descriptor { length, flags }
    }

    #[test]
    fn names_parse_back_and_clauses_exist() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
            assert!(
                crate::clauses::clause(fault.clause()).is_some(),
                "{fault}: unknown clause {}",
                fault.clause()
            );
        }
        let mut names = Fault::ALL.map(Fault::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len(), "two faults share a name");
        let err = "nope".parse::<Fault>().unwrap_err();
        assert!(err.contains("req-one-overrun"), "{err}");
    }

    #[test]
    fn no_faults_change_nothing() {
        let none = Faults::default();
        let mut list = vec![d(4096, 0), d(8192, 3)];
        let scope = DescriptorScope {
            request_length: 12288,
            req_one: false,
            extended: false,
            base_allocation: true,
        };
        none.descriptors(&mut list, scope);
        assert_eq!(list, vec![d(4096, 0), d(8192, 3)]);
        assert_eq!(none.status_scan(100, true, 1000), (100, true));
        assert_eq!(none.accepts_past_end(0, 10, 5), None);
        assert_eq!(none.meta_context_ids(&[0, 1]), vec![0, 1]);
        assert_eq!(none.hostile(ReplyForm::Structured, false), None);
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
    fn reused_ids_and_minimum_block() {
        let f = Faults::new([Fault::ContextIdReused, Fault::UnalignedToMinBlock]);
        assert_eq!(f.meta_context_ids(&[0, 1, 2]), vec![0, 0, 0]);
        let b = f.block_sizes(BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: 1 << 25,
        });
        assert_eq!((b.minimum, b.preferred), (4096, 4096));
    }
}
