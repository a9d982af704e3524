//! `client_stream`: the real client [`Session`](nbd_conform::client::Session) against a fuzzed
//! server byte stream.
//!
//! Input: byte 0 is the [`Plan`] selector (extended headers, draft dialect, allocation depth,
//! REQ_ONE); the rest is everything the "server" sends, greeting included. The fake server
//! accepts the client's connection, writes those bytes, closes its sending side and reads (and
//! drops) whatever the client sends until the client hangs up. The client runs
//! [`client_drive::drive`] with a 50 ms timeout per message.
//!
//! The client only connects through a [`Target`] (TCP or a Unix socket path): there is no public
//! way to hand it an in-memory stream, so the fake server listens on a Unix socket in a private
//! temporary directory, created once per process and removed at exit.
//!
//! Must hold: no panic, the whole session ends within [`ITERATION_BOUND`](crate::runtime), and
//! what `map` emitted is contiguous ([`client_drive::check_entries`]). Memory blow-ups are left
//! to libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb`.

use std::time::Duration;

use nbd_conform::client::{Endpoint, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::client_drive::{self, Plan};
use crate::runtime::{rig, run_bounded};

/// Per-message client timeout. The fake server never stalls (it closes once its bytes are
/// out), so this only bounds the odd case where the client waits on something else.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(50);

pub fn run(data: &[u8]) {
    if let Some(outcome) = replay(data) {
        client_drive::check_entries(&outcome);
    }
}

/// Plays `data` (selector byte, then the server's bytes) to the client session; `None` for an
/// empty input. Also used by `examples/capture.rs replay` to check that a seed gets through.
pub fn replay(data: &[u8]) -> Option<client_drive::Outcome> {
    let (&selector, server_bytes) = data.split_first()?;
    let plan = Plan::from_selector(selector);
    let rig = rig();
    let target = Target {
        endpoint: Endpoint::Unix(rig.socket.clone()),
        export: String::new(),
    };
    Some(run_bounded("client_stream", async {
        let server = fake_server(&rig.listener, server_bytes);
        let client = client_drive::drive(&target, &plan, CLIENT_TIMEOUT);
        tokio::join!(server, client).1
    }))
}

/// Accepts one connection, sends `bytes`, closes the sending side, drains until the client
/// leaves.
async fn fake_server(listener: &UnixListener, bytes: &[u8]) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let (mut rd, mut wr) = stream.into_split();
    let send = async {
        // The client may hang up first (EPIPE): that is its right.
        let _ = wr.write_all(bytes).await;
        let _ = wr.shutdown().await;
    };
    let drain = async {
        let mut sink = [0u8; 4096];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::join!(send, drain);
}
