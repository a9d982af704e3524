//! What only a harness-built fixture can tell, comparing a whole-export map with the fixture's
//! truth: data never called zero (ALLOC-TRUTH-1), dirty maps cover every write
//! (QEMU-DB-COVER-1, DRAFT-DIRTY-COVER-1), allocation depth never says absent where data is
//! (QEMU-AD-1). One finding per context and rule: the first place it breaks.

use super::read_back::says_zero;
use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;
use crate::fixtures::Truth;
use crate::map::{MapEntry, Track};
use crate::wire::consts::{context, draft};

/// Every truth rule that applies to `tracks` (maps of one export, one per context).
pub fn against_truth(tracks: &[Track], truth: &Truth) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in tracks {
        out.extend(data_not_zero(t, truth));
        out.extend(writes_dirty(t, truth));
        out.extend(depth_over_data(t, truth));
    }
    out
}

fn data_not_zero(t: &Track, truth: &Truth) -> Option<Finding> {
    let e = t
        .entries
        .iter()
        .find(|e| says_zero(&t.context, e.flags) && truth.has_data(e.offset, e.length))?;
    Some(Finding::broken(
        id::ALLOC_TRUTH_1,
        format!("data in {}+{} not called zero", e.offset, e.length),
        format!("reported {}", e.state),
    ))
}

fn writes_dirty(t: &Track, truth: &Truth) -> Option<Finding> {
    let name = t.context.as_str();
    let (bitmap, dirty, clause): (Option<&str>, fn(u64) -> bool, ClauseId) =
        if let Some(b) = name.strip_prefix(context::QEMU_DIRTY_BITMAP_PREFIX) {
            (
                Some(b),
                |f| f & context::STATE_DIRTY != 0,
                id::QEMU_DB_COVER_1,
            )
        } else if name == draft::CONTEXT_DIRTY {
            (
                truth.bitmaps().first().map(|b| b.name.as_str()),
                |f| f == draft::STATE_DIRTY as u64 || f == draft::STATE_DIRTY_DEALLOCATED as u64,
                id::DRAFT_DIRTY_COVER_1,
            )
        } else {
            return None;
        };
    let bt = truth.bitmap(bitmap?)?;
    // A map cut short (its failure is a finding of its own) says nothing about the writes it
    // never reached.
    let (w_off, w_len) = *bt
        .writes
        .iter()
        .filter(|(off, len)| off.saturating_add(*len) <= t.covered)
        .find(|(off, len)| !covered_by_run(&t.entries, *off, *len, dirty))?;
    Some(Finding::broken(
        clause,
        format!("the write {w_off}+{w_len} reported dirty"),
        "part of it reported clean",
    ))
}

fn depth_over_data(t: &Track, truth: &Truth) -> Option<Finding> {
    if t.context != context::QEMU_ALLOCATION_DEPTH {
        return None;
    }
    let e = t
        .entries
        .iter()
        .find(|e| e.flags == 0 && truth.has_data(e.offset, e.length))?;
    Some(Finding::broken(
        id::QEMU_AD_1,
        format!(
            "{}+{} holds data, so some layer allocates it",
            e.offset, e.length
        ),
        "depth 0 (absent)",
    ))
}

/// Whether every byte of the write lies in dirty entries (which may be several in a row).
fn covered_by_run(entries: &[MapEntry], off: u64, len: u64, dirty: fn(u64) -> bool) -> bool {
    let mut at = off;
    let end = off + len;
    for e in entries {
        if e.offset <= at && at < e.offset + e.length {
            if !dirty(e.flags) {
                return false;
            }
            at = e.offset + e.length;
            if at >= end {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, length: u64, flags: u64) -> MapEntry {
        MapEntry {
            context: "qemu:dirty-bitmap:bm0".into(),
            offset,
            length,
            flags,
            state: String::new(),
        }
    }

    #[test]
    fn a_write_must_lie_in_dirty_entries_end_to_end() {
        let dirty = |f: u64| f & 1 != 0;
        let entries = [
            entry(0, 4096, 1),
            entry(4096, 4096, 1),
            entry(8192, 4096, 0),
        ];
        assert!(covered_by_run(&entries, 1000, 5000, dirty));
        assert!(!covered_by_run(&entries, 4096, 8192, dirty));
        assert!(!covered_by_run(&entries, 20000, 1, dirty));
    }
}
