//! The case's connection to the server, in whichever phase it is: none, option haggling,
//! transmission, or a transmission the server ended. One owner, so that a step asks for the phase it needs and gets `None` (never
//! a panic) when the server closed or the case is elsewhere.

use crate::client::{Handshake, Session};
use crate::wire::Violation;

#[derive(Default)]
pub(super) enum Link {
    #[default]
    Closed,
    Haggling(Handshake),
    Transmitting(Session),
    /// A connection in transmission that the server closed or broke (the findings say how):
    /// a later step that needs it says so, not that nothing was negotiated.
    Lost,
}

impl Link {
    pub fn is_closed(&self) -> bool {
        matches!(self, Link::Closed | Link::Lost)
    }

    /// Forgets the connection: `Lost` if it was in transmission, else `Closed`.
    pub fn drop(&mut self) {
        *self = match self {
            Link::Transmitting(_) | Link::Lost => Link::Lost,
            Link::Closed | Link::Haggling(_) => Link::Closed,
        };
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
            Link::Closed | Link::Lost => Vec::new(),
        }
    }

    /// Ends the connection politely: NBD_CMD_DISC in transmission, NBD_OPT_ABORT in haggling.
    pub async fn close(&mut self) {
        match std::mem::take(self) {
            Link::Transmitting(s) => s.disconnect().await,
            Link::Haggling(h) => {
                let _ = h.abort().await;
            }
            Link::Closed | Link::Lost => {}
        }
    }
}
