//! What one reply may carry before the client stops reading it: chunks, status descriptors and
//! data bytes, each derived from the request it answers (its command, its length, the contexts
//! selected), plus a small fixed slack for error and NONE chunks.
//!
//! Each message of a reply is bounded on its own (`limit::MAX_CHUNK_PAYLOAD`); this bounds
//! their sum, so that a server that never sets DONE, or repeats a chunk, costs a fixed amount of
//! memory and ends as a finding under the rule it breaks. A correct server stays far inside
//! every budget: a status reply is one chunk per context of at most 2^20 descriptors
//! (BS-REP-PERCTX-1, BS-REP-CAP-1), READ chunks never overlap and stay inside the request.
//! Where a correct server could still go past a budget (a READ split finer than 512 bytes, each
//! piece with an error chunk: the spec only asks for at least one byte per chunk), the client
//! stops with [`ClientError::BeyondLimit`], a harness limit, not a finding.

use super::ClientError;
use crate::clauses::id;
use crate::wire::consts::{chunk_type, command, limit};
use crate::wire::Violation;

/// Chunks a reply may have besides the ones its request needs: error chunks (a server may
/// send several), NONE, chunk types this client does not know.
pub const CHUNK_SLACK: u64 = 16;

/// READ content chunks kept at most: each must carry at least one byte, so a READ of N bytes
/// may legally need N of them; the spec asks for multiples of 512 bytes where possible, which is
/// 2^16 for the largest READ (32 MiB). Each may be followed by an error chunk, so twice this
/// many chunks are kept.
pub const MAX_READ_CHUNKS: u64 = 1 << 16;

/// Status descriptors a reply may carry beyond 2^20 per context: room for a server that breaks
/// the SHOULD of BS-REP-CAP-1 (up to twice over in one chunk), so that it is still decoded and
/// graded a warning.
pub const DESCRIPTOR_SLACK: u64 = 1 << 20;

/// Payload bytes of chunks other than data and status (error messages, unknown types) a
/// reply may carry in all, besides [`ERROR_BYTES_PER_CHUNK`] for each chunk the request may
/// need: error messages are 16-bit lengths, a few of them fit many times.
pub const OTHER_BYTES: u64 = 1 << 20;

/// Room for a short error chunk after each chunk a request may need (an offset, an error, a
/// message of a few words).
pub const ERROR_BYTES_PER_CHUNK: u64 = 64;

/// Why a chunk does not fit its reply's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overrun {
    /// Only a server breaking this rule sends it.
    Broke(Violation),
    /// A legal reply, larger than this client reads.
    Limit(String),
}

impl From<Violation> for Overrun {
    fn from(v: Violation) -> Overrun {
        Overrun::Broke(v)
    }
}

impl From<Overrun> for ClientError {
    fn from(o: Overrun) -> ClientError {
        match o {
            Overrun::Broke(v) => ClientError::Protocol(v),
            Overrun::Limit(what) => ClientError::BeyondLimit(what),
        }
    }
}

/// What is left of one reply's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyBudget {
    chunks: u64,
    descriptors: u64,
    data: u64,
    other: u64,
    /// Status chunks the request can need: one per selected context.
    status_chunks: u64,
    /// A READ: a correct server may split it past the chunk budget (see the module doc).
    read: bool,
}

impl ReplyBudget {
    /// The budget of a reply to `cmd` of `length` bytes on a connection with `contexts`
    /// selected.
    pub fn for_request(cmd: u16, length: u64, contexts: usize) -> ReplyBudget {
        let contexts = (contexts as u64).max(1);
        let (needed, descriptors, data) = match cmd {
            command::BLOCK_STATUS => (
                contexts,
                contexts * limit::MAX_DESCRIPTORS_PER_CHUNK as u64 + DESCRIPTOR_SLACK,
                0,
            ),
            command::READ => (2 * length.min(MAX_READ_CHUNKS), 0, length),
            _ => (0, 0, 0),
        };
        ReplyBudget {
            chunks: needed + CHUNK_SLACK,
            descriptors,
            data,
            other: OTHER_BYTES + needed * ERROR_BYTES_PER_CHUNK,
            status_chunks: if cmd == command::BLOCK_STATUS {
                contexts
            } else {
                0
            },
            read: cmd == command::READ,
        }
    }

    /// Charges a chunk of `kind` with `length` payload bytes, before its payload is read (so
    /// that an over-budget chunk costs nothing); the violation names the rule a reply that
    /// needs more breaks, or the error says which harness limit a legal reply went past.
    pub fn charge(&mut self, kind: u16, length: u64, extended: bool) -> Result<(), Overrun> {
        let Some(chunks) = self.chunks.checked_sub(1) else {
            if self.read {
                return Err(Overrun::Limit(format!(
                    "a READ reply of more than {} chunks",
                    2 * MAX_READ_CHUNKS + CHUNK_SLACK
                )));
            }
            return Err(self.too_many_chunks(kind).into());
        };
        self.chunks = chunks;
        match kind {
            chunk_type::BLOCK_STATUS | chunk_type::BLOCK_STATUS_EXT => {
                let (id_len, each) = match extended || kind == chunk_type::BLOCK_STATUS_EXT {
                    true => (8, 16),
                    false => (4, 8),
                };
                let count = length.saturating_sub(id_len) / each;
                self.descriptors = self.descriptors.checked_sub(count).ok_or_else(|| {
                    let clause = if count > limit::MAX_DESCRIPTORS_PER_CHUNK as u64 {
                        id::BS_REP_CAP_1
                    } else {
                        id::BS_REP_PERCTX_1
                    };
                    Overrun::Broke(Violation::new(
                        clause,
                        format!(
                            "a status chunk of {count} descriptors takes the reply past the \
                             {} a request on {} context(s) can need (2^20 per context)",
                            self.status_chunks * limit::MAX_DESCRIPTORS_PER_CHUNK as u64,
                            self.status_chunks
                        ),
                    ))
                })?;
            }
            chunk_type::OFFSET_DATA => {
                let bytes = length.saturating_sub(8);
                self.data = self.data.checked_sub(bytes).ok_or_else(|| {
                    Overrun::Broke(Violation::new(
                        id::CHUNK_INCONS_1,
                        format!(
                            "OFFSET_DATA chunks carry more bytes than the READ asked for \
                             ({bytes} more with {} left)",
                            self.data
                        ),
                    ))
                })?;
            }
            chunk_type::OFFSET_HOLE | chunk_type::NONE => {}
            _ => {
                // Not a rule: error chunks may carry messages, as many as there are chunks.
                self.other = self.other.checked_sub(length).ok_or_else(|| {
                    Overrun::Limit(format!(
                        "error chunks (the last of type {}) carrying more bytes than this client \
                         keeps for one reply",
                        chunk_type::name(kind)
                    ))
                })?;
            }
        }
        Ok(())
    }

    fn too_many_chunks(&self, kind: u16) -> Violation {
        if self.status_chunks > 0
            && matches!(
                kind,
                chunk_type::BLOCK_STATUS | chunk_type::BLOCK_STATUS_EXT
            )
        {
            return Violation::new(
                id::BS_REP_PERCTX_1,
                format!(
                    "more than {} chunks without DONE for a block status on {} context(s)",
                    self.status_chunks + CHUNK_SLACK,
                    self.status_chunks
                ),
            );
        }
        Violation::new(
            id::BS_COMPLETE_1,
            format!(
                "chunk after chunk without DONE: more than the request can need plus {CHUNK_SLACK}"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Overrun {
        fn clause(&self) -> crate::clauses::ClauseId {
            match self {
                Overrun::Broke(v) => v.clause,
                Overrun::Limit(what) => panic!("a harness limit, not a rule: {what}"),
            }
        }
    }

    #[test]
    fn one_status_chunk_per_context_of_2_20_descriptors_fits() {
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 1 << 30, 2);
        let full = 4 + 8 * limit::MAX_DESCRIPTORS_PER_CHUNK as u64;
        assert_eq!(b.charge(chunk_type::BLOCK_STATUS, full, false), Ok(()));
        assert_eq!(b.charge(chunk_type::BLOCK_STATUS, full, false), Ok(()));
        assert_eq!(b.charge(chunk_type::ERROR, 100, false), Ok(()));
    }

    #[test]
    fn a_chunk_just_over_the_descriptor_cap_still_fits() {
        // The sizes proof's chunk of 2^20 + 1 descriptors must be decoded and graded (a SHOULD).
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 1 << 30, 1);
        let over = 4 + 8 * (limit::MAX_DESCRIPTORS_PER_CHUNK as u64 + 1);
        assert_eq!(b.charge(chunk_type::BLOCK_STATUS, over, false), Ok(()));
    }

    #[test]
    fn status_chunks_past_the_budget_break_perctx() {
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 1 << 30, 1);
        let tenth = 4 + 8 * 100_000;
        let v = (0..100)
            .find_map(|_| b.charge(chunk_type::BLOCK_STATUS, tenth, false).err())
            .expect("the budget ends");
        assert_eq!(v.clause(), id::BS_REP_PERCTX_1);
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 1 << 30, 1);
        let v = (0..100)
            .find_map(|_| b.charge(chunk_type::BLOCK_STATUS, 12, false).err())
            .expect("the chunk count ends");
        assert_eq!(v.clause(), id::BS_REP_PERCTX_1);
    }

    #[test]
    fn read_data_past_the_length_is_inconsistent() {
        let mut b = ReplyBudget::for_request(command::READ, 4096, 0);
        assert_eq!(b.charge(chunk_type::OFFSET_DATA, 8 + 4096, false), Ok(()));
        let v = b.charge(chunk_type::OFFSET_DATA, 8 + 1, false).unwrap_err();
        assert_eq!(v.clause(), id::CHUNK_INCONS_1);
    }

    #[test]
    fn error_chunks_are_bounded_in_count_and_bytes() {
        // An error type this client does not know (0x8777) is read and kept, within the slack
        // of chunks and the bytes of error chunks; too many bytes is a harness limit, not a rule.
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 4096, 1);
        let v = (0..100)
            .find_map(|_| b.charge(0x8777, 0, false).err())
            .expect("the chunk count ends");
        assert_eq!(v.clause(), id::BS_COMPLETE_1);
        let mut b = ReplyBudget::for_request(command::BLOCK_STATUS, 4096, 1);
        let kept = OTHER_BYTES + (1 + CHUNK_SLACK) * ERROR_BYTES_PER_CHUNK;
        assert!(matches!(
            b.charge(0x8777, kept + 1, false),
            Err(Overrun::Limit(_))
        ));
    }

    #[test]
    fn a_read_in_512_byte_pieces_each_with_an_error_chunk_fits() {
        // Legal (each chunk carries at least one byte; an error chunk may follow any of them):
        // read in full. Finer than that is past what the client keeps, never a finding.
        let length = 32 << 20;
        let mut b = ReplyBudget::for_request(command::READ, length, 0);
        for _ in 0..length / 512 {
            assert_eq!(b.charge(chunk_type::OFFSET_DATA, 8 + 512, false), Ok(()));
            assert_eq!(
                b.charge(chunk_type::ERROR_OFFSET, 4 + 2 + 8 + 20, false),
                Ok(())
            );
        }
        let past = (0..CHUNK_SLACK + 1)
            .find_map(|_| b.charge(chunk_type::ERROR_OFFSET, 14, false).err())
            .expect("the chunk count ends");
        assert!(matches!(past, Overrun::Limit(_)), "{past:?}");
    }

    #[test]
    fn endless_chunks_of_another_request_break_completion() {
        let mut b = ReplyBudget::for_request(command::WRITE, 4096, 0);
        let v = (0..100)
            .find_map(|_| b.charge(chunk_type::NONE, 0, false).err())
            .expect("the chunk count ends");
        assert_eq!(v.clause(), id::BS_COMPLETE_1);
    }
}
