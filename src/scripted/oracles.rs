//! Proofs for the oracles that compare maps with a fixture's truth (allocation depth, dirty
//! maps), where the reference server has no fault for them.

use super::answers::*;
use super::{Peer, Proof};
use crate::clauses::id;
use crate::wire::consts::{option, transmission_flag as tf};

pub(super) static PROOFS: &[Proof] = &[
    Proof {
        name: "second-walk-answers-otherwise",
        clause: id::BS_STABLE_1,
        case: "bs.stable.base-many-extents",
        peer: || {
            // The first block status (the map step's walk of the 2 MiB export) says data, every
            // later one a hole: both legal alone, not together on an unchanged export.
            let asked = std::sync::atomic::AtomicUsize::new(0);
            Peer::new().negotiated(2 << 20).answer_all(move |r| {
                let status = if r.command == crate::wire::consts::command::BLOCK_STATUS
                    && asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0
                {
                    1
                } else {
                    0
                };
                answer_or_read(r, status, 0)
            })
        },
    },
    Proof {
        name: "data-called-zero",
        clause: id::ALLOC_ZERO_1,
        case: "oracle.all-data.map",
        peer: || {
            // all-data-1m is data throughout: called ZERO, and read back as 0xff bytes.
            Peer::new()
                .negotiated(1 << 20)
                .answer_all(|r| answer_or_read(r, 0x2, 0xff))
        },
    },
    Proof {
        name: "dirty-bitmap-status-beyond-bit-0",
        clause: id::QEMU_DB_1,
        case: "oracle.mixed.dirty-bm0",
        peer: || {
            Peer::new()
                .greet()
                .option(option::STRUCTURED_REPLY)
                .ack()
                .option(option::SET_META_CONTEXT)
                .meta_context(1, "qemu:dirty-bitmap:bm0")
                .ack()
                .option(option::GO)
                .export_info(PLAIN_SIZE, tf::HAS_FLAGS)
                .ack()
                .answer_all(|r| answer_or_read(r, 0x3, 0))
        },
    },
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
