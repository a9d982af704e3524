//! Proofs for the oracles that compare maps with a fixture's truth (allocation depth, dirty
//! maps), where the reference server has no fault for them.

use super::answers::*;
use super::Proof;
use crate::clauses::id;

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "allocation-depth-calls-backing-local",
        clause: id::QEMU_AD_1,
        case: "oracle.backing-chain.allocation-depth",
        peer: backing_called_local,
    },
    Proof {
        name: "dirty-bitmap-calls-everything-dirty",
        clause: id::QEMU_DB_PREC_1,
        case: "oracle.dirty-fine.dirty-bm512",
        peer: everything_dirty,
    },
];
