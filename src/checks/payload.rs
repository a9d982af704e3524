//! Block status's payload form: what a filtered request asked about (the payload's effect
//! length and ids, BS-PAYLOAD-EFFECT-1) and whether its reply kept to the filter
//! (BS-PAYLOAD-FILTER-1). [`super::block_status`] judges every reply with these.

use std::collections::HashMap;

use crate::clauses::id;
use crate::client::{Negotiated, Reply};
use crate::engine::outcome::Finding;
use crate::wire::consts::command_flag;
use crate::wire::status_payload::StatusPayload;

/// What a block-status request asked about: the area's length and, in the payload form, the
/// contexts it wants answered (BS-PAYLOAD-EFFECT-1, BS-PAYLOAD-FILTER-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub length: u64,
    /// The payload's ids; None without a payload (every selected context is answered).
    pub only: Option<Vec<u32>>,
}

/// The header's length, or in the payload form the payload's effect length and ids. A payload
/// that is not one (not 8 + 4n bytes) asks nothing the reply could be judged by, and is judged
/// as a plain request: its refusal is the case's to expect.
pub fn asked(reply: &Reply, neg: &Negotiated) -> Asked {
    let plain = Asked {
        length: reply.request.length,
        only: None,
    };
    if !neg.extended || reply.request.flags & command_flag::PAYLOAD_LEN == 0 {
        return plain;
    }
    match StatusPayload::decode(&reply.payload) {
        Ok(p) => Asked {
            length: p.effect_length,
            only: Some(p.ids),
        },
        Err(_) => plain,
    }
}

/// A filtered reply answers the payload's contexts, once each, and no other selected one.
pub fn filtered(only: &[u32], seen: &HashMap<u32, usize>, neg: &Negotiated) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, name) in &neg.contexts {
        let chunks = seen.get(id).copied().unwrap_or(0);
        let listed = only.contains(id);
        let expected = usize::from(listed);
        if chunks == expected {
            continue;
        }
        let what = match listed {
            true => format!("one chunk for context {id} ({name}), listed in the payload"),
            false => format!("no chunk for context {id} ({name}), left out of the payload"),
        };
        out.push(Finding::broken(
            id::BS_PAYLOAD_FILTER_1,
            what,
            format!("{chunks} chunks"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::negotiated;
    use crate::clauses::ClauseId;
    use crate::wire::reply::{ChunkBody, Descriptor};

    /// A filtered extended reply: chunks for `answered` ids, to a payload listing `listed`
    /// with an effect length of 1 byte at the export's last byte.
    fn filtered_reply(listed: &[u32], answered: &[u32]) -> Vec<ClauseId> {
        reply_clauses(listed, answered, 1)
    }

    /// As [`filtered_reply`], each chunk one descriptor of `length` bytes.
    fn reply_clauses(listed: &[u32], answered: &[u32], length: u64) -> Vec<ClauseId> {
        use crate::client::{Chunk, ReplyBody};
        use crate::wire::request::{HeaderForm, Request};
        let mut neg = negotiated();
        neg.extended = true;
        neg.contexts.push((2, "qemu:dirty-bitmap:b".to_owned()));
        let p = StatusPayload {
            effect_length: 1,
            ids: listed.to_vec(),
        };
        let mut payload = bytes::BytesMut::new();
        p.encode(&mut payload);
        let request = Request::new(
            HeaderForm::Extended,
            crate::wire::consts::command::BLOCK_STATUS,
            command_flag::PAYLOAD_LEN | command_flag::REQ_ONE,
            1,
            neg.size - 1,
            p.wire_len() as u64,
        );
        let chunks = answered
            .iter()
            .enumerate()
            .map(|(i, &context_id)| Chunk {
                flags: if i + 1 == answered.len() { 1 } else { 0 },
                header_offset: Some(neg.size - 1),
                body: ChunkBody::BlockStatusExt {
                    context_id,
                    count: 1,
                    descriptors: vec![Descriptor { length, flags: 0 }],
                },
            })
            .collect();
        let reply = Reply {
            request,
            body: ReplyBody::Chunks(chunks),
            violations: Vec::new(),
            payload: payload.freeze(),
        };
        super::super::block_status::check(&reply, &neg)
            .iter()
            .map(|f| f.clause)
            .collect()
    }

    /// "limit its replies to the metacontext id(s) in the client's request payload": a chunk
    /// for each listed id, none for the others; REQ_ONE is judged by the effect length (1
    /// byte), not by the header's 12.
    #[test]
    fn a_filtered_reply_answers_the_listed_contexts_only() {
        assert!(filtered_reply(&[2], &[2]).is_empty());
        assert!(filtered_reply(&[1, 2], &[2, 1]).is_empty());
        assert_eq!(filtered_reply(&[2], &[1, 2]), [id::BS_PAYLOAD_FILTER_1]);
        assert_eq!(filtered_reply(&[1, 2], &[1]), [id::BS_PAYLOAD_FILTER_1]);
        // With REQ_ONE a 2-byte descriptor overruns the 1-byte effect length, though not the
        // header's 12 (and it runs past the export's end).
        assert_eq!(
            reply_clauses(&[2], &[2], 2),
            [id::BS_REQ_ONE_2, id::BS_REP_EOF_1]
        );
    }
}
