//! Who gets a connection slot (`serve --max-connections`), and the accept loop's answers to
//! a shortage.
//!
//! Every connection holds a slot from accept to close. At the cap, a new client takes the slot
//! of the negotiating client that has been silent longest (a well-behaved client answers each
//! option reply at once, so clients that connect and never negotiate cannot keep it out, even
//! while more of them keep arriving; the spec lets a server drop a client it takes for a denial
//! of service while haggling). With every slot in transmission, the new client waits,
//! unanswered, until a connection closes. Running out of descriptors in accept also evicts the
//! negotiating client silent longest, then backs off, so the loop never spins. What happens is logged once per [`NOTICE_EVERY`] per kind, with a count
//! of the times since, not once per client.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// At most one line per kind of event in this long.
pub const NOTICE_EVERY: Duration = Duration::from_secs(10);
/// The first pause after accept fails for want of descriptors, doubled up to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// The slots of one server.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    slots: Arc<Semaphore>,
    /// Connections still negotiating, by when they were last heard from (a sequence number,
    /// earliest first), each with the bell that closes it.
    negotiating: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next_seq: AtomicU64,
    pub notices: Notices,
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    /// Its key in `negotiating`; 0 once it negotiated.
    heard: AtomicU64,
    evicted: Arc<Notify>,
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(max_connections: usize) -> Arc<Admission> {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Admission {
            max,
            slots: Arc::new(Semaphore::new(max)),
            negotiating: Mutex::new(BTreeMap::new()),
            next_seq: AtomicU64::new(1),
            notices: Notices::default(),
        })
    }

    /// A slot for a client just accepted: a free one, else that of the negotiating client
    /// silent longest, else the first to close.
    pub async fn admit(self: &Arc<Self>) -> Ticket {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.evict_oldest_negotiating() {
                    self.notices.say(Notice::Evicted, || {
                        format!(
                            "{} connections open (--max-connections): closing the negotiating \
                             client silent longest to make room",
                            self.max
                        )
                    });
                } else {
                    self.notices.say(Notice::Full, || {
                        format!(
                            "{} connections open (--max-connections), all past negotiation: \
                             new clients wait until one closes",
                            self.max
                        )
                    });
                }
                // Never closed, so acquiring fails only if it were.
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slot semaphore is never closed")
            }
        };
        let evicted = Arc::new(Notify::new());
        let heard = self.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.negotiating).insert(heard, evicted.clone());
        Ticket {
            admission: self.clone(),
            heard: AtomicU64::new(heard),
            evicted,
            _slot: slot,
        }
    }

    /// Rings the bell of the negotiating connection silent longest; false when none is.
    fn evict_oldest_negotiating(&self) -> bool {
        match lock(&self.negotiating).pop_first() {
            Some((_, bell)) => {
                // Stored if the connection is not waiting on it yet: it closes at its next await.
                bell.notify_one();
                true
            }
            None => false,
        }
    }

    /// The pause after accept failed with `e`, `failures` times in a row (1 for the first).
    pub fn after_accept_error(&self, e: &io::Error, failures: u32) -> Duration {
        if e.kind() == io::ErrorKind::ConnectionAborted {
            // The client left before we took it: nothing to report, nothing short.
            return Duration::ZERO;
        }
        let shortage = is_resource_shortage(e);
        if shortage {
            // A descriptor held by a client that never negotiates is the cheapest to free.
            self.evict_oldest_negotiating();
        }
        self.notices.say(Notice::AcceptFailed, || {
            let hint = if shortage {
                "; closing the negotiating client silent longest and backing off (lower \
                 --max-connections below the descriptor limit)"
            } else {
                ""
            };
            format!("accept failed: {e}{hint}")
        });
        backoff(failures)
    }
}

/// Exponential: 10 ms, 20 ms, … up to 1 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(LAST_BACKOFF)
}

/// Out of descriptors or kernel memory: it passes when something closes.
fn is_resource_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Ticket {
    /// Resolves when the connection's slot is taken for a newer client.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }

    /// The client sent something while negotiating: it is the last to be evicted now.
    pub fn heard_from(&self) {
        let mut negotiating = lock(&self.admission.negotiating);
        let was = self.heard.load(Ordering::Relaxed);
        // Gone already: negotiated, or evicted (its bell rung).
        if was == 0 || negotiating.remove(&was).is_none() {
            return;
        }
        let now = self.admission.next_seq.fetch_add(1, Ordering::Relaxed);
        negotiating.insert(now, self.evicted.clone());
        self.heard.store(now, Ordering::Relaxed);
    }

    /// The connection finished negotiating: its slot is no longer taken for a newer client.
    pub fn negotiated(&self) {
        let was = self.heard.swap(0, Ordering::Relaxed);
        lock(&self.admission.negotiating).remove(&was);
    }

    pub fn notices(&self) -> &Notices {
        &self.admission.notices
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.negotiated();
    }
}

/// The kinds of event logged at most once per [`NOTICE_EVERY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Notice {
    Full,
    Evicted,
    AcceptFailed,
    HandshakeTimeout,
    IdleTimeout,
}

/// When each kind was last logged and how often it happened since.
#[derive(Debug, Default)]
pub struct Notices {
    seen: Mutex<BTreeMap<Notice, (Instant, u64)>>,
}

impl Notices {
    /// Logs `line()` unless this kind was logged less than [`NOTICE_EVERY`] ago; the line says
    /// how many went unlogged in between.
    pub fn say(&self, kind: Notice, line: impl FnOnce() -> String) {
        if let Some(text) = self.next_line(kind, Instant::now(), line) {
            eprintln!("nbd-conform serve: {text}");
        }
    }

    fn next_line(
        &self,
        kind: Notice,
        now: Instant,
        line: impl FnOnce() -> String,
    ) -> Option<String> {
        let mut seen = lock(&self.seen);
        match seen.get_mut(&kind) {
            Some((last, quiet)) if now.duration_since(*last) < NOTICE_EVERY => {
                *quiet += 1;
                None
            }
            Some((last, quiet)) => {
                let since = std::mem::take(quiet);
                *last = now;
                Some(match since {
                    0 => line(),
                    n => format!("{} ({n} more like it not logged)", line()),
                })
            }
            None => {
                seen.insert(kind, (now, 0));
                Some(line())
            }
        }
    }
}

/// A poisoned lock still holds consistent data here (every critical section is one map or
/// counter operation), so its value is taken as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_logged_once_per_period_with_the_count_between() {
        let notices = Notices::default();
        let t0 = Instant::now();
        let say = |at: Duration| notices.next_line(Notice::Full, t0 + at, || "full".into());
        assert_eq!(say(Duration::ZERO).as_deref(), Some("full"));
        for ms in 1..=5 {
            assert_eq!(say(Duration::from_millis(ms)), None);
        }
        assert_eq!(
            say(NOTICE_EVERY).as_deref(),
            Some("full (5 more like it not logged)")
        );
        // Another kind has its own period.
        let other = notices.next_line(Notice::AcceptFailed, t0, || "accept".into());
        assert_eq!(other.as_deref(), Some("accept"));
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(8), Duration::from_millis(1000));
        assert_eq!(backoff(u32::MAX), LAST_BACKOFF);
    }

    /// Admits one more client on another task; the caller sees who is evicted first.
    fn admit_later(admission: &Arc<Admission>) -> tokio::task::JoinHandle<Ticket> {
        let admission = admission.clone();
        tokio::spawn(async move { admission.admit().await })
    }

    async fn told_to_go(ticket: &Ticket) {
        tokio::time::timeout(Duration::from_secs(5), ticket.evicted())
            .await
            .expect("the client silent longest is told to go");
    }

    #[tokio::test]
    async fn at_the_cap_the_negotiating_client_silent_longest_makes_room() {
        let admission = Admission::new(3);
        let first = admission.admit().await;
        let second = admission.admit().await;
        let in_transmission = admission.admit().await;
        in_transmission.negotiated();
        // `first` speaks after `second` was accepted: `second` is now silent longest.
        first.heard_from();
        let fourth = admit_later(&admission);
        told_to_go(&second).await;
        drop(second);
        let fourth = fourth.await.unwrap();
        // `first` spoke before `fourth` was accepted: it goes next, and never the client in
        // transmission.
        let fifth = admit_later(&admission);
        told_to_go(&first).await;
        drop(first);
        let _fifth = fifth.await.unwrap();
        drop((fourth, in_transmission));
    }

    #[tokio::test]
    async fn with_every_slot_in_transmission_a_new_client_waits() {
        let admission = Admission::new(1);
        let only = admission.admit().await;
        only.negotiated();
        let next = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished(), "waits while the slot is in use");
        drop(only);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("admitted once the slot is free")
            .unwrap();
    }
}
