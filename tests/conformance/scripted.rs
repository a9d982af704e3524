//! Cases run by the engine against scripted servers (`peer`): a server that breaks a rule no
//! fault of the reference server breaks gets the case graded under that rule, not `error`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use libtest_mimic::{Failed, Trial};

use crate::peer::Peer;
use nbd_conform::engine::case::{cases_dir, load_cases};
use nbd_conform::engine::outcome::Grade;
use nbd_conform::engine::run::{run_case, Settings, TargetSpec};
use nbd_conform::wire::reply::ReplyHeader;
use nbd_conform::Dialect;

/// Runs the case `id` against `peer`; returns its grade and the clauses of its findings.
fn run_against(id: &str, peer: Peer) -> Result<(Grade, Vec<&'static str>), Failed> {
    let cases = load_cases(&cases_dir()).map_err(|e| e.to_string())?;
    let case = cases
        .iter()
        .find(|c| c.id == id)
        .ok_or(format!("no case {id}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (_dir, target, server) = peer.listen();
        let spec = TargetSpec {
            target,
            dialect: Dialect::Standard,
            truth: None::<Arc<_>>,
            bitmaps: Vec::new(),
        };
        let settings = Settings {
            timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(2),
            ..Settings::default()
        };
        let (result, _) = run_case(case, &spec, settings).await;
        server.abort();
        let clauses = result.findings.iter().map(|f| f.clause.as_str()).collect();
        Ok((result.grade, clauses))
    })
}

fn expect_fail(id: &str, peer: Peer, clause: &str) -> Result<(), Failed> {
    let (grade, clauses) = run_against(id, peer)?;
    if grade != Grade::Fail || !clauses.contains(&clause) {
        return Err(
            format!("{id}: expected a fail under {clause}; got {grade} with {clauses:?}").into(),
        );
    }
    Ok(())
}

/// GO acknowledged without NBD_INFO_EXPORT: the client cannot know the size (GO-ACK-1).
fn go_without_the_export_size() -> Result<(), Failed> {
    let peer = Peer::new().haggled().ack();
    expect_fail("bs.req-one.single-descriptor", peer, "GO-ACK-1")
}

/// A successful block status answered with a simple reply (BS-NEG-3: it must be structured).
fn block_status_in_a_simple_reply() -> Result<(), Failed> {
    let peer = Peer::new()
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
        .pause(Duration::from_secs(5));
    expect_fail("bs.req-one.single-descriptor", peer, "BS-NEG-3")
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::scripted::go-without-the-export-size",
            go_without_the_export_size,
        ),
        Trial::test(
            "selftest::scripted::block-status-in-a-simple-reply",
            block_status_in_a_simple_reply,
        ),
    ]
}
