//! nbd-conform: a conformance and interop suite for NBD block-status queries.
//!
//! Layout (ARCHITECTURE.md has the codemap):
//! - [`wire`]: the NBD wire format, sans IO (encoders that can build malformed frames, lenient
//!   decoders that report violations by clause id).
//! - [`client`]: a tokio client (TCP, Unix sockets, NBD URIs) with a deadline on every read and
//!   every exchange.
//! - [`engine`]: the case language, the steps that run a case, suites of cases over servers.
//! - [`checks`]: every clause the engine grades, as pure functions over decoded values.
//! - [`clauses`]: the clause registry (id, level, section, our paraphrase).
//! - [`fixtures`]: fixture layouts, the images built from them, and their truth.
//! - [`harness`]: the cases as libtest-mimic trials, for a server's own `cargo test`.
//! - [`embedded`]: the shipped cases and fixture layouts, built into the crate.
//! - [`launch`]: starting the servers under test (processes, containers, `--spawn` templates).
//! - [`server`]: the reference server behind `nbd-conform serve`, its faults and variants.
//! - [`report`]: the verdict, exit codes, Markdown, JSON and JUnit.
//! - [`coverage`]: which clauses the cases name, the checks report and faults or
//!   [`scripted`] peers prove.
//! - [`map`]: the pipelined walk behind `nbd-conform map`.
//! - [`size`]: the one spelling of a byte count.
//! - [`toml_error`]: a case or fixture file's TOML error as one line.
//! - [`dialect`]: standard block status or the 2016 draft.

// Module docs link to internals for whoever works on the suite (`cargo doc
// --document-private-items` resolves them); the public docs show those links as plain text.
#![allow(rustdoc::private_intra_doc_links)]

pub mod checks;
pub mod clauses;
pub mod client;
pub mod coverage;
pub mod dialect;
pub mod embedded;
pub mod engine;
pub mod fixtures;
pub mod harness;
pub mod launch;
pub mod map;
pub mod report;
pub mod scripted;
pub mod server;
pub mod size;
pub mod toml_error;
pub mod wire;

pub use dialect::Dialect;
