//! Option haggling: the final reply a case expects, the ids in META_CONTEXT replies, and the
//! ways a server may (or may not) end haggling.

use std::time::Duration;

use crate::clauses::{id, ClauseId};
use crate::engine::case::Expect;
use crate::engine::outcome::Finding;
use crate::wire::consts::reply_type;

/// The final reply, and the META_CONTEXT names before it, against what the case expects
/// (under `clause`). `names` holds every context the server replied with, in order.
pub fn final_reply(expect: &Expect, clause: ClauseId, last: u32, names: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let accepted = expect.reply.iter().any(|want| match want.as_str() {
        "ERR_*" => last & reply_type::ERROR_BIT != 0,
        name => reply_type::name(last) == name,
    });
    if !accepted {
        out.push(Finding::broken(
            clause,
            format!("final reply {}", expect.reply.join(" or ")),
            reply_type::name(last).to_owned(),
        ));
    }
    if let Some(n) = expect.contexts {
        if n != names.len() {
            out.push(Finding::broken(
                clause,
                format!("{n} META_CONTEXT replies"),
                format!("{}: {names:?}", names.len()),
            ));
        }
    }
    for wanted in &expect.contains {
        if !names.contains(wanted) {
            out.push(Finding::broken(
                clause,
                format!("{wanted} among the replies"),
                format!("{names:?}"),
            ));
        }
    }
    out
}

/// LMC-ID-1: a LIST_META_CONTEXT answer carries context id 0 throughout.
pub fn list_reply_ids(ids: &[u32]) -> Option<Finding> {
    ids.iter().any(|i| *i != 0).then(|| {
        Finding::broken(
            id::LMC_ID_1,
            "context id 0 in LIST replies",
            format!("ids {ids:?}"),
        )
    })
}

/// ABORT-ACK-1: the server closed after NBD_OPT_ABORT without acknowledging it. (The SHOULD
/// about coping with a bare close, ABORT-LEGACY-1, binds the client, which is us.)
pub fn abort_unacknowledged() -> Finding {
    Finding::broken(
        id::ABORT_ACK_1,
        "ACK before the close",
        "the server closed without ACK",
    )
}

/// HS-NOHARD-1: the server closed during haggling where the client broke no rule.
pub fn closed_while_haggling() -> Finding {
    Finding::broken(
        id::HS_NOHARD_1,
        "an option reply, the connection open",
        "the server closed the connection",
    )
}

/// No answer to an option within the deadline: under the case's clause, else HS-OPTREP-1.
pub fn no_option_reply(clause: Option<ClauseId>, after: Duration) -> Finding {
    Finding::broken(
        clause.unwrap_or(id::HS_OPTREP_1),
        "an option reply",
        format!("nothing within {after:?}"),
    )
}

/// The server had to drop the connection right after the client's flags (HS-CFLAGS-3 unless
/// the case names another clause) and answered an option instead.
pub fn not_closed(clause: Option<ClauseId>, observed: impl Into<String>) -> Finding {
    Finding::broken(
        clause.unwrap_or(id::HS_CFLAGS_3),
        "the connection closed",
        observed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_replies_carry_id_0() {
        assert_eq!(list_reply_ids(&[0, 0]), None);
        assert_eq!(
            list_reply_ids(&[0, 3]).map(|f| f.clause),
            Some(id::LMC_ID_1)
        );
    }
}
