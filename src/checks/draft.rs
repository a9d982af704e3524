//! Structure checks for one draft `GET_LBA_STATUS` reply.

use super::from_violation;
use crate::clauses::id;
use crate::client::{Reply, ReplyBody};
use crate::engine::outcome::Finding;
use crate::wire::draft::DraftQuery;

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
