//! Scripted servers that each break one rule no fault of the reference server breaks (a GO
//! without the export's size, a status reply that is simple): the proof that a check fires for
//! clauses the reference server is built never to break (design §7). [`PROOFS`] is the one list
//! of them; the `selftest::scripted::` trials of `cargo test` run each proof's case against its
//! peer and assert the clause is reported, graded as its level says, and `nbd-conform list
//! --coverage` counts them.

mod peer;

use std::time::Duration;

use bytes::BytesMut;

use crate::clauses::{id, ClauseId};
use crate::wire::reply::ReplyHeader;

pub use peer::{Listening, Peer};

/// One scripted server and the clause it breaks.
pub struct Proof {
    /// The trial's name: `selftest::scripted::NAME`.
    pub name: &'static str,
    /// The one clause the peer breaks: the case must report it.
    pub clause: ClauseId,
    /// The case run against the peer (its id).
    pub case: &'static str,
    /// The script of the peer's one connection.
    pub peer: fn() -> Peer,
}

/// Every scripted proof.
pub static PROOFS: &[Proof] = &[
    Proof {
        name: "go-without-the-export-size",
        clause: id::GO_ACK_1,
        case: "bs.req-one.single-descriptor",
        peer: go_without_the_export_size,
    },
    Proof {
        name: "block-status-in-a-simple-reply",
        clause: id::BS_NEG_3,
        case: "bs.req-one.single-descriptor",
        peer: block_status_in_a_simple_reply,
    },
];

/// GO acknowledged without NBD_INFO_EXPORT: the client cannot know the size.
fn go_without_the_export_size() -> Peer {
    Peer::new().haggled().ack()
}

/// A successful block status answered with a simple reply (it must be structured).
fn block_status_in_a_simple_reply() -> Peer {
    Peer::new()
        .negotiated(4 << 20)
        .request()
        .reply(|r| {
            let mut out = BytesMut::new();
            ReplyHeader::Simple {
                error: 0,
                cookie: r.cookie,
            }
            .encode(&mut out);
            out.to_vec()
        })
        .pause(Duration::from_secs(5))
}
