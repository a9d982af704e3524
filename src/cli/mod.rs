//! What the `nbd-conform` binary adds around the library for the person who runs it: where the
//! reports go (`outputs`), the progress line on a terminal (`progress`), a target's failures
//! and errors told once each (`failures`), and the text that closes `run --help` (`help`).
//! Modules of the binary only; the library prints nothing.

pub mod failures;
pub mod help;
pub mod outputs;
pub mod progress;
