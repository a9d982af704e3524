//! `draft-read-cookies-crossed`: in the draft a status reply is a simple reply header, like a
//! READ's, so only the cookie tells the client which it is reading (P and descriptors, or the
//! READ's data). This fault holds a READ's reply back while a GET_LBA_STATUS is in flight right
//! behind it, then sends both with each other's cookie, in the order they were asked.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufStream};

use super::{Fault, Faults};
use crate::wire::consts::draft;
use crate::wire::request::{HeaderForm, Request};

/// How long a READ's reply waits for a GET_LBA_STATUS behind it: a client that pipelines has
/// sent it already; one that waits for the READ's reply gets it this much later.
const PIPELINED_WAIT: Duration = Duration::from_millis(50);

/// Where the cookie sits in a simple reply: after the magic and the error.
const SIMPLE_COOKIE: std::ops::Range<usize> = 8..16;

impl Faults {
    /// Whether a READ's reply is held for the GET_LBA_STATUS behind it, to cross cookies.
    pub fn crosses_read_and_status(&self) -> bool {
        self.has(Fault::DraftReadCookiesCrossed)
    }
}

/// Whether the client has already sent a GET_LBA_STATUS behind the request just read.
pub async fn status_waits_behind<S>(io: &mut BufStream<S>, form: HeaderForm) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = form.header_len();
    match tokio::time::timeout(PIPELINED_WAIT, io.fill_buf()).await {
        Ok(Ok(buffered)) if buffered.len() >= len => Request::decode(form, &buffered[..len])
            .is_some_and(|r| r.command == draft::CMD_GET_LBA_STATUS),
        _ => false,
    }
}

/// Swaps the cookies of two encoded simple replies (both start with a simple reply header).
pub fn cross_cookies(read_reply: &mut [u8], status_reply: &mut [u8]) {
    let (Some(a), Some(b)) = (
        read_reply.get_mut(SIMPLE_COOKIE),
        status_reply.get_mut(SIMPLE_COOKIE),
    ) else {
        return;
    };
    a.swap_with_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_swaps_only_the_cookies() {
        let mut read = [[1u8; 8], [2; 8], [3; 8]].concat();
        let mut status = [[4u8; 8], [5; 8], [6; 8]].concat();
        cross_cookies(&mut read, &mut status);
        assert_eq!(read, [[1u8; 8], [5; 8], [3; 8]].concat());
        assert_eq!(status, [[4u8; 8], [2; 8], [6; 8]].concat());
    }
}
