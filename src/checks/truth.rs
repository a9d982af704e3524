//! What only a harness-built fixture can tell, comparing a whole-export map with the fixture's
//! truth: data never called zero (ALLOC-TRUTH-1), dirty maps cover every write
//! (QEMU-DB-COVER-1, DRAFT-DIRTY-COVER-1) and nothing more than the writes' granules
//! (QEMU-DB-PREC-1, recorded), allocation depth is the fixture's, cluster by
//! cluster, and never absent where data is (QEMU-AD-1). One finding per context and rule: the
//! first place it breaks.

use super::read_back::says_zero;
use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;
use crate::fixtures::{Truth, CLUSTER_SIZE};
use crate::map::{MapEntry, Track};
use crate::wire::consts::{context, draft};

/// Every truth rule that applies to `tracks` (maps of one export, one per context).
pub fn against_truth(tracks: &[Track], truth: &Truth) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in tracks {
        out.extend(data_not_zero(t, truth));
        out.extend(writes_dirty(t, truth));
        out.extend(dirty_precision(t, truth));
        out.extend(depth_exact(t, truth).or_else(|| depth_over_data(t, truth)));
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

/// QEMU-DB-PREC-1 (MAY: recorded): a bitmap's dirty entries stay within the granules the
/// writes made after it was created touched. More is safe for a backup but copies data that
/// did not change: a coarser granularity than the bitmap's, or data from before it existed.
/// Entries past the fixture's size (qcow2's tail rounded up to 512) are not judged.
fn dirty_precision(t: &Track, truth: &Truth) -> Option<Finding> {
    let name = t.context.strip_prefix(context::QEMU_DIRTY_BITMAP_PREFIX)?;
    let bt = truth.bitmap(name)?;
    let need = bt.dirty_ranges(truth.size());
    let within = |off: u64, end: u64| {
        let i = need.partition_point(|&(o, l)| o + l <= off);
        need.get(i).is_some_and(|&(o, l)| o <= off && end <= o + l)
    };
    let e = t.entries.iter().find(|e| {
        let end = e.offset.saturating_add(e.length).min(truth.size());
        e.flags & context::STATE_DIRTY != 0 && e.offset < end && !within(e.offset, end)
    })?;
    let old_data = if truth.has_data(e.offset, e.length) {
        ", over data written before the bitmap"
    } else {
        ""
    };
    Some(Finding::broken(
        id::QEMU_DB_PREC_1,
        format!(
            "dirty only the {}-byte granules written since the bitmap was created ({} ranges)",
            bt.granularity,
            need.len()
        ),
        format!("{}+{} dirty{old_data}", e.offset, e.length),
    ))
}

/// Every qcow2 cluster an entry covers whole has the depth the fixture's layers give it. qcow2
/// allocates whole clusters, so the truth is exact per cluster and nothing finer: a cluster
/// split between entries (a short backing file ends inside it, or a server answers at a finer
/// grain) may carry either entry's value, and only `depth_over_data` judges it. The last
/// cluster ends at the end of what the map covered (qcow2 rounds an odd size up to 512).
fn depth_exact(t: &Track, truth: &Truth) -> Option<Finding> {
    if t.context != context::QEMU_ALLOCATION_DEPTH {
        return None;
    }
    for e in &t.entries {
        let end = e.offset.saturating_add(e.length);
        let mut c = e.offset.div_ceil(CLUSTER_SIZE) * CLUSTER_SIZE;
        while c < end {
            let c_end = c.saturating_add(CLUSTER_SIZE).min(t.covered);
            if c_end > end {
                break;
            }
            let want = u64::from(truth.depth_at(c));
            if e.flags != want {
                return Some(Finding::broken(
                    id::QEMU_AD_1,
                    format!(
                        "cluster {c}+{}: depth {want} (the fixture's layers)",
                        c_end - c
                    ),
                    format!("{} in {}+{}", e.state, e.offset, e.length),
                ));
            }
            c = c_end;
        }
    }
    None
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

    fn depth_track(entries: &[(u64, u64, u64)]) -> Track {
        let mut t = Track::new(context::QEMU_ALLOCATION_DEPTH, 0);
        for &(offset, length, flags) in entries {
            t.entries.push(MapEntry {
                context: context::QEMU_ALLOCATION_DEPTH.into(),
                offset,
                length,
                flags,
                state: format!("depth {flags}"),
            });
            t.covered = offset + length;
        }
        t
    }

    #[test]
    fn depth_is_the_fixtures_cluster_by_cluster() {
        const K: u64 = 1024;
        let truth = crate::fixtures::find("backing-chain").unwrap().truth();
        // qemu-nbd's answer (tests/snapshots/oracle.backing-chain.allocation-depth@qemu-nbd).
        let qemu = [
            (0, 512 * K, 2),
            (512 * K, 64 * K, 1),
            (576 * K, 192 * K, 2),
            (768 * K, 64 * K, 1),
            (832 * K, 192 * K, 2),
            (1024 * K, 1024 * K, 0),
            (2048 * K, 64 * K, 1),
            (2112 * K, 960 * K, 0),
            (3072 * K, 64 * K, 1),
            (3136 * K, 960 * K, 0),
        ];
        assert_eq!(depth_exact(&depth_track(&qemu), &truth), None);
        // The backing file's depth called local: no data is called absent, yet it is wrong.
        let mut local = qemu;
        local[0].2 = 1;
        let f = depth_exact(&depth_track(&local), &truth).unwrap();
        assert_eq!(f.clause, id::QEMU_AD_1);
        assert!(f.expected.starts_with("cluster 0+65536: depth 2"), "{f:?}");
        // A cluster split between two entries may carry either value.
        let mut split = qemu.to_vec();
        split.splice(0..2, [(0, 520 * K, 2), (520 * K, 56 * K, 1)]);
        assert_eq!(depth_exact(&depth_track(&split), &truth), None);
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
