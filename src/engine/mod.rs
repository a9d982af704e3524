//! The conformance engine: load cases, run them against a target, grade them.
pub mod case;
pub mod dead_server;
pub mod fit;
pub mod outcome;
pub mod run;
pub mod suite;
pub mod transcript;
