//! What a case run records: findings, the transcript, descriptor streams, what it could not
//! check, how it lost the server, and what the server negotiated.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::outcome::{Capabilities, ConnectionLoss, Finding};
use crate::checks::from_violation;
use crate::clauses::ClauseId;
use crate::wire::Violation;

/// Findings a case keeps per clause: past them, a server breaking the same rule again and again
/// is counted, and one line says how many more there were. Above what a case legitimately
/// makes (one per reply of a few dozen requests in flight, e.g. tx.cookie.interleaved-replies).
pub const FINDINGS_PER_CLAUSE: usize = 64;

/// Descriptor lines a case keeps for its snapshot: far above any fixture's (the largest has about
/// a thousand), a fixed bound on what a server can make the harness hold.
pub const STREAM_LINES: usize = 1 << 16;

#[derive(Default)]
pub(super) struct Record {
    /// Each once, in the order first seen: the same rule broken the same way again (by the
    /// next reply, the next walk, the other probe) says nothing new.
    pub findings: Vec<Finding>,
    /// What `findings` holds, so that a repeat is known without a scan.
    seen: HashSet<Finding>,
    pub transcript: Vec<String>,
    /// One line per descriptor, in the order the server sent them (the snapshot's streams).
    pub streams: Vec<String>,
    /// What the case could not check, and why (e.g. read-back left unread by the budget).
    pub not_checked: Vec<String>,
    /// The first way the case lost the server, and when.
    pub lost: Option<(ConnectionLoss, Instant)>,
    /// When a connection's greeting last arrived.
    pub last_connected: Option<Instant>,
    pub caps: Capabilities,
    /// Findings past [`FINDINGS_PER_CLAUSE`], counted by clause (the registry bounds the map).
    dropped: BTreeMap<ClauseId, usize>,
    /// Descriptors past [`STREAM_LINES`].
    streams_dropped: u64,
}

impl Record {
    pub fn note(&mut self, line: impl Into<String>) {
        self.transcript.push(line.into());
    }

    /// Records a finding, unless the case already has the very same one or its clause's
    /// [`FINDINGS_PER_CLAUSE`] (then it is only counted).
    pub fn found(&mut self, finding: Finding) {
        if self.seen.contains(&finding) {
            return;
        }
        let same = self
            .findings
            .iter()
            .filter(|f| f.clause == finding.clause)
            .count();
        if same < FINDINGS_PER_CLAUSE {
            // Only kept findings are remembered, so `seen` is bounded by the cap too.
            self.seen.insert(finding.clone());
            self.findings.push(finding);
        } else {
            *self.dropped.entry(finding.clause).or_default() += 1;
        }
    }

    pub fn found_all(&mut self, findings: impl IntoIterator<Item = Finding>) {
        for f in findings {
            self.found(f);
        }
    }

    pub fn violations(&mut self, violations: &[Violation]) {
        self.found_all(violations.iter().map(from_violation));
    }

    /// One transcript line per clause whose findings were not all kept, and one stream line
    /// for the descriptors past [`STREAM_LINES`].
    pub fn summarise_dropped(&mut self) {
        if self.streams_dropped > 0 {
            let more = std::mem::take(&mut self.streams_dropped);
            self.streams.push(format!(
                "… and {more} more descriptors (the first {STREAM_LINES} are kept)"
            ));
        }
        for (clause, more) in std::mem::take(&mut self.dropped) {
            self.note(format!(
                "… and {more} more findings under {clause} (the first {FINDINGS_PER_CLAUSE} are kept)"
            ));
        }
    }

    /// Records the first way the case lost the server, and when.
    pub fn lost(&mut self, how: ConnectionLoss) {
        self.lost.get_or_insert((how, Instant::now()));
    }

    pub fn stream(&mut self, context: &str, offset: u64, length: u64, flags: u64) {
        // A finely fragmented export (a real disk through --target) may send millions: the
        // snapshot keeps the first, and says how many more there were.
        if self.streams.len() >= STREAM_LINES {
            self.streams_dropped += 1;
            return;
        }
        self.streams.push(format!(
            "{context} {offset}+{length} {} ({flags:#x})",
            crate::wire::state::state_name(context, flags)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clauses::id;

    #[test]
    fn the_same_finding_is_recorded_once() {
        let stranger = || Finding::broken(id::BS_REP_IDVALID_1, "a handed-out id", "id 7");
        let mut record = Record::default();
        record.found(stranger());
        record.found_all([stranger(), stranger()]);
        // Another observation under the same clause is another finding.
        record.found(Finding::broken(
            id::BS_REP_IDVALID_1,
            "a handed-out id",
            "id 8",
        ));
        let observed: Vec<&str> = record
            .findings
            .iter()
            .map(|f| f.observed.as_str())
            .collect();
        assert_eq!(observed, ["id 7", "id 8"]);
    }

    #[test]
    fn findings_past_the_cap_per_clause_are_counted_in_one_line() {
        let mut record = Record::default();
        // Distinct findings (the same one twice is recorded once anyway).
        for cookie in 0..1000 {
            record.violations(&[Violation::new(
                id::TX_COOKIE_1,
                format!("a stray reply for cookie {cookie}"),
            )]);
        }
        record.violations(&[Violation::new(id::CHUNK_DONE_1, "other")]);
        record.summarise_dropped();
        assert_eq!(record.findings.len(), FINDINGS_PER_CLAUSE + 1);
        assert_eq!(record.transcript.len(), 1);
        assert!(record.transcript[0].contains("936 more findings under TX-COOKIE-1"));
    }

    #[test]
    fn descriptor_lines_past_the_cap_are_counted_in_one_line() {
        let mut record = Record::default();
        for n in 0..STREAM_LINES as u64 + 10 {
            record.stream("base:allocation", n * 512, 512, 0);
        }
        record.summarise_dropped();
        assert_eq!(record.streams.len(), STREAM_LINES + 1);
        assert_eq!(
            record.streams.last().unwrap(),
            &format!("… and 10 more descriptors (the first {STREAM_LINES} are kept)")
        );
    }
}
