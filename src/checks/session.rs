//! What a server tells a client on entering transmission, checked on every handshake: the
//! block-size constraints of NBD_INFO_BLOCK_SIZE ("Block size constraints") and transmission
//! flags that depend on what was negotiated (SEND_DF, BLOCK_STATUS_PAYLOAD).

use crate::clauses::id;
use crate::client::negotiate::ExportInfo;
use crate::client::Negotiated;
use crate::engine::outcome::Finding;
use crate::wire::consts::{info, reply_type, transmission_flag as tf};
use crate::wire::handshake::BlockSizes;
use crate::Dialect;

/// Every rule the negotiated state of a fresh session can break.
pub fn entered(neg: &Negotiated) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(sizes) = neg.block_sizes {
        out.extend(block_sizes(sizes, neg.size));
    }
    out.extend(flags(neg));
    out
}

/// The three advertised sizes against their MUSTs, and the export size against the minimum.
pub fn block_sizes(b: BlockSizes, export_size: u64) -> Vec<Finding> {
    let BlockSizes {
        minimum,
        preferred,
        maximum,
    } = b;
    let mut out = Vec::new();
    if !minimum.is_power_of_two() || minimum > 1 << 16 {
        out.push(Finding::broken(
            id::SIZE_MIN_1,
            "a minimum block size that is a power of two, at most 65,536",
            format!("minimum {minimum}"),
        ));
    }
    if !preferred.is_power_of_two() || preferred < minimum.max(512) {
        out.push(Finding::broken(
            id::SIZE_PREF_1,
            format!(
                "a preferred block size that is a power of two of at least {}",
                minimum.max(512)
            ),
            format!("preferred {preferred} (minimum {minimum})"),
        ));
    }
    if maximum < preferred {
        out.push(Finding::broken(
            id::SIZE_MAX_1,
            format!("a maximum payload of at least the preferred block size ({preferred})"),
            format!("maximum {maximum}"),
        ));
    }
    // Only meaningful for a minimum that is one at all.
    if minimum.is_power_of_two() && export_size % u64::from(minimum) != 0 {
        out.push(Finding::broken(
            id::SIZE_MIN_2,
            format!("an export size that is a multiple of the minimum block size {minimum}"),
            format!("{export_size} bytes"),
        ));
    }
    out
}

/// What a refused GO (or INFO) may not say: ERR_BLOCK_SIZE_REQD to a request that asked for
/// NBD_INFO_BLOCK_SIZE (GO-BSREQD-1), ERR_EXT_HEADER_REQD to a client that went without
/// extended headers (EH-REQD-1: allowed, but interoperable servers should not insist).
pub fn refusal(last: u32, requested: &[u16], extended: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if last == reply_type::ERR_BLOCK_SIZE_REQD && requested.contains(&info::BLOCK_SIZE) {
        out.push(Finding::broken(
            id::GO_BSREQD_1,
            "no ERR_BLOCK_SIZE_REQD: the request asked for NBD_INFO_BLOCK_SIZE",
            "ERR_BLOCK_SIZE_REQD",
        ));
    }
    if last == reply_type::ERR_EXT_HEADER_REQD && !extended {
        out.push(Finding::broken(
            id::EH_REQD_1,
            "GO without extended headers served, as interoperable servers do",
            "ERR_EXT_HEADER_REQD",
        ));
    }
    out
}

/// GO-ONCE-1: each info type once in one answer; `kinds` are the INFO replies' types in order.
pub fn info_once(kinds: &[u16]) -> Option<Finding> {
    let mut sorted = kinds.to_vec();
    sorted.sort_unstable();
    let twice = sorted.windows(2).find(|w| w[0] == w[1])?[0];
    let times = kinds.iter().filter(|k| **k == twice).count();
    Some(Finding::broken(
        id::GO_ONCE_1,
        "each NBD_INFO type once",
        format!("info type {twice} {times} times"),
    ))
}

/// GO-SAME-1: an INFO and the GO right after it, with the same parameters and no option in
/// between, tell the same story (the order of their INFO replies aside), save the transmission
/// flags in `may_differ` (a rule of GO alone may clear one there).
pub fn same_story(info: &ExportInfo, go: &ExportInfo, may_differ: u16) -> Vec<Finding> {
    let shown = |e: &ExportInfo| {
        format!(
            "size {:?}, flags {:#06x}, block sizes {:?}, name {:?}, description {:?}",
            e.size, e.transmission_flags, e.block_sizes, e.name, e.description
        )
    };
    let same = info.size == go.size
        && info.transmission_flags & !may_differ == go.transmission_flags & !may_differ
        && info.block_sizes == go.block_sizes
        && info.name == go.name
        && info.description == go.description;
    if same {
        return Vec::new();
    }
    vec![Finding::broken(
        id::GO_SAME_1,
        format!("what INFO said: {}", shown(info)),
        format!("GO said {}", shown(go)),
    )]
}

/// Transmission flags that promise what the negotiation did not set up. In the 2016 draft bit 7
/// is GET_LBA_STATUS, not SEND_DF, so that rule is today's dialect only.
pub fn flags(neg: &Negotiated) -> Vec<Finding> {
    let flags = neg.transmission_flags;
    let mut out = Vec::new();
    let replies_structured = neg.structured || neg.extended;
    if neg.dialect == Dialect::Standard && flags & tf::SEND_DF != 0 && !replies_structured {
        out.push(Finding::broken(
            id::TX_DF_1,
            "SEND_DF clear without structured replies or extended headers",
            format!("flags {flags:#06x} set SEND_DF on a connection with simple replies"),
        ));
    }
    if flags & tf::BLOCK_STATUS_PAYLOAD != 0 && !neg.extended {
        out.push(Finding::broken(
            id::TX_BSPL_1,
            "BLOCK_STATUS_PAYLOAD clear without extended headers",
            format!("flags {flags:#06x} set BLOCK_STATUS_PAYLOAD on a connection without them"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(minimum: u32, preferred: u32, maximum: u32) -> BlockSizes {
        BlockSizes {
            minimum,
            preferred,
            maximum,
        }
    }

    fn clauses(found: &[Finding]) -> Vec<&str> {
        found.iter().map(|f| f.clause.as_str()).collect()
    }

    #[test]
    fn legal_block_sizes_pass_including_the_edges() {
        for (b, size) in [
            (sizes(1, 4096, 32 << 20), 12345),
            (sizes(512, 512, 512), 1 << 20),
            (sizes(65536, 65536, 0xffff_ffff), 1 << 30),
            // A maximum need not be a power of two; preferred may exceed the export.
            (sizes(4096, 1 << 20, 3 << 20), 8192),
        ] {
            assert!(block_sizes(b, size).is_empty(), "{b:?} {size}");
        }
    }

    #[test]
    fn each_broken_size_rule_is_its_own_finding() {
        assert_eq!(
            clauses(&block_sizes(sizes(3, 4096, 1 << 20), 3)),
            ["SIZE-MIN-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(1 << 17, 1 << 17, 1 << 20), 1 << 17)),
            ["SIZE-MIN-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(1, 256, 1 << 20), 4096)),
            ["SIZE-PREF-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(4096, 2048, 1 << 20), 4096)),
            ["SIZE-PREF-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(1, 6000, 1 << 20), 4096)),
            ["SIZE-PREF-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(1, 4096, 2048), 4096)),
            ["SIZE-MAX-1"]
        );
        assert_eq!(
            clauses(&block_sizes(sizes(4096, 4096, 1 << 20), 4097)),
            ["SIZE-MIN-2"]
        );
    }

    fn negotiated(flags: u16, structured: bool, extended: bool, dialect: Dialect) -> Negotiated {
        Negotiated {
            size: 1 << 20,
            transmission_flags: tf::HAS_FLAGS | flags,
            handshake_flags: 3,
            structured,
            extended,
            contexts: Vec::new(),
            dialect,
            ..crate::checks::test_support::negotiated()
        }
    }

    #[test]
    fn df_needs_structured_replies_in_todays_dialect_only() {
        let std = Dialect::Standard;
        assert_eq!(
            clauses(&flags(&negotiated(tf::SEND_DF, false, false, std))),
            ["TX-DF-1"]
        );
        assert!(flags(&negotiated(tf::SEND_DF, true, false, std)).is_empty());
        assert!(flags(&negotiated(tf::SEND_DF, false, true, std)).is_empty());
        // The draft's bit 7 is GET_LBA_STATUS, advertised on simple-reply connections.
        assert!(flags(&negotiated(tf::SEND_DF, false, false, Dialect::Draft)).is_empty());
    }

    #[test]
    fn info_and_go_must_agree_on_everything() {
        let info = ExportInfo {
            kinds: vec![info::EXPORT, info::BLOCK_SIZE],
            size: Some(4096),
            transmission_flags: 0x43,
            block_sizes: Some(BlockSizes {
                minimum: 1,
                preferred: 4096,
                maximum: 1 << 25,
            }),
            name: Some("disk".into()),
            description: None,
        };
        assert!(same_story(&info, &info.clone(), 0).is_empty());
        let mut go = info.clone();
        go.transmission_flags |= tf::SEND_TRIM;
        assert_eq!(clauses(&same_story(&info, &go, 0)), ["GO-SAME-1"]);
        let mut go = info.clone();
        go.block_sizes = None;
        assert_eq!(clauses(&same_story(&info, &go, 0)), ["GO-SAME-1"]);
        // Bit 12 at INFO but not at GO, for a client that selected no context.
        let mut go = info.clone();
        let mut said = info.clone();
        said.transmission_flags |= tf::BLOCK_STATUS_PAYLOAD;
        go.transmission_flags &= !tf::BLOCK_STATUS_PAYLOAD;
        let bspl = tf::BLOCK_STATUS_PAYLOAD;
        assert!(same_story(&said, &go, bspl).is_empty());
        assert_eq!(clauses(&same_story(&said, &go, 0)), ["GO-SAME-1"]);
    }

    #[test]
    fn refusals_a_server_may_not_choose() {
        let asked = [info::BLOCK_SIZE, info::NAME];
        let reqd = reply_type::ERR_BLOCK_SIZE_REQD;
        assert_eq!(clauses(&refusal(reqd, &asked, false)), ["GO-BSREQD-1"]);
        assert!(refusal(reqd, &[info::NAME], false).is_empty());
        let eh = reply_type::ERR_EXT_HEADER_REQD;
        assert_eq!(clauses(&refusal(eh, &asked, false)), ["EH-REQD-1"]);
        assert!(refusal(eh, &asked, true).is_empty());
        assert!(refusal(reply_type::ERR_UNKNOWN, &asked, false).is_empty());
    }

    #[test]
    fn each_info_type_once() {
        assert!(info_once(&[0, 3, 1]).is_none());
        let f = info_once(&[0, 3, 0]).expect("NBD_INFO_EXPORT twice");
        assert_eq!(f.clause, id::GO_ONCE_1);
    }

    #[test]
    fn block_status_payload_needs_extended_headers() {
        let bspl = tf::BLOCK_STATUS_PAYLOAD;
        let std = Dialect::Standard;
        assert_eq!(
            clauses(&flags(&negotiated(bspl, true, false, std))),
            ["TX-BSPL-1"]
        );
        assert!(flags(&negotiated(bspl, false, true, std)).is_empty());
    }
}
