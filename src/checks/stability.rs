//! BS-STABLE-1: with nothing written in between, two maps of one context agree once
//! neighbouring entries of one status are merged (whatever contexts were selected beside it).

use crate::clauses::id;
use crate::engine::outcome::Finding;
use crate::map::{MapEntry, Track};

/// The first context mapped in both `before` and `now` whose two maps disagree; each side of
/// the finding is described by its closure (`expected(context, first difference)`).
pub fn same_maps<'a>(
    before: &[Track],
    now: impl IntoIterator<Item = &'a Track>,
    expected: impl Fn(&str, String) -> String,
    observed: impl Fn(String) -> String,
) -> Option<Finding> {
    now.into_iter().find_map(|t| {
        let earlier = before.iter().find(|b| b.context == t.context)?;
        same_answer(
            &earlier.entries,
            &t.entries,
            |was| expected(&t.context, was),
            &observed,
        )
    })
}

/// `before` and `now` (two maps of one context) disagree: the finding shows the first
/// difference, each side described by its closure (`as first mapped: …`).
pub fn same_answer(
    before: &[MapEntry],
    now: &[MapEntry],
    expected: impl FnOnce(String) -> String,
    observed: impl FnOnce(String) -> String,
) -> Option<Finding> {
    let (a, b) = (coalesce(before), coalesce(now));
    if a == b {
        return None;
    }
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(Finding::broken(
        id::BS_STABLE_1,
        expected(format!("{:?}", a.get(at))),
        observed(format!("{:?}", b.get(at))),
    ))
}

/// Neighbouring entries with the same status merged: what two answers must agree on.
fn coalesce(entries: &[MapEntry]) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some(last) if last.2 == e.flags && last.0 + last.1 == e.offset => last.1 += e.length,
            _ => out.push((e.offset, e.length, e.flags)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(offset: u64, length: u64, flags: u64) -> MapEntry {
        MapEntry {
            context: "base:allocation".into(),
            offset,
            length,
            flags,
            state: String::new(),
        }
    }

    #[test]
    fn split_entries_of_one_status_are_the_same_answer() {
        let one = [e(0, 8192, 0), e(8192, 4096, 3)];
        let split = [e(0, 4096, 0), e(4096, 4096, 0), e(8192, 4096, 3)];
        assert_eq!(same_answer(&one, &split, |w| w, |n| n), None);
        let other = [e(0, 4096, 0), e(4096, 8192, 3)];
        let f = same_answer(&one, &other, |w| w, |n| n).expect("a finding");
        assert_eq!(f.expected, "Some((0, 8192, 0))");
        assert_eq!(f.observed, "Some((0, 4096, 0))");
    }
}
