//! NBD_OPT_EXPORT_NAME: the one option without an option reply, so its rules are about what
//! the bytes after it are (size, flags, padding) and about the close that is its only refusal.

use crate::clauses::{id, ClauseId};
use crate::engine::outcome::Finding;

/// EXPNAME-FAIL-1 (unless the case names another clause): the server had to end the session
/// on an export it cannot give, and sent `observed` instead.
pub fn not_closed(clause: Option<ClauseId>, observed: impl Into<String>) -> Finding {
    Finding::broken(
        clause.unwrap_or(id::EXPNAME_FAIL_1),
        "the session ended (EXPORT_NAME cannot be refused any other way)",
        observed,
    )
}

/// EXPNAME-NOZERO-1: with NO_ZEROES agreed, the first reply after EXPORT_NAME did not decode
/// and `unread` (the bytes it started with) opens with zeros: the 124 zeros the server must
/// not send came after all. `None` when NO_ZEROES was not agreed or the bytes are something
/// else (whatever rule those break is the decoder's to name).
pub fn padding_despite_no_zeroes(no_zeroes: bool, unread: &[u8]) -> Option<Finding> {
    let head = unread.get(..4)?;
    (no_zeroes && head.iter().all(|b| *b == 0)).then(|| {
        Finding::broken(
            id::EXPNAME_NOZERO_1,
            "no padding after size and flags (NO_ZEROES was agreed): a reply magic next",
            format!(
                "{} bytes starting with zeros where the first reply should begin",
                unread.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_where_a_reply_begins_are_padding_only_after_no_zeroes() {
        let zeros = [0u8; 124];
        let f = padding_despite_no_zeroes(true, &zeros).expect("padding");
        assert_eq!(f.clause, id::EXPNAME_NOZERO_1);
        assert!(padding_despite_no_zeroes(false, &zeros).is_none());
        assert!(padding_despite_no_zeroes(true, &[0x67, 0x44, 0x66, 0x98]).is_none());
        assert!(padding_despite_no_zeroes(true, &[0, 0]).is_none());
    }

    #[test]
    fn an_answered_unknown_export_breaks_expname_fail_unless_told_otherwise() {
        assert_eq!(not_closed(None, "x").clause, id::EXPNAME_FAIL_1);
        assert_eq!(
            not_closed(Some(id::HS_NOHARD_1), "x").clause,
            id::HS_NOHARD_1
        );
    }
}
