//! What faults change in the reply to a status query once the clean server has built it: the
//! headers and payloads of its chunks, its error chunk, the bytes of the draft's replies.

use bytes::BufMut;
use bytes::BytesMut;

use super::{Fault, Faults};
use crate::server::extents::MAX_COMPACT_DESCRIPTOR;
use crate::server::replies::{OutgoingChunk, ReplyForm, StatusReply};
use crate::wire::consts::{chunk_type, draft, magic, reply_flag};
use crate::wire::reply::{ChunkBody, Descriptor, ReplyHeader};

/// What `wrong-cookie` XORs into the cookie.
const COOKIE_MANGLE: u64 = 0xFFFF;
/// What `ext-offset-mismatch` adds to the header offset.
const OFFSET_SKEW: u64 = 4096;
/// What `error-message-overrun` adds to the announced message length.
const MESSAGE_OVERRUN: u16 = 16;
/// The bytes of a draft reply before its descriptors: the simple header, then P.
const DRAFT_HEAD: usize = magic::SIMPLE_REPLY_LEN + 4;

impl Faults {
    /// The reply to a status query as it will go out.
    pub fn rewrite(&self, reply: &mut StatusReply) {
        match reply {
            StatusReply::Chunks(chunks) => {
                for chunk in chunks.iter_mut() {
                    self.rewrite_status_body(chunk);
                }
                self.rewrite_status_headers(chunks);
            }
            StatusReply::ErrorChunk(chunk) => self.rewrite_error_chunk(chunk),
            StatusReply::DraftAnswer(reply) => self.rewrite_draft_answer(reply),
            StatusReply::DraftRefusal(reply) => self.rewrite_draft_refusal(reply),
        }
    }

    /// The payload of an extended status chunk: a wrong count, or 32-bit descriptors in a
    /// BLOCK_STATUS chunk. The chunk is framed again around the new body, as the clean server
    /// would have framed it.
    fn rewrite_status_body(&self, chunk: &mut OutgoingChunk) {
        let count_lie = self.has(Fault::ExtCountMismatch);
        let compact_lie = self.has(Fault::CompactChunkUnderEh);
        if !(count_lie || compact_lie) {
            return;
        }
        let ReplyHeader::Extended {
            flags,
            chunk_type: chunk_type::BLOCK_STATUS_EXT,
            cookie,
            offset,
            ..
        } = chunk.header
        else {
            return;
        };
        let ChunkBody::BlockStatusExt {
            context_id,
            count,
            descriptors,
        } = ChunkBody::decode(chunk_type::BLOCK_STATUS_EXT, &chunk.payload).value
        else {
            return;
        };
        let body = if compact_lie {
            ChunkBody::BlockStatus {
                context_id,
                descriptors: fit_in_32_bits(&descriptors),
            }
        } else {
            ChunkBody::BlockStatusExt {
                context_id,
                count: count.wrapping_add(1),
                descriptors,
            }
        };
        let done = flags & reply_flag::DONE != 0;
        *chunk = ReplyForm::Extended.chunk(done, cookie, offset, &body);
    }

    /// The headers (and stray payload bytes) of the chunks of one successful status reply.
    fn rewrite_status_headers(&self, chunks: &mut [OutgoingChunk]) {
        for chunk in chunks.iter_mut() {
            if self.has(Fault::StructuredHeaderUnderEh) {
                if let ReplyHeader::Extended {
                    flags,
                    chunk_type,
                    cookie,
                    length,
                    ..
                } = chunk.header
                {
                    chunk.header = ReplyHeader::Structured {
                        flags,
                        chunk_type,
                        cookie,
                        length: length as u32,
                    };
                }
            }
            if self.has(Fault::ChunkLengthMismatch) {
                if let ReplyHeader::Structured {
                    chunk_type: chunk_type::BLOCK_STATUS,
                    length,
                    ..
                } = &mut chunk.header
                {
                    chunk.payload.put_slice(&[0xA5; 4]);
                    *length += 4;
                }
            }
            if self.has(Fault::ExtOffsetMismatch) {
                if let ReplyHeader::Extended { offset, .. } = &mut chunk.header {
                    *offset = offset.wrapping_add(OFFSET_SKEW);
                }
            }
            if self.has(Fault::WrongCookie) {
                let mangled = chunk.header.cookie() ^ COOKIE_MANGLE;
                set_cookie(&mut chunk.header, mangled);
            }
        }
        if self.has(Fault::NoDoneFlag) {
            if let Some(last) = chunks.last_mut() {
                clear_done(&mut last.header);
            }
        }
    }

    /// `error-message-overrun`: the message length says more than the chunk holds.
    fn rewrite_error_chunk(&self, chunk: &mut OutgoingChunk) {
        if !self.has(Fault::ErrorMessageOverrun) {
            return;
        }
        // Payload: error (4 bytes), message length (2), message.
        let Some(announced) = chunk.payload.get_mut(4..6) else {
            return;
        };
        let length = u16::from_be_bytes([announced[0], announced[1]]);
        announced.copy_from_slice(&length.saturating_add(MESSAGE_OVERRUN).to_be_bytes());
    }

    /// `draft-short-descriptors`: P still counts the last descriptor, which is not sent.
    fn rewrite_draft_answer(&self, reply: &mut BytesMut) {
        if self.has(Fault::DraftShortDescriptors) && reply.len() > DRAFT_HEAD {
            reply.truncate(reply.len() - draft::DESCRIPTOR_LEN);
        }
    }

    /// The trailer after a draft error: none at all, or a P its bytes fall short of.
    fn rewrite_draft_refusal(&self, reply: &mut BytesMut) {
        if self.has(Fault::DraftErrorNoTrailer) {
            reply.truncate(magic::SIMPLE_REPLY_LEN);
        } else if self.has(Fault::DraftShortTrailer) {
            reply.truncate(magic::SIMPLE_REPLY_LEN);
            reply.put_u32(draft::DESCRIPTOR_LEN as u32);
            reply.put_slice(&[0; 6]);
        }
    }
}

/// `compact-chunk-under-eh`: 64-bit descriptors squeezed into 32-bit ones without lying: the
/// list stops (a legal short reply) at the first one too long for 32 bits, cut to fit.
fn fit_in_32_bits(descriptors: &[Descriptor]) -> Vec<Descriptor> {
    let mut out = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        if d.length > MAX_COMPACT_DESCRIPTOR {
            out.push(Descriptor {
                length: MAX_COMPACT_DESCRIPTOR,
                ..*d
            });
            break;
        }
        out.push(*d);
    }
    out
}

fn set_cookie(header: &mut ReplyHeader, value: u64) {
    match header {
        ReplyHeader::Simple { cookie, .. }
        | ReplyHeader::Structured { cookie, .. }
        | ReplyHeader::Extended { cookie, .. } => *cookie = value,
    }
}

fn clear_done(header: &mut ReplyHeader) {
    match header {
        ReplyHeader::Structured { flags, .. } | ReplyHeader::Extended { flags, .. } => {
            *flags &= !reply_flag::DONE
        }
        ReplyHeader::Simple { .. } => {}
    }
}
