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

/// Where the extended-headers extension lets a server answer `ERR_EXT_HEADER_REQD` to option
/// `opt`, given what haggling has agreed so far (`structured`, `extended`) and the queries of a
/// LIST or SET (`None` for a hand-made payload, whose queries the client does not know):
/// STRUCTURED_REPLY once extended headers are on (SR-EHREQD-1, the one way to say it cannot
/// downgrade); LIST or SET before either (EH-PREREQ-1); a LIST or SET in compact mode that may
/// reach past `base:` (EH-LIST-1, EH-SET-1: never for base:-only ones); GO and INFO in compact
/// mode (EH-REQD-1: a server may insist, graded as the SHOULD NOT it is by
/// `session::refusal`).
pub fn may_require_extended_headers(
    opt: u32,
    structured: bool,
    extended: bool,
    queries: Option<&[String]>,
) -> bool {
    use crate::wire::consts::option;
    let past_base = |q: &[String]| q.iter().any(|q| !q.starts_with("base:"));
    match opt {
        option::STRUCTURED_REPLY => extended,
        option::LIST_META_CONTEXT | option::SET_META_CONTEXT if !structured && !extended => true,
        // A LIST without queries lists everything, 64-bit contexts included.
        option::LIST_META_CONTEXT => {
            !extended && queries.is_some_and(|q| q.is_empty() || past_base(q))
        }
        option::SET_META_CONTEXT => !extended && queries.is_some_and(past_base),
        option::GO | option::INFO => !extended,
        _ => false,
    }
}

/// What an `ERR_EXT_HEADER_REQD` the case did not list means, where the extension allows it
/// ([`may_require_extended_headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsistsOnExtendedHeaders {
    /// Not that reply, or not allowed here, or listed: graded as any final reply.
    No,
    /// The case expected a refusal: this one is as good as the one it named.
    AnotherRefusal,
    /// The case expected success: it cannot run on this server, which is no failure.
    CaseCannotRun,
}

/// How [`final_reply`] is to treat `last` when it is an allowed `ERR_EXT_HEADER_REQD`.
pub fn insists_on_extended_headers(
    expect: &Expect,
    last: u32,
    allowed: bool,
) -> InsistsOnExtendedHeaders {
    let listed = expect
        .reply
        .iter()
        .any(|r| r == "ERR_*" || r == reply_type::name(reply_type::ERR_EXT_HEADER_REQD));
    if last != reply_type::ERR_EXT_HEADER_REQD || !allowed || listed {
        return InsistsOnExtendedHeaders::No;
    }
    if expect.reply.iter().any(|r| r.starts_with("ERR_")) {
        InsistsOnExtendedHeaders::AnotherRefusal
    } else {
        InsistsOnExtendedHeaders::CaseCannotRun
    }
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

/// LMC-SHAPE-1: a LIST answer is META_CONTEXT replies, then the final ACK or error; `types`
/// are its reply types in order.
pub fn list_shape(types: &[u32]) -> Option<Finding> {
    let (_, before) = types.split_last()?;
    let stray = before.iter().find(|t| **t != reply_type::META_CONTEXT)?;
    Some(Finding::broken(
        id::LMC_SHAPE_1,
        "only META_CONTEXT replies before the final one",
        format!("a {} reply among them", reply_type::name(*stray)),
    ))
}

/// MC-NS-1: every context name lives in a namespace the spec allows: `base`, `nbd-server`,
/// `x-…` (local experiments) or a registered one (`qemu`, the only one registered today). A
/// name with no namespace at all is MC-NAME-1's, not this rule's.
pub fn namespaces(names: &[String]) -> Option<Finding> {
    let bad = names.iter().find(|name| {
        name.split_once(':').is_some_and(|(ns, _)| {
            !ns.is_empty() && !matches!(ns, "base" | "nbd-server" | "qemu") && !ns.starts_with("x-")
        })
    })?;
    Some(Finding::broken(
        id::MC_NS_1,
        "a namespace of base, nbd-server, x-… or a registered one (qemu)",
        format!("{bad:?}"),
    ))
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
        format!("no final reply within {after:?}"),
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
    fn a_list_answer_is_meta_contexts_then_its_final_reply() {
        use reply_type::{ACK, ERR_UNSUP, INFO, META_CONTEXT};
        assert!(list_shape(&[ACK]).is_none());
        assert!(list_shape(&[META_CONTEXT, META_CONTEXT, ACK]).is_none());
        assert!(list_shape(&[META_CONTEXT, ERR_UNSUP]).is_none());
        assert!(list_shape(&[]).is_none());
        let f = list_shape(&[META_CONTEXT, INFO, ACK]).expect("an INFO among them");
        assert_eq!(f.clause, id::LMC_SHAPE_1);
    }

    #[test]
    fn namespaces_are_the_ones_the_spec_allows() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fine = [
            "base:allocation",
            "qemu:dirty-bitmap:bm0",
            "x-vendor:thing",
            "nbd-server:future",
            "no-colon-at-all",
        ];
        assert!(namespaces(&names(&fine)).is_none());
        let f = namespaces(&names(&["base:allocation", "vendor:thing"])).expect("unregistered");
        assert_eq!(f.clause, id::MC_NS_1);
        assert!(f.observed.contains("vendor:thing"), "{}", f.observed);
    }

    #[test]
    fn ext_header_reqd_is_allowed_only_where_the_extension_says() {
        use crate::wire::consts::option::*;
        let base = ["base:allocation".to_owned()];
        let bitmap = ["qemu:dirty-bitmap:bm0".to_owned()];
        assert!(may_require_extended_headers(
            STRUCTURED_REPLY,
            false,
            true,
            None
        ));
        assert!(!may_require_extended_headers(
            STRUCTURED_REPLY,
            false,
            false,
            None
        ));
        assert!(may_require_extended_headers(
            SET_META_CONTEXT,
            false,
            false,
            Some(&base)
        ));
        assert!(!may_require_extended_headers(
            SET_META_CONTEXT,
            true,
            false,
            Some(&base)
        ));
        assert!(may_require_extended_headers(
            SET_META_CONTEXT,
            true,
            false,
            Some(&bitmap)
        ));
        assert!(!may_require_extended_headers(
            SET_META_CONTEXT,
            true,
            true,
            Some(&bitmap)
        ));
        assert!(!may_require_extended_headers(
            SET_META_CONTEXT,
            true,
            false,
            None
        ));
        assert!(may_require_extended_headers(
            LIST_META_CONTEXT,
            true,
            false,
            Some(&[])
        ));
        assert!(!may_require_extended_headers(
            LIST_META_CONTEXT,
            true,
            false,
            Some(&base)
        ));
        assert!(may_require_extended_headers(GO, true, false, None));
        assert!(!may_require_extended_headers(GO, true, true, None));
    }

    #[test]
    fn an_allowed_ext_header_reqd_is_another_refusal_or_a_case_that_cannot_run() {
        let expect = |reply: &[&str]| Expect {
            reply: reply.iter().map(|r| r.to_string()).collect(),
            ..Expect::default()
        };
        let reqd = reply_type::ERR_EXT_HEADER_REQD;
        use InsistsOnExtendedHeaders::*;
        assert_eq!(
            insists_on_extended_headers(&expect(&["ERR_INVALID"]), reqd, true),
            AnotherRefusal
        );
        assert_eq!(
            insists_on_extended_headers(&expect(&["ACK"]), reqd, true),
            CaseCannotRun
        );
        assert_eq!(
            insists_on_extended_headers(&expect(&["ACK"]), reqd, false),
            No
        );
        assert_eq!(
            insists_on_extended_headers(&expect(&["ERR_EXT_HEADER_REQD"]), reqd, true),
            No
        );
        assert_eq!(
            insists_on_extended_headers(&expect(&["ACK"]), reply_type::ACK, true),
            No
        );
    }

    #[test]
    fn list_replies_carry_id_0() {
        assert_eq!(list_reply_ids(&[0, 0]), None);
        assert_eq!(
            list_reply_ids(&[0, 3]).map(|f| f.clause),
            Some(id::LMC_ID_1)
        );
    }
}
