//! Live writes: what a case's own WRITE, WRITE_ZEROES and TRIM requests let it expect of a
//! later READ and block status on the same connection (no other client writing).
//!
//! A [`Ledger`] is the case's model of the range it changed: each successful command is an
//! [`Op`], the later one winning where they overlap. From it the checks say what a READ must
//! return (WRITE-READ-1, WZ-READ-1, WZ-FAST-2), that base:allocation calls nothing the case
//! wrote non-zero bytes to ZERO (ALLOC-WRITTEN-1), and that a dirty bitmap shows every write
//! (QEMU-DB-COVER-1). TRIM leaves the contents unknown (the spec lets the server keep or drop
//! the data), so a trimmed range is graded only by what block status says about it, through
//! the read-back rule (what is called ZERO reads as zeros, ALLOC-ZERO-1).

use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;
use crate::map::MapEntry;
use crate::wire::consts::{context, errno};

/// What a range holds after an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Every byte is this one (a WRITE of a pattern).
    Byte(u8),
    /// Zeros (WRITE_ZEROES).
    Zeros,
    /// Anything (TRIM: the server may or may not have dropped the data).
    Unknown,
    /// What it held before (a FAST_ZERO request refused with ENOTSUP).
    Unchanged,
}

/// One command the server accepted, over `[offset, offset+length)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub offset: u64,
    pub length: u64,
    pub content: Content,
    /// The clause a READ that contradicts this op breaks.
    pub clause: ClauseId,
    /// A dirty bitmap must show it: the op wrote (WRITE, WRITE_ZEROES).
    pub dirties: bool,
    /// What the op was, for findings (`WRITE of 0xc3`).
    pub what: String,
}

impl Op {
    pub fn write(offset: u64, length: u64, byte: u8) -> Op {
        Op {
            offset,
            length,
            content: Content::Byte(byte),
            clause: id::WRITE_READ_1,
            dirties: true,
            what: format!("WRITE of {byte:#04x} bytes"),
        }
    }

    pub fn write_zeroes(offset: u64, length: u64) -> Op {
        Op {
            offset,
            length,
            content: Content::Zeros,
            clause: id::WZ_READ_1,
            dirties: true,
            what: "WRITE_ZEROES".into(),
        }
    }

    pub fn trim(offset: u64, length: u64) -> Op {
        Op {
            offset,
            length,
            content: Content::Unknown,
            clause: id::ALLOC_ZERO_1,
            dirties: false,
            what: "TRIM".into(),
        }
    }

    /// A FAST_ZERO request refused with ENOTSUP, which should have changed nothing.
    pub fn refused_fast_zero(offset: u64, length: u64) -> Op {
        Op {
            offset,
            length,
            content: Content::Unchanged,
            clause: id::WZ_FAST_2,
            dirties: false,
            what: "WRITE_ZEROES with FAST_ZERO, refused with ENOTSUP".into(),
        }
    }

    fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// A piece of the export whose expected content one op decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub end: u64,
    pub content: Content,
    /// The clause a contradiction breaks: the deciding op's, or that of an `Unchanged` op on
    /// top of it (the refusal promised to leave it so).
    pub clause: ClauseId,
    pub what: String,
}

/// The case's own changes, in the order the server accepted them.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    ops: Vec<Op>,
}

impl Ledger {
    pub fn record(&mut self, op: Op) {
        if op.length > 0 {
            self.ops.push(op);
        }
    }

    /// Whether the case changed (or may have changed) the export: the fixture's truth no
    /// longer describes it.
    pub fn changed(&self) -> bool {
        self.ops.iter().any(|o| o.content != Content::Unchanged)
    }

    /// What `[offset, end)` must hold, piece by piece, where some op decided it (pieces no
    /// op touched are left out; `Unknown` pieces are kept, with nothing to expect).
    pub fn segments(&self, offset: u64, end: u64) -> Vec<Segment> {
        let mut cuts: Vec<u64> = vec![offset, end];
        for o in &self.ops {
            cuts.extend(
                [o.offset, o.end()]
                    .into_iter()
                    .filter(|c| (offset..end).contains(c)),
            );
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out: Vec<Segment> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mut attribution: Option<(ClauseId, String)> = None;
            let decided = self
                .ops
                .iter()
                .rev()
                .filter(|o| o.offset <= a && b <= o.end());
            for o in decided {
                if o.content == Content::Unchanged {
                    attribution.get_or_insert((o.clause, o.what.clone()));
                    continue;
                }
                let (clause, what) = attribution.unwrap_or((o.clause, o.what.clone()));
                match out.last_mut() {
                    Some(last)
                        if last.end == a
                            && last.content == o.content
                            && last.clause == clause
                            && last.what == what =>
                    {
                        last.end = b;
                    }
                    _ => out.push(Segment {
                        offset: a,
                        end: b,
                        content: o.content,
                        clause,
                        what,
                    }),
                }
                break;
            }
        }
        out
    }

    fn dirtying(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(|o| o.dirties)
    }
}

/// `data`, read at `offset`, against what the ledger says it must hold: one finding per
/// segment it contradicts, at its first wrong byte.
pub fn read_matches(ledger: &Ledger, offset: u64, data: &[u8]) -> Vec<Finding> {
    let end = offset + data.len() as u64;
    let mut found = Vec::new();
    for s in ledger.segments(offset, end) {
        let expected = match s.content {
            Content::Byte(b) => b,
            Content::Zeros => 0,
            Content::Unknown | Content::Unchanged => continue,
        };
        let piece = &data[(s.offset - offset) as usize..(s.end - offset) as usize];
        if let Some(at) = piece.iter().position(|b| *b != expected) {
            found.push(Finding::broken(
                s.clause,
                format!(
                    "{}+{} reads as {expected:#04x} bytes (after the {})",
                    s.offset,
                    s.end - s.offset,
                    s.what
                ),
                format!("byte {:#04x} at offset {}", piece[at], s.offset + at as u64),
            ));
        }
    }
    found
}

/// base:allocation entries that call ZERO a range the case wrote non-zero bytes to
/// (ALLOC-WRITTEN-1): the status contradicts the write even before a READ does.
pub fn zero_over_written(ledger: &Ledger, entries: &[MapEntry]) -> Vec<Finding> {
    let mut found = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.context == context::BASE_ALLOCATION && e.flags & context::STATE_ZERO != 0)
    {
        let end = e.offset.saturating_add(e.length);
        let written = ledger
            .segments(e.offset, end)
            .into_iter()
            .find(|s| matches!(s.content, Content::Byte(b) if b != 0));
        if let Some(s) = written {
            found.push(Finding::broken(
                id::ALLOC_WRITTEN_1,
                format!(
                    "no ZERO over {}+{} (the {} there)",
                    s.offset,
                    s.end - s.offset,
                    s.what
                ),
                format!("{}+{} reported {}", e.offset, e.length, e.state),
            ));
        }
    }
    found
}

/// The bytes a dirty bitmap's entries (one context's, covering the verified range) leave
/// clean although the case wrote them (QEMU-DB-COVER-1).
pub fn dirty_misses_writes(
    ledger: &Ledger,
    context_name: &str,
    entries: &[MapEntry],
    offset: u64,
    end: u64,
) -> Option<Finding> {
    let dirty = |at: u64| {
        entries
            .iter()
            .any(|e| e.offset <= at && at < e.offset.saturating_add(e.length) && e.flags & 1 != 0)
    };
    for op in ledger.dirtying() {
        let (a, b) = (op.offset.max(offset), op.end().min(end));
        // Entries change only at their own boundaries: checking each piece's start is enough.
        let mut cuts: Vec<u64> = vec![a];
        cuts.extend(
            entries
                .iter()
                .map(|e| e.offset)
                .filter(|c| (a..b).contains(c)),
        );
        if let Some(clean) = cuts.into_iter().find(|c| !dirty(*c)) {
            return Some(Finding::broken(
                id::QEMU_DB_COVER_1,
                format!(
                    "{context_name} dirty over {}+{} (the {} there)",
                    op.offset, op.length, op.what
                ),
                format!("offset {clean} reported clean"),
            ));
        }
    }
    None
}

/// A WRITE_ZEROES reply against the FAST_ZERO rules, when the server advertised
/// SEND_FAST_ZERO: with the flag, success or ENOTSUP (WZ-FAST-1); without it, never
/// ENOTSUP (WZ-NOTSUP-1). Other errors are the request's expectation's business.
pub fn fast_zero_reply(fast_zero: bool, error: Option<u32>, observed: &str) -> Option<Finding> {
    match (fast_zero, error) {
        (true, Some(e)) if e != errno::ENOTSUP => Some(Finding::broken(
            id::WZ_FAST_1,
            "success, or a quick ENOTSUP",
            observed,
        )),
        (false, Some(errno::ENOTSUP)) => Some(Finding::broken(
            id::WZ_NOTSUP_1,
            "no ENOTSUP without FAST_ZERO",
            observed,
        )),
        _ => None,
    }
}

/// CACHE changes nothing a READ sees: the range reads the same before and after.
pub fn cache_kept(offset: u64, before: &[u8], after: &[u8]) -> Option<Finding> {
    let at = before.iter().zip(after).position(|(a, b)| a != b)?;
    Some(Finding::broken(
        id::CACHE_SEM_1,
        "the same bytes before and after NBD_CMD_CACHE",
        format!(
            "byte {:#04x} at offset {} became {:#04x}",
            before[at],
            offset + at as u64,
            after[at]
        ),
    ))
}

#[cfg(test)]
mod tests;
