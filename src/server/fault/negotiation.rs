//! What faults change in negotiation: only what a clause they break lives in (the minimum
//! block size of `unaligned-to-min-block`, the ids of `context-id-reused`, the bit 12 that
//! `status-payload-unadvertised` hides, the commands the write faults need advertised, the
//! draft's bit 7 that `draft-flag-unadvertised` hides).

use super::{Fault, Faults};
use crate::wire::consts::{draft, transmission_flag as tf};
use crate::wire::handshake::BlockSizes;

/// The minimum block `unaligned-to-min-block` advertises (the clean server advertises 1), so
/// that its boundaries, moved 512 bytes off the grid, break BS-REP-MINBLK-1.
const ADVERTISED_MINIMUM: u32 = 4096;

impl Faults {
    /// The block sizes to advertise, where the clean server would advertise `clean`.
    pub fn block_sizes(&self, clean: BlockSizes) -> BlockSizes {
        if !self.has(Fault::UnalignedToMinBlock) {
            return clean;
        }
        BlockSizes {
            minimum: ADVERTISED_MINIMUM,
            preferred: clean.preferred.max(ADVERTISED_MINIMUM),
            ..clean
        }
    }

    /// The transmission flags to advertise, where the clean server would advertise `clean`.
    /// `status-payload-unadvertised` hides bit 12 and goes on honouring the payload form, so
    /// that a payload sent without the bit succeeds instead of earning EINVAL; a fault about
    /// FAST_ZERO or CACHE is met only where the command may be sent;
    /// `draft-flag-unadvertised` hides the draft's bit 7 and goes on answering GET_LBA_STATUS.
    pub fn transmission_flags(&self, clean: u16) -> u16 {
        let mut flags = clean;
        if self.has(Fault::StatusPayloadUnadvertised) {
            flags &= !tf::BLOCK_STATUS_PAYLOAD;
        }
        let fast_zero = [
            Fault::FastZeroEinval,
            Fault::FastZeroRefusalZeroes,
            Fault::ZeroesEnotsup,
        ];
        if fast_zero.into_iter().any(|f| self.has(f)) {
            flags |= tf::SEND_FAST_ZERO;
        }
        if self.has(Fault::CacheScribbles) {
            flags |= tf::SEND_CACHE;
        }
        if self.has(Fault::DraftFlagUnadvertised) {
            flags &= !draft::SEND_GET_LBA_STATUS;
        }
        flags
    }

    /// The ids to show in SET_META_CONTEXT replies for the selected `ids`.
    pub fn meta_context_ids(&self, ids: &[u32]) -> Vec<u32> {
        match ids.first() {
            Some(&first) if self.has(Fault::ContextIdReused) => vec![first; ids.len()],
            _ => ids.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_change_nothing() {
        let none = Faults::default();
        assert_eq!(none.meta_context_ids(&[0, 1]), vec![0, 1]);
        let clean = BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: 1 << 25,
        };
        assert_eq!(none.block_sizes(clean), clean);
        assert_eq!(none.transmission_flags(0x1fff), 0x1fff);
        assert_eq!(none.transmission_flags(0x4d), 0x4d);
    }

    #[test]
    fn reused_ids_and_minimum_block() {
        let f = Faults::new([Fault::ContextIdReused, Fault::UnalignedToMinBlock]);
        assert_eq!(f.meta_context_ids(&[0, 1, 2]), vec![0, 0, 0]);
        let b = f.block_sizes(BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: 1 << 25,
        });
        assert_eq!((b.minimum, b.preferred), (4096, 4096));
        let hidden = Faults::new([Fault::StatusPayloadUnadvertised]);
        assert_eq!(hidden.transmission_flags(0x1fff), 0x0fff);
        let draft = Faults::new([Fault::DraftFlagUnadvertised]);
        assert_eq!(draft.transmission_flags(0x1fff), 0x1f7f);
    }
}
