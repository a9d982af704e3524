//! Every number the NBD protocol puts on the wire, defined once.
//!
//! Values come from `doc/proto.md` (master and the `extension-ext-header` branch) as catalogued
//! in the project's clause catalogue, §1. The 2016 draft's numbers live in [`draft`] and are
//! deliberately kept apart: several of them collide with today's meanings (see `draft`).

/// In a module of constants: `NAMES`, every constant with its name in definition order (the
/// one table that both `name` and `by_name` read, so a name and its value cannot drift apart),
/// and `by_name`, the value a case file or a command line spells.
macro_rules! names {
    ($ty:ty: $($name:ident),* $(,)?) => {
        /// Every constant of this module with its name, in definition order.
        pub const NAMES: &[(&str, $ty)] = &[$((stringify!($name), $name)),*];

        /// The constant spelled `name`.
        pub fn by_name(name: &str) -> Option<$ty> {
            NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }

        /// The name of `value`, if it has one.
        pub fn name_of(value: $ty) -> Option<&'static str> {
            NAMES.iter().find(|(_, v)| *v == value).map(|(n, _)| *n)
        }
    };
}

/// Magic numbers and fixed header sizes.
pub mod magic {
    /// "NBDMAGIC": the first eight bytes a server sends.
    pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
    /// "IHAVEOPT": second greeting word of newstyle servers, and the prefix of every option.
    pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
    /// Prefix of every fixed-newstyle option reply.
    pub const OPTION_REPLY: u64 = 0x0003_e889_0455_65a9;
    /// Compact (28-byte) request header.
    pub const REQUEST: u32 = 0x2560_9513;
    /// Extended (32-byte) request header, once extended headers are negotiated.
    pub const EXTENDED_REQUEST: u32 = 0x21e4_1c71;
    /// Simple (16-byte) reply header; also the draft GET_LBA_STATUS reply header.
    pub const SIMPLE_REPLY: u32 = 0x6744_6698;
    /// Structured (20-byte) reply chunk header.
    pub const STRUCTURED_REPLY: u32 = 0x668e_33ef;
    /// Extended (32-byte) reply chunk header.
    pub const EXTENDED_REPLY: u32 = 0x6e8a_278c;

    pub const GREETING_LEN: usize = 18;
    pub const OPTION_HEADER_LEN: usize = 16;
    pub const OPTION_REPLY_HEADER_LEN: usize = 20;
    pub const COMPACT_REQUEST_LEN: usize = 28;
    pub const EXTENDED_REQUEST_LEN: usize = 32;
    pub const SIMPLE_REPLY_LEN: usize = 16;
    pub const STRUCTURED_REPLY_LEN: usize = 20;
    pub const EXTENDED_REPLY_LEN: usize = 32;
    /// Zero padding after an `NBD_OPT_EXPORT_NAME` success unless NO_ZEROES was agreed.
    pub const EXPORT_NAME_PADDING: usize = 124;
    /// IANA port for NBD (URI-PORT-1).
    pub const DEFAULT_PORT: u16 = 10809;
}

/// Handshake flags (server → client, 16 bits).
pub mod handshake_flag {
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (client → server, 32 bits).
pub mod client_flag {
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    pub const NO_ZEROES: u32 = 1 << 1;
}

/// Transmission flags (16 bits, from GO/INFO/EXPORT_NAME).
pub mod transmission_flag {
    pub const HAS_FLAGS: u16 = 1 << 0;
    pub const READ_ONLY: u16 = 1 << 1;
    pub const SEND_FLUSH: u16 = 1 << 2;
    pub const SEND_FUA: u16 = 1 << 3;
    pub const ROTATIONAL: u16 = 1 << 4;
    pub const SEND_TRIM: u16 = 1 << 5;
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// Today: "don't fragment" for structured READ. The 2016 draft used this bit for
    /// GET_LBA_STATUS (see [`super::draft::SEND_GET_LBA_STATUS`]).
    pub const SEND_DF: u16 = 1 << 7;
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    pub const SEND_RESIZE: u16 = 1 << 9;
    pub const SEND_CACHE: u16 = 1 << 10;
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
    pub const BLOCK_STATUS_PAYLOAD: u16 = 1 << 12;

    names!(u16: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, ROTATIONAL, SEND_TRIM,
        SEND_WRITE_ZEROES, SEND_DF, CAN_MULTI_CONN, SEND_RESIZE, SEND_CACHE, SEND_FAST_ZERO,
        BLOCK_STATUS_PAYLOAD);
}

/// Option types (`NBD_OPT_*`).
pub mod option {
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const INFO: u32 = 6;
    pub const GO: u32 = 7;
    pub const STRUCTURED_REPLY: u32 = 8;
    pub const LIST_META_CONTEXT: u32 = 9;
    pub const SET_META_CONTEXT: u32 = 10;
    pub const EXTENDED_HEADERS: u32 = 11;

    names!(u32: EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED_REPLY,
        LIST_META_CONTEXT, SET_META_CONTEXT, EXTENDED_HEADERS);

    pub fn name(option: u32) -> &'static str {
        name_of(option).unwrap_or("unknown option")
    }
}

/// Option reply types (`NBD_REP_*`); errors have bit 31 set.
pub mod reply_type {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const META_CONTEXT: u32 = 4;
    pub const ERROR_BIT: u32 = 1 << 31;
    pub const ERR_UNSUP: u32 = ERROR_BIT | 1;
    pub const ERR_POLICY: u32 = ERROR_BIT | 2;
    pub const ERR_INVALID: u32 = ERROR_BIT | 3;
    pub const ERR_PLATFORM: u32 = ERROR_BIT | 4;
    pub const ERR_TLS_REQD: u32 = ERROR_BIT | 5;
    pub const ERR_UNKNOWN: u32 = ERROR_BIT | 6;
    pub const ERR_SHUTDOWN: u32 = ERROR_BIT | 7;
    pub const ERR_BLOCK_SIZE_REQD: u32 = ERROR_BIT | 8;
    pub const ERR_TOO_BIG: u32 = ERROR_BIT | 9;
    pub const ERR_EXT_HEADER_REQD: u32 = ERROR_BIT | 10;

    names!(u32: ACK, SERVER, INFO, META_CONTEXT, ERR_UNSUP, ERR_POLICY, ERR_INVALID,
        ERR_PLATFORM, ERR_TLS_REQD, ERR_UNKNOWN, ERR_SHUTDOWN, ERR_BLOCK_SIZE_REQD, ERR_TOO_BIG,
        ERR_EXT_HEADER_REQD);

    pub fn name(reply: u32) -> &'static str {
        match name_of(reply) {
            Some(name) => name,
            None if reply & ERROR_BIT != 0 => "unknown error",
            None => "unknown reply",
        }
    }
}

/// Info types inside `NBD_REP_INFO` (16 bits).
pub mod info {
    pub const EXPORT: u16 = 0;
    pub const NAME: u16 = 1;
    pub const DESCRIPTION: u16 = 2;
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types (`NBD_CMD_*`, 16 bits).
pub mod command {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const DISC: u16 = 2;
    pub const FLUSH: u16 = 3;
    pub const TRIM: u16 = 4;
    pub const CACHE: u16 = 5;
    pub const WRITE_ZEROES: u16 = 6;
    /// Today's BLOCK_STATUS. The 2016 draft used the same number for GET_LBA_STATUS.
    pub const BLOCK_STATUS: u16 = 7;

    names!(u16: READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS);

    pub fn name(command: u16) -> &'static str {
        name_of(command).unwrap_or("unknown command")
    }
}

/// Command flags (16 bits, a bitmask today).
pub mod command_flag {
    pub const FUA: u16 = 1 << 0;
    pub const NO_HOLE: u16 = 1 << 1;
    pub const DF: u16 = 1 << 2;
    pub const REQ_ONE: u16 = 1 << 3;
    pub const FAST_ZERO: u16 = 1 << 4;
    pub const PAYLOAD_LEN: u16 = 1 << 5;

    names!(u16: FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO, PAYLOAD_LEN);
}

/// Structured reply flags.
pub mod reply_flag {
    pub const DONE: u16 = 1 << 0;
}

/// Structured / extended reply chunk types.
pub mod chunk_type {
    pub const NONE: u16 = 0;
    pub const OFFSET_DATA: u16 = 1;
    pub const OFFSET_HOLE: u16 = 2;
    pub const BLOCK_STATUS: u16 = 5;
    pub const BLOCK_STATUS_EXT: u16 = 6;
    pub const ERROR_BIT: u16 = 1 << 15;
    pub const ERROR: u16 = ERROR_BIT | 1;
    pub const ERROR_OFFSET: u16 = ERROR_BIT | 2;

    names!(u16: NONE, OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, BLOCK_STATUS_EXT, ERROR,
        ERROR_OFFSET);

    pub fn name(chunk_type: u16) -> &'static str {
        match name_of(chunk_type) {
            Some(name) => name,
            None if chunk_type & ERROR_BIT != 0 => "unknown error chunk",
            None => "unknown chunk",
        }
    }
}

/// Error values carried in replies.
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const EOVERFLOW: u32 = 75;
    pub const ENOTSUP: u32 = 95;
    pub const ESHUTDOWN: u32 = 108;

    names!(u32: EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN);

    pub fn name(error: u32) -> &'static str {
        match error {
            0 => "OK",
            e => name_of(e).unwrap_or("unknown errno"),
        }
    }
}

/// Metadata context names and their status bits.
pub mod context {
    pub const BASE_ALLOCATION: &str = "base:allocation";
    pub const QEMU_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
    pub const QEMU_ALLOCATION_DEPTH: &str = "qemu:allocation-depth";
    /// `base:allocation`: no storage allocated for the extent.
    pub const STATE_HOLE: u64 = 1 << 0;
    /// `base:allocation`: the extent reads as zeros.
    pub const STATE_ZERO: u64 = 1 << 1;
    /// `qemu:dirty-bitmap:*`: the extent is dirty.
    pub const STATE_DIRTY: u64 = 1 << 0;
}

/// The 2016 `NBD_CMD_GET_LBA_STATUS` draft. Never mix these with today's values: draft ZEROED (1)
/// is today's HOLE bit, draft DEALLOCATED (2) is today's ZERO bit, and the draft's "flags" field
/// is an enumerated selector where today's is a bitmask.
pub mod draft {
    /// Transmission flag bit 7 in the draft; today the same bit is `NBD_FLAG_SEND_DF`.
    pub const SEND_GET_LBA_STATUS: u16 = 1 << 7;
    /// Command number 7 in the draft; today the same number is `NBD_CMD_BLOCK_STATUS`.
    pub const CMD_GET_LBA_STATUS: u16 = 7;
    /// Selector values carried in the request's flags field.
    pub const SELECT_ALLOCATED: u16 = 0;
    pub const SELECT_DIRTY: u16 = 1;
    /// Allocation states.
    pub const STATE_ALLOCATED: u16 = 0;
    pub const STATE_ZEROED: u16 = 1;
    pub const STATE_DEALLOCATED: u16 = 2;
    /// Dirtiness states (polarity inverted relative to qemu's dirty bitmaps).
    pub const STATE_DIRTY: u16 = 0;
    pub const STATE_CLEAN: u16 = 1;
    pub const STATE_DIRTY_DEALLOCATED: u16 = 2;
    /// Bytes per draft descriptor: 64-bit offset, 32-bit length, 16-bit status.
    pub const DESCRIPTOR_LEN: usize = 14;
    /// Pseudo context names used to report draft streams next to today's contexts.
    pub const CONTEXT_ALLOCATED: &str = "draft:allocated";
    pub const CONTEXT_DIRTY: &str = "draft:dirty";
}

/// Limits this implementation enforces on lengths claimed by a peer, so that no allocation is
/// ever sized by an unchecked number from the wire.
pub mod limit {
    /// Largest option payload either side accepts (names and queries are at most 4096 bytes).
    pub const MAX_OPTION_PAYLOAD: u32 = 64 * 1024;
    /// Largest string the protocol allows (GEN-STR-1).
    pub const MAX_STRING: usize = 4096;
    /// Strings should stay below this (GEN-STR-2).
    pub const RECOMMENDED_STRING: usize = 256;
    /// Descriptors a server should put in one chunk at most (BS-REP-CAP-1).
    pub const MAX_DESCRIPTORS_PER_CHUNK: usize = 1 << 20;
    /// Largest READ/WRITE payload this suite sends or serves (2^25, the spec's default maximum).
    pub const MAX_IO_PAYLOAD: u32 = 1 << 25;
    /// Largest chunk payload the client accepts: room for a maximal READ, or for twice the
    /// descriptor cap, so that an over-cap reply is still decoded and graded.
    pub const MAX_CHUNK_PAYLOAD: u64 = (MAX_IO_PAYLOAD as u64) + 4096;
}
