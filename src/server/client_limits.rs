//! What clients may hold of the server, alone and together: connections, time in the
//! handshake, time idle, and bytes of payloads and replies held in memory. The one place of
//! these limits and their defaults (`serve --help` shows them, and a trial in
//! tests/conformance/serve_attacks.rs holds its defaults to these). The in-process reference
//! server the suite runs takes [`ClientLimits::for_the_suite`] instead: its only clients are
//! the harness's own cases, as many side by side as `--parallel` says, each waiting as long as
//! `--timeout` says, and a limit there would fail the reference for the harness's settings.
//!
//! What the spec allows: a server may drop a client that has not finished negotiating when it
//! believes the client's behaviour is a denial of service (proto.md, "Terminating the session":
//! a server "MAY initiate a hard disconnect"), so the handshake deadline and the eviction of a
//! negotiating client at the connection cap are on by default. In transmission a server "MUST
//! NOT initiate any form of disconnect" save on the client's violation or on shutdown
//! ("Terminating the transmission phase"): the idle deadline breaks that, so it is off unless
//! asked for. The memory bounds change no byte on the wire.

use std::time::Duration;

/// The limits one server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections open at once. At the cap, a new client takes the place of the negotiating
    /// client silent longest; with none negotiating it waits until a connection closes.
    pub max_connections: usize,
    /// From accept to the end of negotiation (GO or EXPORT_NAME); a client still haggling then
    /// is closed.
    pub handshake_timeout: Duration,
    /// In transmission: the longest wait for the next request, for a request's payload to
    /// arrive, or for the client to take a reply. `None`: wait forever, as the spec asks.
    pub idle_timeout: Option<Duration>,
    /// Bytes of request payloads and READ reply data held in memory, all connections together.
    /// A payload waits (its connection reads nothing more) until its bytes fit.
    pub max_buffered: usize,
}

impl ClientLimits {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_BUFFERED: usize = 128 << 20;
}

impl ClientLimits {
    /// The reference server under the suite: no cap that `--parallel` or `--timeout` could
    /// reach (connections are bounded by the harness's own descriptors), the byte budget kept.
    pub fn for_the_suite() -> ClientLimits {
        ClientLimits {
            max_connections: usize::MAX,
            handshake_timeout: Duration::from_secs(24 * 3600),
            ..ClientLimits::default()
        }
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: None,
            max_buffered: Self::DEFAULT_MAX_BUFFERED,
        }
    }
}
