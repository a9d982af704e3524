//! Scripted servers that each break one rule no fault of the reference server breaks (a GO
//! without the export's size, a status reply that is simple): the proof that a check fires for
//! clauses the reference server is built never to break (design §7). [`proofs`] lists them, one
//! file per area (`handshake`, `options`, `replies`, `requests`, `limits`, `negotiation`,
//! `sizes`, `backend`, `oracles`), built from the handshakes and replies in `answers`. A peer's script is written for its case's fixture, so
//! the trial grades it with that fixture's truth, as it would a server the harness launched on
//! it; the `selftest::scripted::` trials of `cargo test` run each proof's case against its peer
//! and assert the clause is reported, graded as its level says, and `nbd-conform list
//! --coverage` counts them.

mod answers;
mod backend;
mod handshake;
pub mod hostile;
mod limits;
mod negotiation;
mod options;
mod oracles;
mod peer;
mod replies;
mod requests;
mod sizes;

use crate::clauses::ClauseId;

pub use peer::{Listening, Peer};

/// One scripted server and the clause it breaks.
pub struct Proof {
    /// The trial's name: `selftest::scripted::NAME`.
    pub name: &'static str,
    /// The one clause the peer breaks: the case must report it.
    pub clause: ClauseId,
    /// The case run against the peer (its id).
    pub case: &'static str,
    /// The script of the peer's one connection.
    pub peer: fn() -> Peer,
}

/// Every scripted proof, area by area (one file each).
pub fn proofs() -> impl Iterator<Item = &'static Proof> {
    [
        handshake::PROOFS,
        options::PROOFS,
        replies::PROOFS,
        requests::PROOFS,
        limits::PROOFS,
        negotiation::PROOFS,
        sizes::PROOFS,
        backend::PROOFS,
        oracles::PROOFS,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::case::load_shipped_cases;

    /// A proof runs a case that names the clause it proves, so that what fires is what the
    /// case claims to check.
    #[test]
    fn every_proof_runs_a_case_that_names_its_clause() {
        let cases = load_shipped_cases().expect("the cases load");
        let mut names = std::collections::BTreeSet::new();
        for proof in proofs() {
            assert!(names.insert(proof.name), "two proofs named {}", proof.name);
            let case = cases.iter().find(|c| c.id == proof.case);
            let case = case.unwrap_or_else(|| panic!("{}: no case {}", proof.name, proof.case));
            assert!(
                case.clauses.contains(&proof.clause),
                "{}: {} does not name {}",
                proof.name,
                case.id,
                proof.clause
            );
        }
    }
}
