//! Fault injection: ways to make the reference server break one clause on purpose, so that the
//! suite can show that each of its checks fires (design §7: a check that no fault can make fail
//! tests nothing).
//!
//! A [`Fault`] names one misbehaviour and the one clause it breaks (`nbd-conform serve --fault
//! list`); the table below is the one list of them. The export keeps its faults in a
//! [`Faults`] set, and together they are one tamper layer over the clean server. The clean
//! server builds each answer as it always would and hands it here at a few points, each a
//! value it would otherwise use or send as it is:
//! - `negotiation`: the block sizes and transmission flags it advertises and the ids
//!   SET_META_CONTEXT shows ([`Faults::block_sizes`], [`Faults::transmission_flags`],
//!   [`Faults::meta_context_ids`]);
//! - `requests`: its verdict on a request, accepted or refused, or what an accepted write
//!   does ([`Faults::review`]), and the reply to a write once it is done
//!   ([`Faults::after_write`]);
//! - `answer`: what a status answer says, at each stage it is built in: how far it looks, the
//!   states, the descriptors and chunks ([`Faults::scan`], [`Faults::restate`],
//!   [`Faults::reshape`], [`Faults::reshape_draft`], and [`Faults::forget_writes`] with what
//!   clients wrote);
//! - `frames`: the reply to a status query, built but not yet encoded: chunk headers and
//!   payloads, error chunks, the draft's replies ([`Faults::rewrite`]);
//! - `delivery`: how that reply reaches the client, if at all ([`Delivery`]): the disconnect
//!   faults, and the hostile ones (never answering, dripping, absurd lengths, garbage, hanging
//!   up mid-reply);
//! - `crossed`: a READ's reply held back until the GET_LBA_STATUS pipelined behind it is
//!   answered, the two sent with each other's cookie ([`Faults::crosses_read_and_status`]).
//!
//! With no faults every point hands its value back untouched, so the clean server is byte for
//! byte what it always was. Faults touch only the replies to block-status (and GET_LBA_STATUS)
//! requests, except the few about writes (`write-dropped`, `write-zeroes-ignored`,
//! `cache-scribbles`, the FAST_ZERO ones), which change what a writing command does: the
//! handshake and READ stay correct, so the harness can still connect and read back what is
//! called zero (a fixture's replayed writes, dropped by `write-dropped`, leave its bitmaps
//! clean, which the dirty-bitmap cases report). A fault may
//! change what the server advertises only when it needs to (`unaligned-to-min-block` advertises
//! a 4 KiB minimum block).

mod answer;
mod crossed;
mod delivery;
mod frames;
mod negotiation;
mod requests;

use std::str::FromStr;

use super::catalogue::{catalogue, Chosen};
use crate::Dialect;

pub use crossed::{cross_cookies, status_waits_behind};
pub use delivery::{Delivered, Delivery};

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
    /// One way to break the protocol on purpose. Each row: the dialect whose cases meet it
    /// (the constructor), the name, the one clause it breaks, and what it does (`serve --fault
    /// list`, docs/faults.md).
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
        // Block status's payload form.
        FilterIgnored => FaultSpec::standard("filter-ignored", "BS-PAYLOAD-FILTER-1",
            "a block-status payload's id list is ignored: every selected context is answered"),
        PayloadLengthAsEffect => FaultSpec::standard("payload-length-as-effect", "BS-PAYLOAD-EFFECT-1",
            "a block-status payload's effect length is ignored: the header's payload length is taken as the area of interest"),
        PayloadIdsUnchecked => FaultSpec::standard("payload-ids-unchecked", "BS-PAYLOAD-REJ-1",
            "repeated and unselected ids in a block-status payload are not refused: the selected ones among them are answered, once each"),
        StatusPayloadUnadvertised => FaultSpec::standard("status-payload-unadvertised", "BS-PAYLOAD-REJ-1",
            "NBD_FLAG_BLOCK_STATUS_PAYLOAD is not advertised, yet a block-status payload is honoured instead of refused"),
        BigPayloadKeptOpen => FaultSpec::standard("big-payload-kept-open", "BS-PAYLOAD-BIG-1",
            "a payload above the maximum is read and discarded, refused with EINVAL, and the connection kept open"),
        // Negotiation.
        ContextIdReused => FaultSpec::standard("context-id-reused", "SMC-REPLY-1",
            "SET_META_CONTEXT hands out one id for every context it selects"),
        // Disconnect.
        DiscDropsOutstanding => FaultSpec::standard("disc-drops-outstanding", "TX-DISC-1",
            "a block-status request with NBD_CMD_DISC right behind it is never answered: the server just closes"),
        DiscAnswersEio => FaultSpec::standard("disc-answers-eio", "TX-DISC-1",
            "a block-status request with NBD_CMD_DISC right behind it gets EIO instead of its answer (ESHUTDOWN would be allowed)"),
        // The 2016 draft.
        DraftFlagUnadvertised => FaultSpec::draft("draft-flag-unadvertised", "DRAFT-FLAG-1",
            "transmission flag bit 7 (SEND_GET_LBA_STATUS) is not advertised, yet GET_LBA_STATUS is answered"),
        DraftNoFallback => FaultSpec::draft("draft-no-fallback", "DRAFT-UNK-1",
            "an unknown query type gets EINVAL instead of the status-0 fallback descriptor"),
        DraftSelectorBitmask => FaultSpec::draft("draft-selector-bitmask", "DRAFT-UNK-1",
            "the selector is read as a bitmask: any odd selector (3, the combined 1|2) gets GET_DIRTY's answer instead of the fallback"),
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
        DraftDeallocatedHintOverData => FaultSpec::draft("draft-deallocated-hint-over-data", "DRAFT-DIRTY-DEALLOC-1",
            "GET_DIRTY calls every dirty range DIRTY_DEALLOCATED, also where GET_ALLOCATED says it holds data"),
        DraftDirtyMissingWrite => FaultSpec::draft("draft-dirty-missing-write", "DRAFT-DIRTY-COVER-1",
            "GET_DIRTY reports every granule clean, missing the writes"),
        // Writes on a live export: what a later READ or block status sees.
        WriteDropped => FaultSpec::standard("write-dropped", "WRITE-READ-1",
            "WRITE is answered with success, but its bytes never reach the image"),
        WriteZeroesIgnored => FaultSpec::standard("write-zeroes-ignored", "WZ-READ-1",
            "WRITE_ZEROES is answered with success and changes nothing"),
        ZeroOverWritten => FaultSpec::standard("zero-over-written", "ALLOC-WRITTEN-1",
            "base:allocation calls data ZERO wherever a client wrote since the server started, an extent cache no write invalidates (read-back also catches it, as ALLOC-ZERO-1)"),
        FastZeroEinval => FaultSpec::standard("fast-zero-einval", "WZ-FAST-1",
            "advertises SEND_FAST_ZERO, then refuses WRITE_ZEROES with FAST_ZERO with EINVAL instead of ENOTSUP"),
        FastZeroRefusalZeroes => FaultSpec::standard("fast-zero-refusal-zeroes", "WZ-FAST-2",
            "advertises SEND_FAST_ZERO, then carries out WRITE_ZEROES with FAST_ZERO and answers ENOTSUP all the same"),
        ZeroesEnotsup => FaultSpec::standard("zeroes-enotsup", "WZ-NOTSUP-1",
            "advertises SEND_FAST_ZERO, then refuses WRITE_ZEROES without FAST_ZERO with ENOTSUP"),
        CacheScribbles => FaultSpec::standard("cache-scribbles", "CACHE-SEM-1",
            "advertises SEND_CACHE, then CACHE overwrites the first byte of its range with 0xff"),
        // Hostile behaviours.
        Hang => FaultSpec::both("hang", "BS-COMPLETE-1",
            "hostile: never answers a block-status request (reads and discards until the client leaves)"),
        Drip => FaultSpec::both("drip", "BS-COMPLETE-1",
            "hostile: block-status replies trickle out one byte per second"),
        HugeLength => FaultSpec::standard("huge-length", "CHUNK-INCONS-1",
            "hostile: a compact status chunk claims 0xfffffff0 payload bytes, then streams zeros"),
        DraftHugeLength => FaultSpec::draft("draft-huge-length", "DRAFT-BOUND-1",
            "hostile: a GET_LBA_STATUS reply claims P = 0xfffffff0, then streams zeros"),
        DraftReadCookiesCrossed => FaultSpec::draft("draft-read-cookies-crossed", "DRAFT-BOUND-1",
            "a READ and the GET_LBA_STATUS in flight behind it get each other's cookie: the READ's data comes where the draft's P belongs"),
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

/// The faults an export carries: sorted, without repeats.
pub type Faults = Chosen<Fault>;

#[cfg(test)]
mod tests {
    use super::*;

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
}
