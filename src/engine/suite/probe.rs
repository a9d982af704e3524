//! What a target says about itself before cases run: how many clients it serves at once, and
//! which dirty bitmaps it has.

use std::time::Duration;

use crate::client::{Handshake, Target};

/// The target's `qemu:dirty-bitmap:` contexts, by LIST_META_CONTEXT (none if it lists none,
/// or cannot: bitmap cases then grade unsupported, as they would anyway).
pub(super) async fn listed_bitmaps(target: &Target, timeout: Duration) -> Vec<String> {
    let prefix = crate::wire::consts::context::QEMU_DIRTY_BITMAP_PREFIX;
    let Ok(mut hs) = Handshake::start(target, timeout, None).await else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if hs.structured_reply().await.ok() == Some(crate::wire::consts::reply_type::ACK) {
        if let Ok((listed, _)) = hs.list_meta_context(&target.export, &[prefix]).await {
            names = listed
                .into_iter()
                .filter_map(|(_, n)| n.strip_prefix(prefix).map(str::to_owned))
                .collect();
        }
    }
    let _ = hs.abort().await;
    names
}

/// How many clients a target serves at once, as far as running cases side by side goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    Many,
    OneAtATime,
}

pub(super) const ONE_AT_A_TIME: &str =
    "the target serves one connection at a time (a second client got no \
    greeting until the first left): its cases ran one by one";

/// Opens a connection, then a second while the first is open. No greeting on the second: the
/// first is closed and a third tried, which tells a server that takes clients one at a time
/// from one that served a single client and stopped (qemu-nbd without `--persistent`).
pub async fn probe_clients(target: &Target, timeout: Duration) -> Result<Clients, String> {
    let first = Handshake::start(target, timeout, None)
        .await
        .map_err(|e| format!("cannot reach the target: {e}"))?;
    match Handshake::start(target, timeout, None).await {
        Ok(second) => {
            let _ = second.abort().await;
            let _ = first.abort().await;
            return Ok(Clients::Many);
        }
        Err(_) => {
            let _ = first.abort().await;
        }
    }
    match Handshake::start(target, timeout, None).await {
        Ok(third) => {
            let _ = third.abort().await;
            Ok(Clients::OneAtATime)
        }
        Err(e) => Err(format!(
            "the target served one connection and then no more ({e}): it serves a single \
             client and exits, as qemu-nbd does without --persistent (-t); start it persistent \
             (qemu-nbd -t) and run again"
        )),
    }
}
