//! The reference server, in-process on the launcher runtime.
//!
//! Its dirty bitmaps record writes made since it started, so a fixture's bitmap writes are
//! replayed after binding: the bytes of each written range are read from the raw image and
//! written back unchanged through a client session. That dirties the granules without changing
//! the content. The export is writable only for fixtures that need it, and then it is a private
//! copy of the raw image (same holes, same data), so that nothing a client writes can reach the
//! fixture cache.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::copy::copy_sparse;
use super::guard::{Guard, Running, Watchdog};
use super::scratch::{self, SOCKET};
use super::{LaunchError, Launched, Plan, ServerKind, EXPORT_NAME};
use crate::client::Endpoint;
use crate::client::{Session, SessionOptions, Target};
use crate::server::{Behaviour, Listen, ServeError, ServeOptions, Server};
use crate::Dialect;

/// Bytes per replayed WRITE (far below every payload cap).
const CHUNK: u64 = 1024 * 1024;
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

/// Must run on the launcher runtime: the accept loop is spawned onto the current runtime.
/// Neither faults nor variants touch the WRITE replies the replay below depends on (the
/// fixtures' writes are whole 4 KiB blocks, which even a min-block variant accepts).
pub(super) async fn launch(
    plan: &Plan,
    dialect: Dialect,
    behaviour: Behaviour,
) -> Result<Launched, LaunchError> {
    let scratch = scratch::create(ServerKind::Reference.name()).map_err(LaunchError::scratch)?;
    let socket = scratch.path().join(SOCKET);
    // A plan for a case that writes already serves a private copy (`super::launch_writable`).
    let writable = plan.writable || !plan.writes.is_empty();
    let image = if writable && !plan.writable {
        let copy = scratch.path().join("raw.img");
        copy_sparse(&plan.raw, &copy).map_err(|e| {
            LaunchError::Fixture(format!(
                "{}: cannot copy {}: {e}",
                plan.fixture,
                plan.raw.display()
            ))
        })?;
        copy
    } else {
        plan.raw.clone()
    };
    let server = Server::bind(ServeOptions {
        image,
        listen: Listen::Unix(socket.clone()),
        export_name: EXPORT_NAME.to_owned(),
        dialect,
        bitmaps: plan.bitmaps.clone(),
        writable,
        faults: behaviour.faults,
        variants: behaviour.variants,
        block_sizes: crate::server::negotiate::BLOCK_SIZES,
        failing_status: false,
        client_limits: crate::server::ClientLimits::for_the_suite(),
    })
    .await
    .map_err(|e| match e {
        ServeError::Image { .. } => LaunchError::Fixture(format!("{}: {e}", plan.fixture)),
        e => LaunchError::Setup(format!("the reference server cannot start: {e}")),
    })?;
    let watchdog = Watchdog::start(scratch.path()).map_err(LaunchError::watchdog)?;
    let task = tokio::spawn(server.run());
    let launched = Launched::new(
        ServerKind::Reference.name().to_owned(),
        ServerKind::Reference
            .installed_version()
            .unwrap_or_default(),
        plan,
        dialect,
        Endpoint::Unix(socket),
        Guard::new(Running::InProcess(task.abort_handle()), watchdog, scratch),
    );
    // On failure `launched` is dropped here, which stops the server again.
    replay_writes(&launched.target, dialect, &plan.raw, &plan.writes)
        .await
        .map_err(|e| e.for_fixture(&plan.fixture))?;
    Ok(launched)
}

/// Why a replay failed: the fixture's image, or the conversation with our own server.
enum ReplayError {
    Image(String),
    Server(String),
}

impl ReplayError {
    fn for_fixture(self, fixture: &str) -> LaunchError {
        match self {
            ReplayError::Image(why) => LaunchError::Fixture(format!("{fixture}: {why}")),
            ReplayError::Server(why) => {
                LaunchError::Setup(format!("replaying {fixture}'s bitmap writes: {why}"))
            }
        }
    }
}

async fn replay_writes(
    target: &Target,
    dialect: Dialect,
    raw: &Path,
    writes: &[(u64, u64)],
) -> Result<(), ReplayError> {
    if writes.is_empty() {
        return Ok(());
    }
    let image = File::open(raw)
        .map_err(|e| ReplayError::Image(format!("cannot open {}: {e}", raw.display())))?;
    let options = SessionOptions {
        timeout: REPLAY_TIMEOUT,
        structured: false,
        extended: false,
        contexts: Vec::new(),
        dialect,
    };
    let mut session = Session::open(target, &options)
        .await
        .map_err(|e| ReplayError::Server(e.to_string()))?;
    // A server that advertises a minimum block refuses smaller writes: replay whole blocks
    // around each write (the raw image already holds their final bytes). The bitmaps then see
    // the blocks, which at most makes them less precise than the fixture's truth.
    let block = session.negotiated.minimum_block().max(1);
    let size = session.negotiated.size;
    for &(offset, length) in writes {
        let end = offset.checked_add(length).ok_or_else(|| {
            ReplayError::Image(format!("bitmap write {offset}+{length} overflows"))
        })?;
        let end = end.div_ceil(block).saturating_mul(block).min(size);
        let mut at = offset / block * block;
        while at < end {
            let n = (end - at).min(CHUNK);
            let mut bytes = vec![0u8; n as usize];
            image.read_exact_at(&mut bytes, at).map_err(|e| {
                ReplayError::Image(format!(
                    "cannot read {n} bytes at {at} of {}: {e}",
                    raw.display()
                ))
            })?;
            let reply = session
                .write(at, &bytes)
                .await
                .map_err(|e| ReplayError::Server(e.to_string()))?;
            if let Some(error) = reply.error() {
                return Err(ReplayError::Server(format!(
                    "WRITE of {n} bytes at {at} failed with error {error}"
                )));
            }
            at += n;
        }
    }
    session.disconnect().await;
    Ok(())
}
