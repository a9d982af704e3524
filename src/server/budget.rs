//! The bytes of request payloads and READ replies the server holds in memory, all connections
//! together (`serve --max-buffered`).
//!
//! A payload (a WRITE's data, a block-status filter) waits for its bytes before it is read, so
//! a connection over the budget reads nothing more until others give bytes back. A READ reply
//! goes out in pieces: a piece of up to [`READ_PIECE`] when the budget has room, else one of
//! [`FLOOR_PIECE`], which every connection may always hold (the connection cap bounds their
//! sum), so that clients which never take their replies cannot stop everyone else's READs.

use tokio::sync::{Semaphore, SemaphorePermit};

/// The largest piece of a READ reply read from the image and written at once.
pub const READ_PIECE: usize = 1 << 20;
/// The piece a READ reply takes when the budget is spent: outside the budget.
pub const FLOOR_PIECE: usize = 64 << 10;

/// The shared count of bytes still free.
#[derive(Debug)]
pub struct Budget {
    free: Semaphore,
    total: u32,
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        let total = u32::try_from(total).unwrap_or(u32::MAX).max(1);
        Budget {
            free: Semaphore::new(total as usize),
            total,
        }
    }

    /// Waits until `bytes` fit; a payload larger than the whole budget waits for all of it.
    pub async fn hold(&self, bytes: usize) -> Held<'_> {
        let wanted = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.total);
        // The semaphore is never closed, so acquiring only fails if it were.
        Held {
            _permit: self.free.acquire_many(wanted).await.ok(),
        }
    }

    /// The size of the next piece of a reply with `left` bytes still to send, and the bytes it
    /// holds: [`READ_PIECE`] (or less) when the budget has room now, [`FLOOR_PIECE`] otherwise.
    pub fn piece(&self, left: usize) -> (usize, Held<'_>) {
        let want = left.min(READ_PIECE);
        if want <= FLOOR_PIECE {
            return (want, Held { _permit: None });
        }
        match self.free.try_acquire_many(want as u32) {
            Ok(permit) => (
                want,
                Held {
                    _permit: Some(permit),
                },
            ),
            Err(_) => (FLOOR_PIECE, Held { _permit: None }),
        }
    }

    /// Bytes free now (for tests and notices).
    pub fn available(&self) -> usize {
        self.free.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_bytes_come_back_when_dropped() {
        let budget = Budget::new(3 << 20);
        let held = budget.hold(2 << 20).await;
        assert_eq!(budget.available(), 1 << 20);
        drop(held);
        assert_eq!(budget.available(), 3 << 20);
    }

    #[tokio::test]
    async fn a_payload_over_the_budget_waits_until_it_fits() {
        let budget = Budget::new(1 << 20);
        let first = budget.hold(1 << 20).await;
        let second = budget.hold(1);
        tokio::pin!(second);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut second).await;
        assert!(waited.is_err(), "a full budget makes the next payload wait");
        drop(first);
        let _second = second.await;
        assert_eq!(budget.available(), (1 << 20) - 1);
        // Larger than the whole budget: takes all of it rather than waiting forever.
        drop(_second);
        let _all = budget.hold(5 << 20).await;
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn reply_pieces_shrink_to_the_floor_when_the_budget_is_spent() {
        let budget = Budget::new(READ_PIECE + 10);
        let (size, held) = budget.piece(32 << 20);
        assert_eq!(size, READ_PIECE);
        assert_eq!(budget.available(), 10);
        let (size, _floor) = budget.piece(32 << 20);
        assert_eq!(size, FLOOR_PIECE, "no room: the floor, outside the budget");
        assert_eq!(budget.available(), 10);
        drop(held);
        assert_eq!(budget.piece(100).0, 100, "a short tail is one piece");
    }
}
