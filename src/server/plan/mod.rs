//! Request checking, sans IO: a request in, a [`Command`] to run or a [`Refusal`] to send out.
//!
//! Every check a request must pass before the image is touched lives here, in the order the
//! server applies them: the command and its flags, the advertised block sizes (variants), then
//! each command's own rules (range, writability, negotiated contexts). A refusal says whether
//! the request broke a client MUST, after which a server may close instead (TX-VIOL-1).

use super::export::Export;
use super::negotiate::Session;
use super::variant::OffLimits;
use crate::wire::consts::{command as cmd, command_flag as flag, draft, errno, limit};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;

/// A request that passed every check, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        length: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        length: u64,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        length: u64,
        punch: bool,
        fua: bool,
    },
    Cache,
    BlockStatus {
        offset: u64,
        /// The area of interest: the header's length, or the payload's effect length.
        length: u64,
        req_one: bool,
        /// The payload form's filter: answer for these contexts only (None: every selected).
        only: Option<Vec<u32>>,
    },
    /// The draft's GET_LBA_STATUS.
    LbaStatus {
        offset: u64,
        length: u64,
        query: DraftQuery,
    },
}

/// Why a request is refused: the error value and a short message for error chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub errno: u32,
    pub message: &'static str,
    /// The request broke a rule that binds the client (a MUST): the server may close instead
    /// of answering (TX-VIOL-1), which the `close-on-misuse` variant does.
    pub misuse: bool,
}

pub const fn refuse(errno: u32, message: &'static str) -> Refusal {
    Refusal {
        errno,
        message,
        misuse: false,
    }
}

/// EINVAL for a request the client must not send.
pub const fn misuse(message: &'static str) -> Refusal {
    Refusal {
        errno: errno::EINVAL,
        message,
        misuse: true,
    }
}

/// How many payload bytes follow a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    None,
    Bytes(usize),
    /// More than we accept: the stream cannot be resynchronised cheaply, so we close.
    TooBig,
}

/// The payload rule: WRITE always carries `length` bytes; under extended headers any command
/// with PAYLOAD_LEN does too, and we read it (to use, or to discard before refusing, EH-PL-2).
/// Under extended headers a payload above the `advertised` maximum closes the connection, as
/// the spec advises (BS-PAYLOAD-BIG-1); otherwise our own I/O limit is the bound.
pub fn payload_of(req: &Request, session: &Session, advertised: u32) -> Payload {
    let flagged = session.extended && req.flags & flag::PAYLOAD_LEN != 0;
    let carries = req.command == cmd::WRITE || flagged;
    let max = if flagged {
        advertised.min(limit::MAX_IO_PAYLOAD)
    } else {
        limit::MAX_IO_PAYLOAD
    };
    match (carries, req.length) {
        (false, _) => Payload::None,
        (true, n) if n > max as u64 => Payload::TooBig,
        (true, n) => Payload::Bytes(n as usize),
    }
}

/// Checks a request against the export and the session. `payload` is a block-status filter,
/// the one payload a check reads; a WRITE's data is no part of its checks, so a WRITE comes out
/// with empty `data`, which the caller fills from the payload only once the write is to run
/// (a refused write's payload is discarded as it arrives, never held).
pub fn plan(
    req: &Request,
    payload: Vec<u8>,
    export: &Export,
    session: &Session,
) -> Result<Command, Refusal> {
    if export.is_draft() && req.command == draft::CMD_GET_LBA_STATUS {
        return plan_lba_status(req, export);
    }
    // An unknown command breaks no client MUST (the server SHOULD answer EINVAL): no close.
    if !is_known_command(req.command) {
        return Err(refuse(errno::EINVAL, "unknown command"));
    }
    if req.flags & !allowed_flags(req.command, session) != 0 {
        return Err(misuse("flag not valid for this command"));
    }
    let (offset, mut length) = (req.offset, req.length);
    // The payload form says the area of interest itself: every later rule is about that.
    let mut only = None;
    if req.command == cmd::BLOCK_STATUS && req.flags & flag::PAYLOAD_LEN != 0 {
        let f = filter::check(&payload, session)?;
        length = f.effect_length;
        only = Some(f.ids);
    }
    if req.command != cmd::FLUSH {
        if let Some(off) = export.variants.refuses_request(
            export.block_sizes(),
            req.command == cmd::READ,
            offset,
            length,
        ) {
            let clients_must = off == OffLimits::Unaligned || !session.structured;
            return Err(if clients_must {
                misuse(off.message())
            } else {
                refuse(errno::EINVAL, off.message())
            });
        }
    }
    let fua = req.flags & flag::FUA != 0;
    match req.command {
        cmd::READ => {
            check_range(export, offset, length)?;
            if length > limit::MAX_IO_PAYLOAD as u64 {
                return Err(refuse(
                    errno::EINVAL,
                    "read larger than the maximum payload",
                ));
            }
            Ok(Command::Read {
                offset,
                length: length as usize,
            })
        }
        cmd::WRITE => {
            check_writable(export)?;
            check_range(export, offset, length)?;
            Ok(Command::Write {
                offset,
                data: Vec::new(),
                fua,
            })
        }
        cmd::FLUSH => Ok(Command::Flush),
        cmd::TRIM => {
            check_writable(export)?;
            check_range(export, offset, length)?;
            Ok(Command::Trim {
                offset,
                length,
                fua,
            })
        }
        cmd::WRITE_ZEROES => {
            check_writable(export)?;
            check_range(export, offset, length)?;
            if req.flags & flag::FAST_ZERO != 0 {
                return Err(refuse(errno::ENOTSUP, "fast zeroing is not offered"));
            }
            Ok(Command::WriteZeroes {
                offset,
                length,
                punch: req.flags & flag::NO_HOLE == 0,
                fua,
            })
        }
        cmd::CACHE => {
            check_range(export, offset, length)?;
            Ok(Command::Cache)
        }
        _ => {
            if session.contexts.is_empty() {
                return Err(misuse("no metadata context was negotiated"));
            }
            if length == 0 {
                return Err(refuse(errno::EINVAL, "zero-length block status request"));
            }
            check_range(export, offset, length)?;
            Ok(Command::BlockStatus {
                offset,
                length,
                req_one: req.flags & flag::REQ_ONE != 0,
                only,
            })
        }
    }
}

fn plan_lba_status(req: &Request, export: &Export) -> Result<Command, Refusal> {
    if req.length == 0 {
        return Err(refuse(errno::EINVAL, "zero-length GET_LBA_STATUS"));
    }
    check_range(export, req.offset, req.length)?;
    // The flags field is a selector here. GET_DIRTY without a bitmap is a query we cannot
    // express, which the draft answers with the fallback descriptor (DRAFT-UNK-1).
    let query = match DraftQuery::from_selector(req.flags) {
        DraftQuery::Dirty if export.bitmaps.is_empty() => DraftQuery::Other(draft::SELECT_DIRTY),
        q => q,
    };
    Ok(Command::LbaStatus {
        offset: req.offset,
        length: req.length,
        query,
    })
}

fn is_known_command(command: u16) -> bool {
    matches!(
        command,
        cmd::READ
            | cmd::WRITE
            | cmd::FLUSH
            | cmd::TRIM
            | cmd::CACHE
            | cmd::WRITE_ZEROES
            | cmd::BLOCK_STATUS
    )
}

/// Flags documented for `command` and valid in this session (BS-REQ-FLAGS-1, ERRNO-UNKFLAG-1).
/// FUA is advertised, so every command accepts it (BS-REQ-FUA-1).
fn allowed_flags(command: u16, session: &Session) -> u16 {
    flag::FUA
        | match command {
            cmd::READ if session.structured => flag::DF,
            cmd::WRITE if session.extended => flag::PAYLOAD_LEN,
            cmd::WRITE_ZEROES => flag::NO_HOLE | flag::FAST_ZERO,
            cmd::BLOCK_STATUS if session.extended => flag::REQ_ONE | flag::PAYLOAD_LEN,
            cmd::BLOCK_STATUS => flag::REQ_ONE,
            _ => 0,
        }
}

/// The refusal of a request that runs past the end of the export.
pub const PAST_END: Refusal = misuse("request runs past the end of the export");

fn check_range(export: &Export, offset: u64, length: u64) -> Result<(), Refusal> {
    match offset.checked_add(length) {
        Some(end) if end <= export.size() => Ok(()),
        _ => Err(PAST_END),
    }
}

fn check_writable(export: &Export) -> Result<(), Refusal> {
    if export.writable() {
        Ok(())
    } else {
        Err(refuse(errno::EPERM, "the export is read-only"))
    }
}

pub mod filter;
#[cfg(test)]
mod tests;
