//! What a case run records: findings, the transcript, descriptor streams, what it could not
//! check, how it lost the server, and what the server negotiated.

use std::collections::HashSet;
use std::time::Instant;

use super::outcome::{Capabilities, ConnectionLoss, Finding};
use crate::checks::from_violation;
use crate::wire::Violation;

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
}

impl Record {
    pub fn note(&mut self, line: impl Into<String>) {
        self.transcript.push(line.into());
    }

    /// Records a finding, unless the case already has the very same one.
    pub fn found(&mut self, finding: Finding) {
        if self.seen.insert(finding.clone()) {
            self.findings.push(finding);
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

    /// Records the first way the case lost the server, and when.
    pub fn lost(&mut self, how: ConnectionLoss) {
        self.lost.get_or_insert((how, Instant::now()));
    }

    pub fn stream(&mut self, context: &str, offset: u64, length: u64, flags: u64) {
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
}
