//! The read-back oracle: every byte a server calls zero is read, and must be zero
//! (ALLOC-ZERO-1 for `base:allocation`, DRAFT-ALLOC-1 for the draft's allocation query).

use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;
use crate::map::MapEntry;
use crate::wire::consts::{context, draft};

/// The clause that binds what `context` calls zero, if it reports zeroes at all.
pub fn zero_clause(context: &str) -> Option<ClauseId> {
    match context {
        context::BASE_ALLOCATION => Some(id::ALLOC_ZERO_1),
        draft::CONTEXT_ALLOCATED => Some(id::DRAFT_ALLOC_1),
        _ => None,
    }
}

/// Whether `flags` of `context` say the range reads as zeros.
pub fn says_zero(context: &str, flags: u64) -> bool {
    match context {
        context::BASE_ALLOCATION => flags & context::STATE_ZERO != 0,
        draft::CONTEXT_ALLOCATED => flags == draft::STATE_ZEROED as u64,
        _ => false,
    }
}

/// `data`, read at `offset` inside `entry` (which its server called zero), holds a byte that
/// is not zero.
pub fn nonzero(clause: ClauseId, entry: &MapEntry, offset: u64, data: &[u8]) -> Option<Finding> {
    let at = data.iter().position(|b| *b != 0)?;
    Some(Finding::broken(
        clause,
        format!(
            "{}+{} ({}) reads as zeros",
            entry.offset, entry.length, entry.state
        ),
        format!("byte {:#04x} at offset {}", data[at], offset + at as u64),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonzero_byte_in_a_zero_range_is_found_where_it_is() {
        let entry = MapEntry {
            context: context::BASE_ALLOCATION.into(),
            offset: 0,
            length: 8192,
            flags: 3,
            state: "hole,zero".into(),
        };
        assert_eq!(nonzero(id::ALLOC_ZERO_1, &entry, 4096, &[0; 512]), None);
        let mut data = [0u8; 512];
        data[7] = 0x41;
        let f = nonzero(id::ALLOC_ZERO_1, &entry, 4096, &data).expect("a finding");
        assert_eq!(f.observed, "byte 0x41 at offset 4103");
        assert!(says_zero(context::BASE_ALLOCATION, 2));
        assert!(!says_zero(context::BASE_ALLOCATION, 1));
    }
}
