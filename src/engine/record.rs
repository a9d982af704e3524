//! What a case run records: findings, the transcript, descriptor streams, what it could not
//! check, how it lost the server, and what the server negotiated.

use std::time::Instant;

use super::outcome::{Capabilities, ConnectionLoss, Finding};
use crate::checks::from_violation;
use crate::wire::Violation;

#[derive(Default)]
pub(super) struct Record {
    pub findings: Vec<Finding>,
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

    pub fn found(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    pub fn found_all(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
    }

    pub fn violations(&mut self, violations: &[Violation]) {
        self.findings.extend(violations.iter().map(from_violation));
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
