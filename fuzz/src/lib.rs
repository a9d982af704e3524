//! Harness code behind the cargo-fuzz targets of nbd-conform (see `docs/fuzzing.md`).
//!
//! Each target in `fuzz_targets/` is a one-line wrapper around a `run` function here, so that the
//! harnesses can share their fixtures and so that the seed-capture client (`examples/capture.rs`)
//! runs exactly the client session that `client_stream` fuzzes.
//!
//! - [`decoders`]: `client_decoders`, every sans-IO decoder on arbitrary bytes, with invariants.
//! - [`client_drive`] + [`client_stream`]: the real client `Session` against a fuzzed server.
//! - [`client_sequence`]: the option-reply loop and the reply assembler against a server that
//!   repeats a sequence of messages forever: every exchange must end by a cap, never a deadline.
//! - [`server_side`]: `server_options` and `server_requests`, the reference server against a
//!   fuzzed client, on a small read-only sparse image.
//! - [`runtime`]: one current-thread tokio runtime per fuzzing process, and the fake server's
//!   socket of the client harnesses.

pub mod client_drive;
pub mod client_sequence;
pub mod client_stream;
pub mod decoders;
pub mod runtime;
pub mod server_side;
