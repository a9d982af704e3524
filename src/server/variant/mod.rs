//! Legal variants: unusual choices the spec allows, taken on purpose (`serve --variant NAME`).
//!
//! The mirror image of [`super::fault`]: a fault breaks one clause and the suite must catch it;
//! a variant keeps every rule a client can hold a server to, while doing something a server
//! may do but ours usually does not (answer less, answer past the request, say status 0, be
//! slow, advertise a minimum block size, …), and the suite must grade it conformant. A check
//! that fails a variant is a false verdict. Each variant, a row of the [`Variant`] table below,
//! names the clause that allows it and, where it really breaks a SHOULD, the clauses it may be
//! warned under.
//!
//! [`Variants`] holds the hooks the server's layers call: negotiation, request checking and
//! the timing of replies here; what a status answer says in `answer`, at the same stages as
//! the faults and just before them ([`Variants::scan`], [`Variants::restate`],
//! [`Variants::reshape`]). With no variant every hook changes nothing.

mod answer;

use std::str::FromStr;
use std::time::Duration;

use super::catalogue::{catalogue, Chosen};
use crate::wire::consts::limit;
use crate::wire::handshake::BlockSizes;

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
        NoStatusPayload => VariantSpec::new("no-status-payload", "BS-PAYLOAD-ADV-1",
            "NBD_FLAG_BLOCK_STATUS_PAYLOAD is not offered: a block-status payload gets EINVAL"),
        OneConnection => VariantSpec::new("one-connection", NO_RULE,
            "serves one connection at a time: the next client waits until the last one leaves"),
    }
}

/// How long `slow-replies` sits on the first block-status reply of a connection: longer than
/// the 5 s per-read timeout that once failed slow servers, far below the per-request deadline.
pub const SLOW_REPLY: Duration = Duration::from_secs(6);

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
pub type Variants = Chosen<Variant>;

impl Variants {
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
            clean.maximum.min(64 << 10)
        } else {
            clean.maximum
        };
        BlockSizes {
            minimum: clean.minimum.max(minimum),
            preferred: clean.preferred.max(minimum),
            maximum,
        }
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

    /// Whether the block-status payload form (bit 12) is withheld.
    pub fn hides_status_payload(&self) -> bool {
        self.has(Variant::NoStatusPayload)
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

    /// Whether a request is refused for breaking the advertised block `sizes`: offset or
    /// length off the minimum grid, or a READ longer than a maximum payload below our own
    /// I/O limit (which the plan refuses on its own terms).
    pub fn refuses_request(
        &self,
        sizes: BlockSizes,
        is_read: bool,
        offset: u64,
        length: u64,
    ) -> Option<OffLimits> {
        let minimum = u64::from(sizes.minimum).max(1);
        if offset % minimum != 0 || length % minimum != 0 {
            return Some(OffLimits::Unaligned);
        }
        let maximum = u64::from(sizes.maximum);
        if is_read && sizes.maximum < limit::MAX_IO_PAYLOAD && length > maximum {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const CLEAN: BlockSizes = crate::server::negotiate::BLOCK_SIZES;

    #[test]
    fn no_variant_changes_nothing() {
        let none = Variants::default();
        assert_eq!(none.block_sizes(CLEAN), CLEAN);
        assert!(none.refuses_request(CLEAN, true, 1, 1).is_none());
    }

    #[test]
    fn min_block_refuses_off_grid() {
        let v = Variants::new([Variant::MinBlock4096]);
        let sizes = v.block_sizes(CLEAN);
        assert_eq!(
            v.refuses_request(sizes, false, 512, 4096),
            Some(OffLimits::Unaligned)
        );
        assert!(v.refuses_request(sizes, false, 4096, 4096).is_none());
    }
}
