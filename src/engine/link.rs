//! The case's connection to the server, in whichever phase it is: none, option haggling, or
//! transmission. One owner, so that a step asks for the phase it needs and gets `None` (never
//! a panic) when the server closed or the case is elsewhere.

use crate::client::{Handshake, Session};
use crate::wire::Violation;

#[derive(Default)]
pub(super) enum Link {
    #[default]
    Closed,
    Haggling(Handshake),
    Transmitting(Session),
}

impl Link {
    pub fn is_closed(&self) -> bool {
        matches!(self, Link::Closed)
    }

    pub fn session(&mut self) -> Option<&mut Session> {
        match self {
            Link::Transmitting(s) => Some(s),
            _ => None,
        }
    }

    pub fn handshake(&mut self) -> Option<&mut Handshake> {
        match self {
            Link::Haggling(h) => Some(h),
            _ => None,
        }
    }

    /// The handshake, leaving the link closed; `None` (and the link as it was) outside haggling.
    pub fn take_handshake(&mut self) -> Option<Handshake> {
        match std::mem::take(self) {
            Link::Haggling(h) => Some(h),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The framing rules the connection saw broken since last asked.
    pub fn take_violations(&mut self) -> Vec<Violation> {
        match self {
            Link::Transmitting(s) => std::mem::take(&mut s.violations),
            Link::Haggling(h) => std::mem::take(&mut h.violations),
            Link::Closed => Vec::new(),
        }
    }

    /// Ends the connection politely: NBD_CMD_DISC in transmission, NBD_OPT_ABORT in haggling.
    pub async fn close(&mut self) {
        match std::mem::take(self) {
            Link::Transmitting(s) => s.disconnect().await,
            Link::Haggling(h) => {
                let _ = h.abort().await;
            }
            Link::Closed => {}
        }
    }
}
