//! nbd-conform: a conformance and interop suite for NBD block-status queries.
//!
//! Layout:
//! - [`wire`]: the NBD wire format, sans IO (encoders that can build malformed frames, lenient
//!   decoders that report violations by clause id).
//! - [`client`]: a tokio client session (TCP, Unix sockets, NBD URIs) with timeouts on every read.
//! - [`server`]: the reference server behind `nbd-conform serve`, in both dialects.
//! - [`map`]: the pipelined walk behind `nbd-conform map`.
//! - [`dialect`]: standard block status or the 2016 draft.

pub mod checks;
pub mod clauses;
pub mod client;
pub mod dialect;
pub mod engine;
pub mod fixtures;
pub mod launch;
pub mod map;
pub mod report;
pub mod server;
pub mod size;
pub mod wire;

pub use dialect::Dialect;
