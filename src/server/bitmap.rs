//! Dirty bitmaps: which granules of the export were written since the server started.
//!
//! Each `--bitmap NAME[:GRANULARITY]` becomes one [`DirtyBitmap`], exported as the context
//! `qemu:dirty-bitmap:NAME` (and, for the first one, as the draft's GET_DIRTY answer). The bitmap
//! is stored as a set of dirty granule runs rather than one bit per granule, so that a large
//! sparse export with a fine granularity costs memory only for what was actually written.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Mutex;

use super::extents::{Dirtiness, Extent, ExtentList};
use crate::wire::consts::{context, limit};

/// Granularity used when a bitmap spec names none (qemu's default too).
pub const DEFAULT_GRANULARITY: u64 = 64 * 1024;
/// Smallest granularity accepted: one classic sector.
pub const MIN_GRANULARITY: u64 = 512;

/// A dirty bitmap to export: its name and tracking granularity in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapSpec {
    pub name: String,
    pub granularity: u64,
}

impl BitmapSpec {
    /// The metadata context that exposes this bitmap.
    pub fn context_name(&self) -> String {
        format!("{}{}", context::QEMU_DIRTY_BITMAP_PREFIX, self.name)
    }

    /// Checks what [`FromStr`] checks, for specs built in code.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("bitmap name is empty".into());
        }
        if self.name.contains('\0') {
            return Err(format!("bitmap name {:?} contains a NUL byte", self.name));
        }
        if self.context_name().len() > limit::MAX_STRING {
            return Err(format!(
                "bitmap name is {} bytes; its context name must stay within {} bytes",
                self.name.len(),
                limit::MAX_STRING
            ));
        }
        if self.granularity < MIN_GRANULARITY || !self.granularity.is_power_of_two() {
            return Err(format!(
                "bitmap {:?}: granularity {} must be a power of two of at least {MIN_GRANULARITY}",
                self.name, self.granularity
            ));
        }
        Ok(())
    }
}

impl FromStr for BitmapSpec {
    type Err = String;

    /// `NAME` or `NAME:GRANULARITY`; the granularity is bytes, or a number with a `K` or `M`
    /// suffix. The last colon separates the two, so names may contain colons if a granularity is
    /// given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, granularity) = match s.rsplit_once(':') {
            Some((name, granularity)) => (name, parse_granularity(granularity)?),
            None => (s, DEFAULT_GRANULARITY),
        };
        let spec = BitmapSpec {
            name: name.to_owned(),
            granularity,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// "65536", "64K", "1M" (suffixes are binary and case-insensitive).
fn parse_granularity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1024u64),
        Some((i, 'm' | 'M')) => (&text[..i], 1024 * 1024),
        Some(_) => (text, 1),
        None => return Err("bitmap granularity is empty (expected e.g. 65536 or 64K)".into()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("bitmap granularity {text:?} is not a byte count like 65536 or 64K"))
}

/// One dirty bitmap, shared by every connection of the server.
#[derive(Debug)]
pub struct DirtyBitmap {
    granularity: u64,
    /// Dirty granule runs: start granule → end granule (exclusive). Runs never overlap or touch:
    /// [`DirtyBitmap::mark`] merges neighbours, so every boundary is a clean/dirty change.
    runs: Mutex<BTreeMap<u64, u64>>,
}

impl DirtyBitmap {
    /// A clean bitmap. `granularity` must be a power of two (checked by [`BitmapSpec`]).
    pub fn new(granularity: u64) -> Self {
        DirtyBitmap {
            granularity: granularity.max(1),
            runs: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// Marks every granule that `[offset, offset + length)` touches as dirty.
    pub fn mark(&self, offset: u64, length: u64) {
        if length == 0 {
            return;
        }
        let end = offset.saturating_add(length);
        let mut start = offset / self.granularity;
        let mut stop = end.div_ceil(self.granularity);
        let mut runs = self.lock();
        // A run starting at or before `start` may overlap or touch the new one.
        if let Some((&s, &e)) = runs.range(..=start).next_back() {
            if e >= start {
                start = s;
                stop = stop.max(e);
                runs.remove(&s);
            }
        }
        // Every run starting inside (or right at the end of) the new one is absorbed.
        let absorbed: Vec<u64> = runs.range(start..=stop).map(|(&s, _)| s).collect();
        for s in absorbed {
            if let Some(e) = runs.remove(&s) {
                stop = stop.max(e);
            }
        }
        runs.insert(start, stop);
    }

    /// Dirtiness of `[offset, offset + length)` as back-to-back extents. Boundaries fall on
    /// granule boundaries except at the range's own ends. At most `max_extents` extents are
    /// returned (a short answer); the list is empty only when `length` is 0.
    pub fn extents(&self, offset: u64, length: u64, max_extents: usize) -> Vec<Extent<Dirtiness>> {
        let end = offset.saturating_add(length);
        let g = self.granularity;
        let mut list = ExtentList::new(max_extents);
        let mut pos = offset;
        let runs = self.lock();
        let first = runs
            .range(..=offset / g)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .into_iter();
        let rest = runs.range(offset / g + 1..).map(|(&s, &e)| (s, e));
        for (s, e) in first.chain(rest) {
            let dirty_start = s.saturating_mul(g).max(pos);
            let dirty_end = e.saturating_mul(g).min(end);
            if dirty_start >= end {
                break;
            }
            if dirty_end <= pos {
                continue;
            }
            if !list.push(dirty_start - pos, Dirtiness::Clean)
                || !list.push(dirty_end - dirty_start, Dirtiness::Dirty)
            {
                return list.into_vec();
            }
            pos = dirty_end;
        }
        if pos < end {
            list.push(end - pos, Dirtiness::Clean);
        }
        list.into_vec()
    }

    /// True while nothing has been marked.
    pub fn is_clean(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // remove-then-insert of whole runs), so a poisoned lock is still safe to use.
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(length: u64, dirty: bool) -> Extent<Dirtiness> {
        Extent::new(
            length,
            if dirty {
                Dirtiness::Dirty
            } else {
                Dirtiness::Clean
            },
        )
    }

    #[test]
    fn parses_name_only_with_default_granularity() {
        let spec: BitmapSpec = "backup".parse().unwrap();
        assert_eq!(spec.name, "backup");
        assert_eq!(spec.granularity, 65536);
        assert_eq!(spec.context_name(), "qemu:dirty-bitmap:backup");
    }

    #[test]
    fn parses_granularity_in_bytes_and_with_suffixes() {
        assert_eq!("b:4096".parse::<BitmapSpec>().unwrap().granularity, 4096);
        assert_eq!("b:64K".parse::<BitmapSpec>().unwrap().granularity, 65536);
        assert_eq!("b:64k".parse::<BitmapSpec>().unwrap().granularity, 65536);
        assert_eq!("b:1M".parse::<BitmapSpec>().unwrap().granularity, 1 << 20);
        let spec: BitmapSpec = "a:b:512".parse().unwrap();
        assert_eq!(spec.name, "a:b");
    }

    #[test]
    fn rejects_bad_specs_with_clear_messages() {
        assert!("".parse::<BitmapSpec>().unwrap_err().contains("empty"));
        assert!(":4096".parse::<BitmapSpec>().unwrap_err().contains("empty"));
        assert!("b:".parse::<BitmapSpec>().unwrap_err().contains("empty"));
        assert!("b:100"
            .parse::<BitmapSpec>()
            .unwrap_err()
            .contains("power of two"));
        assert!("b:256"
            .parse::<BitmapSpec>()
            .unwrap_err()
            .contains("at least 512"));
        assert!("b:x"
            .parse::<BitmapSpec>()
            .unwrap_err()
            .contains("byte count"));
        assert!("b:99999999999999999999M".parse::<BitmapSpec>().is_err());
        assert!("b:18014398509481984M".parse::<BitmapSpec>().is_err());
    }

    #[test]
    fn starts_clean() {
        let b = DirtyBitmap::new(4096);
        assert!(b.is_clean());
        assert_eq!(b.extents(0, 10_000, 100), vec![ext(10_000, false)]);
    }

    #[test]
    fn marks_every_touched_granule() {
        let b = DirtyBitmap::new(4096);
        b.mark(4095, 2); // touches granules 0 and 1
        assert_eq!(
            b.extents(0, 16384, 100),
            vec![ext(8192, true), ext(8192, false)]
        );
    }

    #[test]
    fn boundaries_are_granule_aligned_except_at_request_ends() {
        let b = DirtyBitmap::new(4096);
        b.mark(8192, 1);
        assert_eq!(
            b.extents(100, 20_000, 100),
            vec![ext(8092, false), ext(4096, true), ext(7812, false)]
        );
        assert_eq!(b.extents(9000, 100, 100), vec![ext(100, true)]);
    }

    #[test]
    fn merges_overlapping_and_adjacent_marks() {
        let b = DirtyBitmap::new(512);
        b.mark(0, 512);
        b.mark(2048, 512);
        b.mark(1024, 512);
        assert_eq!(b.runs.lock().unwrap().len(), 3);
        b.mark(512, 512);
        b.mark(1536, 512);
        assert_eq!(b.runs.lock().unwrap().len(), 1);
        assert_eq!(
            b.extents(0, 4096, 100),
            vec![ext(2560, true), ext(1536, false)]
        );
        b.mark(0, 4096);
        assert_eq!(b.extents(0, 4096, 100), vec![ext(4096, true)]);
    }

    #[test]
    fn caps_the_number_of_extents() {
        let b = DirtyBitmap::new(512);
        for i in 0..10 {
            b.mark(i * 1024, 512);
        }
        let out = b.extents(0, 10 * 1024, 3);
        assert_eq!(out, vec![ext(512, true), ext(512, false), ext(512, true)]);
    }

    #[test]
    fn survives_offsets_near_the_top_of_u64() {
        let b = DirtyBitmap::new(1 << 16);
        b.mark(u64::MAX - 10, 100);
        let out = b.extents(u64::MAX - 100, 100, 10);
        assert_eq!(out.iter().map(|e| e.length).sum::<u64>(), 100);
    }
}
