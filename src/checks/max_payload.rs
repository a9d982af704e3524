//! Reply chunks against an advertised maximum payload ("Structured reply types", "Size
//! constraints").
//!
//! "A server MUST NOT send a chunk where any variable-length portion of the chunk is larger
//! than any advertised maximum payload size (however, the overall chunk may exceed the maximum
//! payload by the small amount of fixed-length overhead inherent in the chunk type)." For a
//! status chunk the variable part is its descriptor list (the context id, and the count under
//! extended headers, are the fixed overhead); for an error chunk, its message. Block status
//! without REQ_ONE is a reply whose size the server controls, which "MAY exceed the maximum
//! payload by the fixed amount of overhead" and no more: that case is CHUNK-SRVCTL-1. Without
//! an advertised maximum nothing is bounded here.

use crate::clauses::{id, ClauseId};
use crate::client::{Negotiated, Reply, ReplyBody};
use crate::engine::outcome::Finding;
use crate::wire::consts::command_flag;
use crate::wire::reply::ChunkBody;

/// Every chunk of `reply` whose variable-length part exceeds the advertised maximum payload.
pub fn check(reply: &Reply, neg: &Negotiated) -> Vec<Finding> {
    let Some(maximum) = neg.block_sizes.map(|b| u64::from(b.maximum)) else {
        return Vec::new();
    };
    let ReplyBody::Chunks(chunks) = &reply.body else {
        return Vec::new();
    };
    let server_sized = reply.request.flags & command_flag::REQ_ONE == 0;
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let (clause, part, bytes) = match &chunk.body {
            ChunkBody::BlockStatus { descriptors, .. } => (
                status_clause(server_sized),
                "descriptors",
                descriptors.len() as u64 * 8,
            ),
            ChunkBody::BlockStatusExt { descriptors, .. } => (
                status_clause(server_sized),
                "descriptors",
                descriptors.len() as u64 * 16,
            ),
            ChunkBody::Error { message, .. } => {
                (id::CHUNK_MAXPL_1, "message", message.len() as u64)
            }
            _ => continue,
        };
        if bytes > maximum {
            out.push(Finding::broken(
                clause,
                format!("at most the advertised maximum payload of {maximum} bytes of {part}"),
                format!("{bytes} bytes of {part} in chunk {}", i + 1),
            ));
        }
    }
    out
}

/// A status chunk's clause: a server-sized reply's (no REQ_ONE) or any chunk's.
fn status_clause(server_sized: bool) -> ClauseId {
    if server_sized {
        id::CHUNK_SRVCTL_1
    } else {
        id::CHUNK_MAXPL_1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Chunk;
    use crate::wire::consts::command;
    use crate::wire::handshake::BlockSizes;
    use crate::wire::reply::Descriptor;
    use crate::wire::request::{HeaderForm, Request};

    fn negotiated(maximum: Option<u32>) -> Negotiated {
        Negotiated {
            size: 2 << 20,
            block_sizes: maximum.map(|maximum| BlockSizes {
                minimum: 512,
                preferred: 512,
                maximum,
            }),
            ..crate::checks::test_support::negotiated()
        }
    }

    fn reply(flags: u16, body: ChunkBody) -> Reply {
        let request = Request::new(
            HeaderForm::Compact,
            command::BLOCK_STATUS,
            flags,
            7,
            0,
            2 << 20,
        );
        Reply {
            request,
            body: ReplyBody::Chunks(vec![Chunk {
                flags: 1,
                header_offset: None,
                body,
            }]),
            violations: Vec::new(),
            payload: Default::default(),
        }
    }

    fn status(n: usize) -> ChunkBody {
        let descriptors = (0..n)
            .map(|i| Descriptor {
                length: 4096,
                flags: (i % 2) as u64 * 3,
            })
            .collect();
        ChunkBody::BlockStatus {
            context_id: 1,
            descriptors,
        }
    }

    fn clauses(r: &Reply, neg: &Negotiated) -> Vec<ClauseId> {
        check(r, neg).iter().map(|f| f.clause).collect()
    }

    /// 2048 advertised: 256 descriptors (2048 bytes, plus the 4-byte id) fit, 257 do not.
    #[test]
    fn the_descriptor_list_is_bounded_and_the_context_id_is_overhead() {
        let neg = negotiated(Some(2048));
        assert!(clauses(&reply(0, status(256)), &neg).is_empty());
        assert_eq!(clauses(&reply(0, status(257)), &neg), [id::CHUNK_SRVCTL_1]);
        let ext = ChunkBody::BlockStatusExt {
            context_id: 1,
            count: 129,
            descriptors: vec![
                Descriptor {
                    length: 1,
                    flags: 0
                };
                129
            ],
        };
        assert_eq!(clauses(&reply(0, ext), &neg), [id::CHUNK_SRVCTL_1]);
    }

    #[test]
    fn req_one_chunks_and_error_messages_fall_under_the_general_rule() {
        let neg = negotiated(Some(512));
        let req_one = command_flag::REQ_ONE;
        assert_eq!(
            clauses(&reply(req_one, status(65)), &neg),
            [id::CHUNK_MAXPL_1]
        );
        let error = ChunkBody::Error {
            chunk_type: crate::wire::consts::chunk_type::ERROR,
            error: 22,
            message: "x".repeat(513),
            offset: None,
        };
        assert_eq!(clauses(&reply(0, error), &neg), [id::CHUNK_MAXPL_1]);
    }

    #[test]
    fn nothing_is_bounded_without_an_advertised_maximum() {
        assert!(clauses(&reply(0, status(1000)), &negotiated(None)).is_empty());
    }
}
