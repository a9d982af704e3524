//! Structure checks for one draft `GET_LBA_STATUS` reply, and whether a server that answers
//! one says so in its transmission flags.

use super::from_violation;
use crate::clauses::id;
use crate::client::{Reply, ReplyBody};
use crate::engine::outcome::Finding;
use crate::map::{MapEntry, Track};
use crate::wire::consts::draft;
use crate::wire::draft::DraftQuery;

/// Whether the reply answered the request: what makes a server one that supports the command.
pub fn answered(reply: &Reply) -> bool {
    matches!(reply.body, ReplyBody::Draft { error: 0, .. })
}

/// DRAFT-FLAG-1: a server that answers GET_LBA_STATUS advertises bit 7. A server that does not
/// answer it is not one the clause is about (the step grades it unsupported).
pub fn flag_advertised(transmission_flags: u16, reply: &Reply) -> Option<Finding> {
    if transmission_flags & draft::SEND_GET_LBA_STATUS != 0 || !answered(reply) {
        return None;
    }
    Some(Finding::broken(
        id::DRAFT_FLAG_1,
        "transmission flag bit 7 (SEND_GET_LBA_STATUS) from a server that answers GET_LBA_STATUS",
        format!("flags {transmission_flags:#06x}: bit 7 clear, and the request was answered"),
    ))
}

pub fn check(reply: &Reply) -> Vec<Finding> {
    let mut out: Vec<Finding> = reply.violations.iter().map(from_violation).collect();
    let req = &reply.request;
    let ReplyBody::Draft {
        error: 0,
        descriptors,
        ..
    } = &reply.body
    else {
        if !matches!(reply.body, ReplyBody::Draft { .. }) {
            out.push(Finding::broken(
                id::DRAFT_REP_1,
                "a simple reply header, then a parameter length and descriptors",
                "another reply form",
            ));
        }
        return out;
    };
    let query = DraftQuery::from_selector(req.flags);
    let end = req.offset.saturating_add(req.length);
    let mut at = req.offset;
    let mut gap_reported = false;
    for (i, d) in descriptors.iter().enumerate() {
        let d_end = d.offset.saturating_add(d.length as u64);
        if d.length == 0 {
            out.push(Finding::broken(
                id::DRAFT_DESC_NZ_1,
                "no zero-length descriptor",
                format!("descriptor {i} at {} has length 0", d.offset),
            ));
        }
        if d.offset < at {
            out.push(Finding::broken(
                id::DRAFT_DESC_ORDER_1,
                "ascending, non-overlapping descriptors",
                format!("descriptor {i} starts at {} before {at}", d.offset),
            ));
        } else if d.offset > at && !gap_reported {
            out.push(Finding::broken(
                id::DRAFT_DESC_COVER_1,
                "descriptors covering the request without gaps",
                format!("nothing describes {at}..{}", d.offset),
            ));
            gap_reported = true;
        }
        if d.offset < req.offset || d_end > end {
            out.push(Finding::broken(
                id::DRAFT_DESC_RANGE_1,
                format!("descriptors inside {}+{}", req.offset, req.length),
                format!("descriptor {i} is {}+{}", d.offset, d.length),
            ));
        }
        if !query.defines(d.status) {
            out.push(Finding::broken(
                id::DRAFT_STATE_1,
                format!("a status the {} query defines", query.context_name()),
                format!("status {} in descriptor {i}", d.status),
            ));
        }
        at = at.max(d_end);
    }
    if at < end && !gap_reported {
        out.push(Finding::broken(
            id::DRAFT_DESC_COVER_1,
            "descriptors covering the request without gaps",
            format!("nothing describes {at}..{end}"),
        ));
    }
    out
}

/// DRAFT-DIRTY-DEALLOC-1: the dirtiness query's DIRTY_DEALLOCATED hint agrees with the
/// allocation query: each such byte that the allocation map reached is DEALLOCATED there. The
/// first range that breaks it is the finding. Needs both maps of one connection (`map` with
/// `selectors = [0, 1]`); with either missing there is nothing to compare.
pub fn dirty_deallocated(tracks: &[Track]) -> Option<Finding> {
    let find = |name: &str| tracks.iter().find(|t| t.context == name);
    let dirty = find(draft::CONTEXT_DIRTY)?;
    let allocation = find(draft::CONTEXT_ALLOCATED)?;
    let hinted = dirty
        .entries
        .iter()
        .filter(|e| e.flags == u64::from(draft::STATE_DIRTY_DEALLOCATED));
    for e in hinted {
        let end = (e.offset + e.length).min(allocation.covered);
        if let Some(a) = allocation.entries.iter().find(|a| {
            a.offset < end
                && e.offset < a.offset + a.length
                && a.flags != u64::from(draft::STATE_DEALLOCATED)
        }) {
            return Some(broken_hint(e, a));
        }
    }
    None
}

fn broken_hint(dirty: &MapEntry, allocation: &MapEntry) -> Finding {
    Finding::broken(
        id::DRAFT_DIRTY_DEALLOC_1,
        format!(
            "{}+{} (dirty, deallocated) deallocated in the allocation map",
            dirty.offset, dirty.length
        ),
        format!(
            "the allocation map calls {}+{} {}",
            allocation.offset, allocation.length, allocation.state
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(context: &str, entries: &[(u64, u64, u16)]) -> Track {
        let mut t = Track::new(context, 0);
        for &(offset, length, status) in entries {
            t.entries.push(MapEntry {
                context: context.into(),
                offset,
                length,
                flags: status.into(),
                state: String::new(),
            });
            t.covered = offset + length;
        }
        t
    }

    #[test]
    fn the_deallocated_hint_must_match_the_allocation_map() {
        let dirty = track(draft::CONTEXT_DIRTY, &[(0, 4096, 0), (4096, 4096, 2)]);
        let holes = track(draft::CONTEXT_ALLOCATED, &[(0, 4096, 0), (4096, 4096, 2)]);
        assert_eq!(dirty_deallocated(&[dirty.clone(), holes]), None);
        let data = track(draft::CONTEXT_ALLOCATED, &[(0, 6144, 0), (6144, 2048, 2)]);
        let f = dirty_deallocated(&[dirty.clone(), data]).unwrap();
        assert_eq!(f.clause, id::DRAFT_DIRTY_DEALLOC_1);
        // Without the allocation map there is nothing to compare.
        assert_eq!(dirty_deallocated(&[dirty]), None);
    }
}
