//! One server per (launcher, fixture, dialect, behaviour), started on first use and shared by
//! every case of the process; started again if it died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::OnceCell;

use super::{launch, LaunchError, Launched, Launcher};
use crate::fixtures::Built;
use crate::server::Behaviour;
use crate::Dialect;

type Outcome = Result<Arc<Launched>, Arc<LaunchError>>;
/// A failed launch is remembered too, so a missing server costs one attempt, not one per case.
type Slot = Arc<OnceCell<Outcome>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    launcher: Launcher,
    fixture: String,
    draft: bool,
    /// Plain for the servers every case runs on.
    behaviour: Behaviour,
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

    /// The server `launcher` starts for (fixture, dialect, behaviour), launching it if this is
    /// the first request; concurrent first requests wait for one launch. A reference server with
    /// faults or variants is one server per distinct behaviour ([`Behaviour::default`] is the
    /// plain one every case runs on).
    pub async fn get(
        &self,
        launcher: &Launcher,
        fixture_name: &str,
        built: &Built,
        dialect: Dialect,
        behaviour: &Behaviour,
    ) -> Result<Arc<Launched>, Arc<LaunchError>> {
        let key = Key {
            launcher: launcher.clone(),
            fixture: fixture_name.to_owned(),
            draft: dialect == Dialect::Draft,
            behaviour: Behaviour::new(&behaviour.faults, &behaviour.variants),
        };
        let slot = {
            let mut slots = self.slots();
            // A server that died (a case crashed it, or something killed it) is replaced, so
            // that one crash is one finding and not an error in every later case on the same
            // fixture; its death is noticed (for the report) if no case did.
            let dead = slots
                .get(&key)
                .and_then(|s| s.get())
                .and_then(|o| o.as_ref().ok())
                .filter(|l| !l.is_running())
                .cloned();
            if let Some(dead) = dead {
                let _ = dead.notice_death();
                slots.remove(&key);
            }
            slots.entry(key.clone()).or_default().clone()
        };
        let outcome = slot
            .get_or_init(|| async {
                launch(launcher, fixture_name, built, dialect, &key.behaviour)
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

    /// Notices the deaths of pooled servers that died since the last `get` of theirs (for
    /// [`super::take_deaths`]).
    pub fn notice_deaths(&self) {
        let slots: Vec<Slot> = self.slots().values().cloned().collect();
        for slot in slots {
            if let Some(Ok(launched)) = slot.get() {
                let _ = launched.notice_death();
            }
        }
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
