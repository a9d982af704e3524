//! Structure checks for one `NBD_CMD_BLOCK_STATUS` reply (compact or extended).

use std::collections::HashMap;

use super::from_violation;
use crate::clauses::id;
use crate::client::{Negotiated, Reply, ReplyBody};
use crate::engine::outcome::Finding;
use crate::wire::consts::{chunk_type, command_flag, context, errno, limit, reply_flag};
use crate::wire::reply::{ChunkBody, Descriptor};

use super::payload::{asked, filtered};
/// Every clause that applies to this reply. `effect_length` is what the request asked for.
pub fn check(reply: &Reply, negotiated: &Negotiated) -> Vec<Finding> {
    let mut out: Vec<Finding> = reply.violations.iter().map(from_violation).collect();
    match &reply.body {
        ReplyBody::Simple { error: 0, .. } => out.push(Finding::broken(
            id::BS_NEG_3,
            "a successful block-status reply is structured",
            "a simple reply with error 0",
        )),
        ReplyBody::Simple { error, .. } => {
            if negotiated.structured && !negotiated.extended {
                out.push(Finding::broken(
                    id::BS_ERR_CHUNK_1,
                    "the error in an error chunk",
                    format!("a simple reply with {}", errno::name(*error)),
                ));
            }
            check_errno(*error, eoverflow_allowed(reply, negotiated), &mut out);
        }
        ReplyBody::Chunks(chunks) => {
            check_chunks(reply, chunks, negotiated, &mut out);
            out.extend(super::max_payload::check(reply, negotiated));
        }
        ReplyBody::Draft { .. } => out.push(Finding::broken(
            id::BS_NEG_3,
            "a structured reply",
            "a draft-format reply",
        )),
    }
    out
}

/// EOVERFLOW is allowed for "a command without payload [that] requests a length larger than
/// an advertised maximum payload length" ("Error values"): a block status without a payload
/// over the advertised maximum.
fn eoverflow_allowed(reply: &Reply, neg: &Negotiated) -> bool {
    reply.request.flags & command_flag::PAYLOAD_LEN == 0
        && neg
            .block_sizes
            .is_some_and(|b| reply.request.length > u64::from(b.maximum))
}

fn check_errno(error: u32, eoverflow_allowed: bool, out: &mut Vec<Finding>) {
    if error == errno::ENOTSUP {
        out.push(Finding::broken(
            id::BS_ERR_NOTSUP_1,
            "not ENOTSUP (reserved for fast zero)",
            "ENOTSUP",
        ));
    }
    if error == errno::EOVERFLOW && !eoverflow_allowed {
        out.push(Finding::broken(
            id::BS_ERR_EOVF_1,
            "not EOVERFLOW (reserved for DF reads and payload-free commands over the maximum)",
            "EOVERFLOW",
        ));
    }
    if ![
        errno::EPERM,
        errno::EIO,
        errno::ENOMEM,
        errno::EINVAL,
        errno::ENOSPC,
        errno::EOVERFLOW,
        errno::ENOTSUP,
        errno::ESHUTDOWN,
    ]
    .contains(&error)
    {
        out.push(Finding::broken(
            id::ERRNO_SET_1,
            "one of the defined error values",
            format!("error value {error}"),
        ));
    }
}

fn check_chunks(
    reply: &Reply,
    chunks: &[crate::client::Chunk],
    neg: &Negotiated,
    out: &mut Vec<Finding>,
) {
    let req = &reply.request;
    let asked = asked(reply, neg);
    let mut failed = false;
    out.extend(error_chunks_once(chunks));
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        if c.flags & !reply_flag::DONE != 0 {
            out.push(Finding::broken(
                id::CHUNK_FLAGS_1,
                "no reply flags but DONE",
                format!("flags {:#06x}", c.flags),
            ));
        }
        match &c.body {
            ChunkBody::None if !last => out.push(Finding::broken(
                id::CHUNK_NONE_1,
                "NONE only as the final chunk",
                format!("NONE as chunk {} of {}", i + 1, chunks.len()),
            )),
            ChunkBody::Error { error, offset, .. } => {
                failed = true;
                check_errno(*error, eoverflow_allowed(reply, neg), out);
                if let Some(o) = offset {
                    let inside = *o >= req.offset && o - req.offset < asked.length.max(1);
                    if !inside {
                        out.push(Finding::broken(
                            id::BS_ERR_OFFSET_1,
                            format!("an offset inside {}+{}", req.offset, asked.length),
                            format!("offset {o}"),
                        ));
                    }
                }
            }
            ChunkBody::BlockStatus { .. } if neg.extended => out.push(Finding::broken(
                id::BS_REP_NOEXT_1,
                "BLOCK_STATUS_EXT chunks under extended headers",
                "a 32-bit BLOCK_STATUS chunk",
            )),
            ChunkBody::BlockStatusExt { .. } if !neg.extended => out.push(Finding::broken(
                id::BS_EXT_GATE_1,
                "32-bit BLOCK_STATUS chunks without extended headers",
                "a BLOCK_STATUS_EXT chunk",
            )),
            ChunkBody::BlockStatus { .. } | ChunkBody::BlockStatusExt { .. } | ChunkBody::None => {}
            other => out.push(Finding::broken(
                id::BS_REP_PERCTX_1,
                "only block-status chunks (and errors) in a block-status reply",
                format!("a {} chunk", chunk_type::name(other.chunk_type())),
            )),
        }
    }
    if failed {
        return; // A failed reply may carry some status chunks; per-context rules don't apply.
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (id, descriptors) in reply.status_chunks() {
        *seen.entry(id).or_default() += 1;
        match neg.context_name(id) {
            None => out.push(Finding::broken(
                id::BS_REP_IDVALID_1,
                "a context id handed out by SET_META_CONTEXT",
                format!("context id {id}"),
            )),
            Some(name) => check_descriptors(
                req.offset,
                asked.length,
                req.flags,
                name,
                descriptors,
                neg,
                out,
            ),
        }
    }
    if let Some(only) = &asked.only {
        out.extend(filtered(only, &seen, neg));
        return;
    }
    for (id, name) in &neg.contexts {
        match seen.get(id).copied().unwrap_or(0) {
            1 => {}
            0 => out.push(Finding::broken(
                id::BS_REP_PERCTX_1,
                format!("one chunk for context {id} ({name})"),
                "none",
            )),
            n => out.push(Finding::broken(
                id::BS_REP_PERCTX_1,
                format!("one chunk for context {id} ({name})"),
                format!("{n} chunks"),
            )),
        }
    }
}

/// ERRCHUNK-ERR-2 and ERRCHUNK-OFF-2: one ERROR chunk per reply at most, and no offset in two
/// ERROR_OFFSET chunks.
fn error_chunks_once(chunks: &[crate::client::Chunk]) -> Vec<Finding> {
    let mut out = Vec::new();
    let errors = chunks
        .iter()
        .filter(|c| c.body.chunk_type() == chunk_type::ERROR)
        .count();
    if errors > 1 {
        out.push(Finding::broken(
            id::ERRCHUNK_ERR_2,
            "at most one ERROR chunk in a reply",
            format!("{errors} ERROR chunks"),
        ));
    }
    let mut offsets: Vec<u64> = chunks
        .iter()
        .filter_map(|c| match c.body {
            ChunkBody::Error {
                offset: Some(o), ..
            } => Some(o),
            _ => None,
        })
        .collect();
    offsets.sort_unstable();
    if let Some(w) = offsets.windows(2).find(|w| w[0] == w[1]) {
        out.push(Finding::broken(
            id::ERRCHUNK_OFF_2,
            "each offset in one ERROR_OFFSET chunk at most",
            format!("offset {} reported twice", w[0]),
        ));
    }
    out
}

/// Rules on one context's descriptors for a request of `length` bytes at `offset`.
pub fn check_descriptors(
    offset: u64,
    length: u64,
    flags: u16,
    name: &str,
    descriptors: &[Descriptor],
    neg: &Negotiated,
    out: &mut Vec<Finding>,
) {
    if descriptors.is_empty() {
        out.push(Finding::broken(
            id::BS_REP_ATLEAST1_1,
            format!("at least one descriptor for {name}"),
            "none",
        ));
        return;
    }
    if flags & command_flag::REQ_ONE != 0 {
        if descriptors.len() != 1 {
            out.push(Finding::broken(
                id::BS_REQ_ONE_1,
                format!("exactly one descriptor for {name} with REQ_ONE"),
                format!("{} descriptors", descriptors.len()),
            ));
        }
        if descriptors[0].length > length {
            out.push(Finding::broken(
                id::BS_REQ_ONE_2,
                format!("a descriptor no longer than the requested {length} bytes"),
                format!("{} bytes for {name}", descriptors[0].length),
            ));
        }
    } else {
        let head: u64 = descriptors[..descriptors.len() - 1]
            .iter()
            .fold(0u64, |a, d| a.saturating_add(d.length));
        if descriptors.len() > 1 && head >= length {
            out.push(Finding::broken(
                id::BS_REP_SUM_1,
                format!(
                    "all descriptors but the last of {name} below the requested {length} bytes"
                ),
                format!("they add up to {head}"),
            ));
        }
    }
    let total: u64 = descriptors
        .iter()
        .fold(0u64, |a, d| a.saturating_add(d.length));
    let end = offset.saturating_add(total);
    if total > length && flags & command_flag::REQ_ONE == 0 {
        out.push(Finding::info(
            id::BS_REP_SUM_2,
            format!("descriptors within {offset}+{length}"),
            format!(
                "the last descriptor of {name} runs {} bytes past the request",
                total - length
            ),
        ));
    }
    if end > neg.size {
        out.push(Finding::broken(
            id::BS_REP_EOF_1,
            format!(
                "descriptors of {name} ending by the export size {}",
                neg.size
            ),
            format!("they end at {end}"),
        ));
    }
    let is_base = name == context::BASE_ALLOCATION;
    let is_dirty = name.starts_with(context::QEMU_DIRTY_BITMAP_PREFIX);
    // Each rule once per chunk, at its first offending descriptor. High bits of a 32-bit
    // context under extended headers break a MUST of their own, so they are not also counted
    // as reserved bits.
    let high = neg.extended && (is_base || is_dirty || name == context::QEMU_ALLOCATION_DEPTH);
    let low = |d: &&Descriptor| d.flags & 0xffff_ffff;
    if let Some(d) = descriptors.iter().find(|d| high && d.flags >> 32 != 0) {
        out.push(Finding::broken(
            id::BS_EXT_HI_1,
            "high 32 status bits zero for a 32-bit context",
            format!("status {:#x}", d.flags),
        ));
    }
    if let Some(d) = descriptors.iter().find(|d| is_base && low(d) & !0x3 != 0) {
        out.push(Finding::broken(
            id::ALLOC_RSV_1,
            "reserved base:allocation bits clear",
            format!("status {:#x}", d.flags),
        ));
    }
    if let Some(d) = descriptors
        .iter()
        .find(|d| is_dirty && low(d) & !context::STATE_DIRTY != 0)
    {
        out.push(Finding::broken(
            id::QEMU_DB_1,
            "only bit 0 in a dirty-bitmap status",
            format!("status {:#x}", d.flags),
        ));
    }
    check_alignment(offset, descriptors, name, neg, out);
    if let Some(w) = descriptors
        .windows(2)
        .position(|w| w[0].flags == w[1].flags)
    {
        out.push(Finding::broken(
            id::BS_REP_DIFF_1,
            format!("neighbouring descriptors of {name} with different status"),
            format!(
                "descriptors {w} and {} both have status {:#x}",
                w + 1,
                descriptors[w].flags
            ),
        ));
    }
    if descriptors.len() > limit::MAX_DESCRIPTORS_PER_CHUNK {
        // Reported by the codec (BS-REP-CAP-1); nothing more to add here.
    }
}

/// Interior descriptor boundaries should fall on 512 and on the advertised minimum block size;
/// the end of an unaligned export and the request's own ends are exempt.
fn check_alignment(
    offset: u64,
    descriptors: &[Descriptor],
    name: &str,
    neg: &Negotiated,
    out: &mut Vec<Finding>,
) {
    let minimum = neg.block_sizes.map_or(1, |b| b.minimum as u64).max(1);
    let mut at = offset;
    let mut warned_512 = false;
    let mut warned_min = false;
    for d in &descriptors[..descriptors.len() - 1] {
        at = at.saturating_add(d.length);
        if at >= neg.size {
            break;
        }
        if at == offset {
            continue; // the request's own start (after a zero-length descriptor, BS-REP-NZ-1)
        }
        if !warned_512 && at % 512 != 0 {
            out.push(Finding::broken(
                id::BS_REP_512_1,
                format!("descriptor boundaries of {name} on multiples of 512"),
                format!("a boundary at {at}"),
            ));
            warned_512 = true;
        }
        if !warned_min && minimum > 1 && at % minimum != 0 {
            out.push(Finding::broken(
                id::BS_REP_MINBLK_1,
                format!("descriptor boundaries of {name} on the {minimum}-byte minimum block size"),
                format!("a boundary at {at}"),
            ));
            warned_min = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::negotiated;
    use crate::clauses::ClauseId;
    use crate::client::Negotiated;

    fn clauses(descriptors: &[(u64, u64)], length: u64) -> Vec<ClauseId> {
        let list: Vec<Descriptor> = descriptors
            .iter()
            .map(|&(length, flags)| Descriptor { length, flags })
            .collect();
        let mut out = Vec::new();
        let name = context::BASE_ALLOCATION;
        check_descriptors(0, length, 0, name, &list, &negotiated(), &mut out);
        out.iter().map(|f| f.clause).collect()
    }

    /// "NBD_REPLY_TYPE_BLOCK_STATUS": without REQ_ONE the lengths of the first N-1 descriptors
    /// MUST add up to less than the requested length; only the last may cross the end. A last
    /// descriptor that starts exactly at the request's end (nbdkit 1.32.5's cow filter and sh
    /// plugin: 0+8192 answered [8192 data, 57344 hole,zero]) breaks that MUST.
    #[test]
    fn only_the_last_descriptor_may_reach_past_the_request() {
        assert_eq!(clauses(&[(4096, 0), (61440, 3)], 8192), [id::BS_REP_SUM_2]);
        assert_eq!(
            clauses(&[(8192, 0), (57344, 3)], 8192),
            [id::BS_REP_SUM_1, id::BS_REP_SUM_2]
        );
        assert!(clauses(&[(4096, 0), (4096, 3)], 8192).is_empty());
        assert!(clauses(&[(8192, 0)], 8192).is_empty());
    }

    #[test]
    fn eoverflow_is_allowed_only_over_an_advertised_maximum() {
        use crate::wire::consts::command;
        use crate::wire::handshake::BlockSizes;
        use crate::wire::request::{HeaderForm, Request};
        let mut neg = negotiated();
        // A simple refusal (after structured replies: BS-ERR-CHUNK-1 too) of 1 MiB.
        let over = Reply {
            request: Request::new(HeaderForm::Compact, command::BLOCK_STATUS, 0, 1, 0, 1 << 20),
            body: ReplyBody::Simple {
                error: errno::EOVERFLOW,
                data: None,
            },
            violations: Vec::new(),
            payload: Default::default(),
        };
        let clauses = |r: &Reply, n: &Negotiated| -> Vec<&'static str> {
            check(r, n).iter().map(|f| f.clause.as_str()).collect()
        };
        assert!(clauses(&over, &neg).contains(&"BS-ERR-EOVF-1"));
        neg.block_sizes = Some(BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: 65536,
        });
        assert!(!clauses(&over, &neg).contains(&"BS-ERR-EOVF-1"));
    }
}
