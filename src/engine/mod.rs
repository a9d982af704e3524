//! The conformance engine: load cases, run them against a target, grade them.
//!
//! `case` is the case language (validated into types when a file loads); `run` runs one case,
//! driving the steps of `steps/` (one file per kind) over a `link` to the server and keeping
//! what it sees in a `record`; `fit` fits requests to an export; `suite` runs many cases
//! against many servers; `outcome` is what comes out, and `dead_server` tells a server that
//! died from one that broke a rule.
pub mod case;
pub mod dead_server;
pub mod fit;
mod link;
pub mod outcome;
mod record;
pub mod run;
mod steps;
pub mod suite;
pub mod transcript;
