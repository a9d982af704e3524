//! One server per (launcher, fixture, dialect, faults), started on first use and shared by
//! every case of the process; started again if it died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::OnceCell;

use super::{launch_with_faults, LaunchError, Launched, Launcher, ServerKind};
use crate::fixtures::Built;
use crate::server::Fault;
use crate::Dialect;

type Outcome = Result<Arc<Launched>, Arc<LaunchError>>;
/// A failed launch is remembered too, so a missing server costs one attempt, not one per case.
type Slot = Arc<OnceCell<Outcome>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    launcher: Launcher,
    fixture: String,
    draft: bool,
    /// Sorted, without repeats; empty for a conformant server.
    faults: Vec<Fault>,
}

/// The process-wide set of launched servers.
#[derive(Debug, Default)]
pub struct Pool {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Pool {
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::default)
    }

    /// The server for (kind, fixture, dialect), launching it if this is the first request.
    /// Concurrent first requests wait for one launch.
    pub async fn get(
        &self,
        kind: ServerKind,
        fixture_name: &str,
        built: &Built,
        dialect: Dialect,
    ) -> Result<Arc<Launched>, Arc<LaunchError>> {
        self.get_with_faults(kind, fixture_name, built, dialect, &[])
            .await
    }

    /// [`Pool::get`] for a reference server with `faults` injected: one server per distinct set
    /// of faults (an empty list is the conformant server `get` returns).
    pub async fn get_with_faults(
        &self,
        kind: ServerKind,
        fixture_name: &str,
        built: &Built,
        dialect: Dialect,
        faults: &[Fault],
    ) -> Result<Arc<Launched>, Arc<LaunchError>> {
        self.get_launched(&kind.into(), fixture_name, built, dialect, faults)
            .await
    }

    /// The server `launcher` starts for (fixture, dialect, faults), launching it if this is the
    /// first request. Concurrent first requests wait for one launch.
    pub async fn get_launched(
        &self,
        launcher: &Launcher,
        fixture_name: &str,
        built: &Built,
        dialect: Dialect,
        faults: &[Fault],
    ) -> Result<Arc<Launched>, Arc<LaunchError>> {
        let mut faults = faults.to_vec();
        faults.sort_unstable();
        faults.dedup();
        let key = Key {
            launcher: launcher.clone(),
            fixture: fixture_name.to_owned(),
            draft: dialect == Dialect::Draft,
            faults,
        };
        let slot = {
            let mut slots = self.slots();
            // A server that died (a case crashed it) is replaced, so that one crash is one
            // finding and not an error in every later case on the same fixture.
            let dead = slots
                .get(&key)
                .and_then(|s| s.get())
                .is_some_and(|o| o.as_ref().is_ok_and(|l| !l.is_running()));
            if dead {
                slots.remove(&key);
            }
            slots.entry(key.clone()).or_default().clone()
        };
        let outcome = slot
            .get_or_init(|| async {
                launch_with_faults(launcher, fixture_name, built, dialect, &key.faults)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await
            .clone();
        // shutdown_all ran while this server was starting: nobody would stop it later.
        let still_pooled = self
            .slots()
            .get(&key)
            .is_some_and(|s| Arc::ptr_eq(s, &slot));
        if !still_pooled {
            if let Ok(launched) = &outcome {
                launched.stop();
            }
            return Err(Arc::new(LaunchError::Setup(format!(
                "the server pool was shut down while {} was starting",
                launcher.name()
            ))));
        }
        outcome
    }

    /// Stops every pooled server, also those that cases still hold, and forgets them (a later
    /// `get` starts afresh). Safe to call more than once.
    pub fn shutdown_all(&self) {
        let slots: Vec<Slot> = self.slots().drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            if let Some(Ok(launched)) = slot.get() {
                launched.stop();
            }
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
