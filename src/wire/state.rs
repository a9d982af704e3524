//! Named states: the one place that turns a context's raw status value into words.
//!
//! Reports, snapshots and `map` all print these names, so that today's flags and the draft's
//! enumerated statuses (whose numbers collide) read the same way.

use super::consts::{context, draft};

/// The name of `status` in the context called `context_name`.
pub fn state_name(context_name: &str, status: u64) -> String {
    if context_name == context::BASE_ALLOCATION {
        let base = match status & 0x3 {
            0 => "data",
            1 => "hole",
            2 => "zero",
            _ => "hole,zero",
        };
        return with_reserved(base, status & !0x3);
    }
    if context_name.starts_with(context::QEMU_DIRTY_BITMAP_PREFIX) {
        let base = if status & context::STATE_DIRTY != 0 {
            "dirty"
        } else {
            "clean"
        };
        return with_reserved(base, status & !context::STATE_DIRTY);
    }
    if context_name == context::QEMU_ALLOCATION_DEPTH {
        return match status {
            0 => "absent".into(),
            1 => "local".into(),
            n => format!("backing depth {n}"),
        };
    }
    if context_name == draft::CONTEXT_ALLOCATED {
        return match status as u16 {
            draft::STATE_ALLOCATED if status <= 0xffff => "allocated".into(),
            draft::STATE_ZEROED if status <= 0xffff => "zeroed".into(),
            draft::STATE_DEALLOCATED if status <= 0xffff => "deallocated".into(),
            _ => format!("undefined {status:#x}"),
        };
    }
    if context_name == draft::CONTEXT_DIRTY {
        return match status as u16 {
            draft::STATE_DIRTY if status <= 0xffff => "dirty".into(),
            draft::STATE_CLEAN if status <= 0xffff => "clean".into(),
            draft::STATE_DIRTY_DEALLOCATED if status <= 0xffff => "dirty,deallocated".into(),
            _ => format!("undefined {status:#x}"),
        };
    }
    format!("{status:#x}")
}

fn with_reserved(base: &str, reserved: u64) -> String {
    if reserved == 0 {
        base.to_owned()
    } else {
        format!("{base}+reserved {reserved:#x}")
    }
}
