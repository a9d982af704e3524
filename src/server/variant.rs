//! Legal variants: unusual choices the spec allows, taken on purpose (`serve --variant NAME`).
//!
//! The mirror image of [`super::fault`]: a fault breaks one clause and the suite must catch it;
//! a variant keeps every rule a client can hold a server to, while doing something a server
//! may do but ours usually does not (answer less, answer past the request, say status 0, be
//! slow, advertise a minimum block size, …), and the suite must grade it conformant. A check that fails a variant is a false
//! verdict. Each variant names the clause that allows it and, where it really breaks a SHOULD,
//! the clauses it may be warned under.
//!
//! With no variant the hooks below change nothing.

use std::str::FromStr;
use std::time::Duration;

use super::catalogue::catalogue;
use super::extents::{Allocation, Dirtiness, Extent};
use crate::wire::consts::context;
use crate::wire::handshake::BlockSizes;
use crate::wire::reply::Descriptor;

/// `allowed_by` of a choice no rule forbids (the spec asks no server to serve several clients
/// at once), rather than one a MAY allows.
pub const NO_RULE: &str = "(no rule against it)";

/// What a variant is, for `--variant list` and docs/variants.md.
#[derive(Debug, Clone, Copy)]
pub struct VariantSpec {
    pub name: &'static str,
    /// The clause whose MAY (or whose "or") allows the choice.
    pub allowed_by: &'static str,
    /// SHOULD-level clauses the variant really breaks: a warn under these is right, any other
    /// warn (and any fail or error) is a false verdict.
    pub warns: &'static [&'static str],
    pub description: &'static str,
}

impl VariantSpec {
    /// A variant that no clause warns about.
    const fn new(name: &'static str, allowed_by: &'static str, description: &'static str) -> Self {
        VariantSpec {
            name,
            allowed_by,
            warns: &[],
            description,
        }
    }

    /// The SHOULD-level clauses the variant really breaks.
    const fn warns(self, warns: &'static [&'static str]) -> Self {
        VariantSpec { warns, ..self }
    }
}

catalogue! {
    /// One legal departure from the reference server's usual answers. Each row: the name, the
    /// clause that allows it, what it does, and the clauses it may be warned under
    /// (`serve --variant list`, docs/variants.md).
    pub enum Variant: VariantSpec {
        PastRequest => VariantSpec::new("past-request", "BS-REP-SUM-2",
            "without REQ_ONE, the last descriptor runs on to the end of its extent, past the request"),
        OneDescriptor => VariantSpec::new("one-descriptor", "BS-REP-ATLEAST1-1",
            "every status chunk holds one descriptor even without REQ_ONE (less than asked, never none)"),
        ShortReplies => VariantSpec::new("short-replies", "BS-REP-ATLEAST1-1",
            "status chunks stop after 3 descriptors: the client asks again for the rest"),
        StatusZero => VariantSpec::new("status-zero", "ALLOC-SAFE0-1",
            "base:allocation says 0 (allocated data) everywhere: always safe"),
        HoleWithoutZero => VariantSpec::new("hole-without-zero", "ALLOC-SAFE0-1",
            "holes are reported HOLE without ZERO (what a hole over a backing file looks like)"),
        ZeroAsData => VariantSpec::new("zero-as-data", "ALLOC-SAFE0-1",
            "allocated zeros are reported as data (status 0): no zero detection"),
        SplitHoles => VariantSpec::new("split-holes", "ALLOC-SAFE0-1",
            "holes and zeros come in 64 KiB pieces that alternate with status 0"),
        DirtyEverywhere => VariantSpec::new("dirty-everywhere", "QEMU-DIRTY0-1",
            "qemu:dirty-bitmap contexts report every granule dirty: over-reporting is safe"),
        ReverseChunks => VariantSpec::new("reverse-chunks", "BS-REP-ORDER-1",
            "status chunks of several contexts come in the reverse of the order ids were handed out"),
        ReverseMetaContexts => VariantSpec::new("reverse-meta-contexts", "SMC-IGNORE-1",
            "META_CONTEXT replies come in the reverse of the order queried"),
        SimpleErrors => VariantSpec::new("simple-errors", "SR-SIMPLEOK-1",
            "block-status errors as simple replies under structured replies (a SHOULD prefers error chunks)")
            .warns(&["BS-ERR-CHUNK-1"]),
        CloseOnMisuse => VariantSpec::new("close-on-misuse", "TX-VIOL-1",
            "a request that breaks a client MUST (past the end, unknown flag or command, no context) closes the connection instead of EINVAL"),
        SlowReplies => VariantSpec::new("slow-replies", "BS-COMPLETE-1",
            "the first block-status reply of each connection waits 6 s before it goes out, complete"),
        MinBlock512 => VariantSpec::new("min-block-512", "SIZE-ADVERTISE-1",
            "advertises a 512-byte minimum block, exports whole blocks only, refuses unaligned requests with EINVAL"),
        MinBlock4096 => VariantSpec::new("min-block-4096", "SIZE-ADVERTISE-1",
            "advertises a 4 KiB minimum and preferred block, exports whole blocks only, refuses unaligned requests with EINVAL"),
        MaxPayload64K => VariantSpec::new("max-payload-64k", "SIZE-ADVERTISE-1",
            "advertises a 64 KiB maximum payload and refuses longer READs with EINVAL (below the 1 MiB a maximum should be, SIZE-MAX-1, which no case checks)")
            .warns(&["SIZE-MAX-1"]),
        UnrequestedInfo => VariantSpec::new("unrequested-info", "GO-ANYORDER-1",
            "GO and INFO also send NBD_INFO_NAME and NBD_INFO_DESCRIPTION, asked for or not"),
        NoExtendedHeaders => VariantSpec::new("no-extended-headers", "HS-UNSUP-1",
            "NBD_OPT_EXTENDED_HEADERS is answered ERR_UNSUP: an optional extension not offered"),
        NoStructuredReplies => VariantSpec::new("no-structured-replies", "HS-UNSUP-1",
            "NBD_OPT_STRUCTURED_REPLY (and so block status) is answered ERR_UNSUP"),
        NoMetaContexts => VariantSpec::new("no-meta-contexts", "HS-UNSUP-1",
            "LIST and SET_META_CONTEXT are answered ERR_UNSUP: no block status offered"),
        OneConnection => VariantSpec::new("one-connection", NO_RULE,
            "serves one connection at a time: the next client waits until the last one leaves"),
    }
}

/// How long `slow-replies` sits on the first block-status reply of a connection: longer than
/// the 5 s per-read timeout that once failed slow servers, far below the per-request deadline.
pub const SLOW_REPLY: Duration = Duration::from_secs(6);
/// Piece length of `split-holes`.
pub const SPLIT_PIECE: u64 = 64 << 10;
/// Descriptors per chunk under `short-replies`.
pub const SHORT_REPLY_DESCRIPTORS: usize = 3;

impl Variant {
    /// A table of every variant, one per line, for `serve --variant list`.
    pub fn table() -> String {
        Variant::ALL
            .iter()
            .map(|v| {
                let s = v.spec();
                format!("{:<24} {:<20} {}\n", s.name, s.allowed_by, s.description)
            })
            .collect()
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Variant, String> {
        Variant::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
            format!("unknown variant {s:?}; variants: {}", names.join(", "))
        })
    }
}

/// How a request breaks the advertised block sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffLimits {
    /// Offset or length off the minimum block grid: a client MUST NOT send it.
    Unaligned,
    /// A READ longer than the maximum payload: a client MUST NOT send it with simple replies
    /// only; under structured replies the server controls the reply's size.
    TooLong,
}

impl OffLimits {
    pub fn message(self) -> &'static str {
        match self {
            OffLimits::Unaligned => "request not aligned to the minimum block size",
            OffLimits::TooLong => "read longer than the maximum payload",
        }
    }
}

/// The variants an export carries: sorted, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Variants(Vec<Variant>);

impl Variants {
    pub fn new(variants: impl IntoIterator<Item = Variant>) -> Variants {
        let mut v: Vec<Variant> = variants.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Variants(v)
    }

    pub fn has(&self, variant: Variant) -> bool {
        self.0.contains(&variant)
    }

    // ---- negotiation ---------------------------------------------------------------------

    /// The advertised minimum block size (1 without a min-block variant).
    pub fn minimum_block(&self) -> u64 {
        if self.has(Variant::MinBlock4096) {
            4096
        } else if self.has(Variant::MinBlock512) {
            512
        } else {
            1
        }
    }

    /// The block sizes to advertise.
    pub fn block_sizes(&self, clean: BlockSizes) -> BlockSizes {
        let minimum = self.minimum_block() as u32;
        let maximum = if self.has(Variant::MaxPayload64K) {
            64 << 10
        } else {
            clean.maximum
        };
        BlockSizes {
            minimum: clean.minimum.max(minimum),
            preferred: clean.preferred.max(minimum),
            maximum,
        }
    }

    /// The export size a client sees: whole minimum blocks only (a server with a minimum block
    /// size should export a multiple of it, SIZE-MINBLK-EXPORT-1).
    pub fn export_size(&self, image_size: u64) -> u64 {
        let minimum = self.minimum_block();
        image_size / minimum * minimum
    }

    /// Whether an option the reference server implements is to be answered ERR_UNSUP.
    pub fn refuses_option(&self, option: u32) -> bool {
        use crate::wire::consts::option as opt;
        match option {
            opt::EXTENDED_HEADERS => {
                self.has(Variant::NoExtendedHeaders) || self.has(Variant::NoStructuredReplies)
            }
            opt::STRUCTURED_REPLY => self.has(Variant::NoStructuredReplies),
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => self.has(Variant::NoMetaContexts),
            _ => false,
        }
    }

    /// Whether GO/INFO send name and description whether or not they were asked for.
    pub fn sends_unrequested_info(&self) -> bool {
        self.has(Variant::UnrequestedInfo)
    }

    /// The order in which selected contexts are announced.
    pub fn announce_order(&self, ids: &mut [u32]) {
        if self.has(Variant::ReverseMetaContexts) {
            ids.reverse();
        }
    }

    // ---- requests ------------------------------------------------------------------------

    /// Whether a request is refused for breaking the advertised block sizes: offset or length
    /// off the minimum grid, or a READ longer than the maximum payload.
    pub fn refuses_request(&self, is_read: bool, offset: u64, length: u64) -> Option<OffLimits> {
        let minimum = self.minimum_block();
        if offset % minimum != 0 || length % minimum != 0 {
            return Some(OffLimits::Unaligned);
        }
        if is_read && self.has(Variant::MaxPayload64K) && length > 64 << 10 {
            return Some(OffLimits::TooLong);
        }
        None
    }

    /// Whether a request that broke a client MUST closes the connection instead of EINVAL.
    pub fn closes_on_misuse(&self) -> bool {
        self.has(Variant::CloseOnMisuse)
    }

    /// Whether block-status errors go out as simple replies.
    pub fn simple_status_errors(&self) -> bool {
        self.has(Variant::SimpleErrors)
    }

    /// How long to sit on a block-status reply.
    pub fn reply_delay(&self) -> Option<Duration> {
        self.has(Variant::SlowReplies).then_some(SLOW_REPLY)
    }

    // ---- what a block-status reply describes ----------------------------------------------

    /// How far to scan for a request of `length` bytes with `room` bytes before the export's
    /// end: `past-request` looks on to the end of the extent that crosses the request's end.
    pub fn status_scan(&self, length: u64, req_one: bool, room: u64) -> u64 {
        if self.has(Variant::PastRequest) && !req_one {
            room
        } else {
            length
        }
    }

    pub fn restate_allocation(&self, extents: &mut [Extent<Allocation>]) {
        for e in extents.iter_mut() {
            if self.has(Variant::StatusZero)
                || (self.has(Variant::ZeroAsData) && e.state == Allocation::Zero)
            {
                e.state = Allocation::Data;
            }
        }
    }

    pub fn restate_dirtiness(&self, extents: &mut [Extent<Dirtiness>]) {
        if self.has(Variant::DirtyEverywhere) {
            for e in extents.iter_mut() {
                e.state = Dirtiness::Dirty;
            }
        }
    }

    /// One context's descriptors for a request of `request_length` bytes.
    pub fn descriptors(
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

    /// The (context id, descriptors) list of one reply.
    pub fn chunks(&self, chunks: &mut [(u32, Vec<Descriptor>)]) {
        if self.has(Variant::ReverseChunks) {
            chunks.reverse();
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
    fn names_parse_back() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>(), Ok(v));
            let allowed_by = v.spec().allowed_by;
            assert!(
                allowed_by == NO_RULE || crate::clauses::clause(allowed_by).is_some(),
                "{v}"
            );
            for w in v.spec().warns {
                assert!(crate::clauses::clause(w).is_some(), "{v}: {w}");
            }
        }
        assert!("nope".parse::<Variant>().is_err());
    }

    #[test]
    fn no_variant_changes_nothing() {
        let none = Variants::default();
        let mut list = vec![d(4096, 0), d(1 << 20, 3), d(4096, 0)];
        let before = list.clone();
        none.descriptors(&mut list, 1 << 20, false, true);
        assert_eq!(list, before);
        assert_eq!(none.export_size(1000), 1000);
        assert_eq!(none.status_scan(10, false, 100), 10);
        assert!(none.refuses_request(true, 1, 1).is_none());
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

    #[test]
    fn min_block_rounds_the_export_down_and_refuses_off_grid() {
        let v = Variants::new([Variant::MinBlock4096]);
        assert_eq!(v.export_size(1000), 0);
        assert_eq!(v.export_size(8192 + 100), 8192);
        assert_eq!(
            v.refuses_request(false, 512, 4096),
            Some(OffLimits::Unaligned)
        );
        assert!(v.refuses_request(false, 4096, 4096).is_none());
    }
}
