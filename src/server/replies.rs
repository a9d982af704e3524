//! Transmission reply framing: which header form each reply takes, given what was negotiated.
//!
//! Simple replies without structured replies (TX-SIMPLE-1, SR-GATE-1); structured chunks once
//! negotiated, where payload-free successes may stay simple (SR-SIMPLEOK-1); extended chunks for
//! everything under extended headers, offset = request offset (EH-REP-1, EH-REP-2). The draft's
//! GET_LBA_STATUS reply (simple header + P + descriptors) lives here too.
//!
//! The replies to status queries are built as a [`StatusReply`] before they are encoded: the
//! one form in which fault injection may rewrite them (the clean server encodes them as built).

use bytes::{BufMut, BytesMut};

use crate::wire::consts::reply_flag;
use crate::wire::draft::{encode_descriptors, DraftDescriptor};
use crate::wire::reply::{ChunkBody, Descriptor, ReplyHeader};

/// One chunk, encoded but not yet written: its header (length set) and its payload. Status
/// replies pass through this form so that fault injection can reach the wire fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingChunk {
    pub header: ReplyHeader,
    pub payload: BytesMut,
}

impl OutgoingChunk {
    pub fn encode(&self, dst: &mut BytesMut) {
        self.header.encode(dst);
        dst.extend_from_slice(&self.payload);
    }
}

/// A reply to a status query (BLOCK_STATUS, or the draft's GET_LBA_STATUS), built but not yet
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReply {
    /// Block status answered: one status chunk per context, DONE on the last.
    Chunks(Vec<OutgoingChunk>),
    /// Block status refused under structured replies: one ERROR chunk, with DONE.
    ErrorChunk(OutgoingChunk),
    /// GET_LBA_STATUS answered: the simple header, then P and the descriptors (DRAFT-REP-1).
    DraftAnswer(BytesMut),
    /// GET_LBA_STATUS refused: the simple header with the error, then P = 0 so the stream stays
    /// in sync (DRAFT-ERR-1, the "send P" variant).
    DraftRefusal(BytesMut),
}

impl StatusReply {
    pub fn draft_answer(cookie: u64, descriptors: &[DraftDescriptor]) -> StatusReply {
        let mut reply = BytesMut::new();
        ReplyHeader::Simple { error: 0, cookie }.encode(&mut reply);
        encode_descriptors(&mut reply, descriptors);
        StatusReply::DraftAnswer(reply)
    }

    pub fn draft_refusal(cookie: u64, errno: u32) -> StatusReply {
        let mut reply = BytesMut::new();
        ReplyHeader::Simple {
            error: errno,
            cookie,
        }
        .encode(&mut reply);
        encode_descriptors(&mut reply, &[]);
        StatusReply::DraftRefusal(reply)
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            StatusReply::Chunks(chunks) => {
                for chunk in chunks {
                    chunk.encode(dst);
                }
            }
            StatusReply::ErrorChunk(chunk) => chunk.encode(dst),
            StatusReply::DraftAnswer(bytes) | StatusReply::DraftRefusal(bytes) => {
                dst.extend_from_slice(bytes)
            }
        }
    }
}

/// The reply header form of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyForm {
    Simple,
    Structured,
    Extended,
}

impl ReplyForm {
    pub fn new(structured: bool, extended: bool) -> Self {
        match (structured, extended) {
            (_, true) => ReplyForm::Extended,
            (true, false) => ReplyForm::Structured,
            (false, false) => ReplyForm::Simple,
        }
    }

    /// Writes a chunk with the DONE flag (the only chunk, or the last one, of a reply).
    fn final_chunk(self, dst: &mut BytesMut, cookie: u64, offset: u64, body: &ChunkBody) {
        self.chunk(true, cookie, offset, body).encode(dst);
    }

    /// One chunk as header and payload; `done` sets the DONE flag.
    pub fn chunk(self, done: bool, cookie: u64, offset: u64, body: &ChunkBody) -> OutgoingChunk {
        let mut payload = BytesMut::new();
        body.encode_payload(&mut payload);
        let header = self.chunk_header(
            done,
            body.chunk_type(),
            cookie,
            offset,
            payload.len() as u64,
        );
        OutgoingChunk { header, payload }
    }

    /// The header of a chunk with `length` payload bytes.
    fn chunk_header(
        self,
        done: bool,
        chunk_type: u16,
        cookie: u64,
        offset: u64,
        length: u64,
    ) -> ReplyHeader {
        let flags = if done { reply_flag::DONE } else { 0 };
        match self {
            ReplyForm::Extended => ReplyHeader::Extended {
                flags,
                chunk_type,
                cookie,
                offset,
                length,
            },
            _ => ReplyHeader::Structured {
                flags,
                chunk_type,
                cookie,
                length: length as u32,
            },
        }
    }

    /// A failed request: simple reply with the error, or an ERROR chunk carrying `message`.
    pub fn error(self, dst: &mut BytesMut, cookie: u64, offset: u64, errno: u32, message: &str) {
        match self.error_chunk(cookie, offset, errno, message) {
            Some(chunk) => chunk.encode(dst),
            None => ReplyHeader::Simple {
                error: errno,
                cookie,
            }
            .encode(dst),
        }
    }

    /// The ERROR chunk (with DONE) of a failed request; `None` without structured replies.
    pub fn error_chunk(
        self,
        cookie: u64,
        offset: u64,
        errno: u32,
        message: &str,
    ) -> Option<OutgoingChunk> {
        let body = ChunkBody::Error {
            chunk_type: crate::wire::consts::chunk_type::ERROR,
            error: errno,
            message: message.to_owned(),
            offset: None,
        };
        (self != ReplyForm::Simple).then(|| self.chunk(true, cookie, offset, &body))
    }

    /// A block status over `offset+length` that failed in the backend (`--fail-block-status`):
    /// an EIO ERROR_OFFSET chunk (with DONE) at the first `grid` block of the request's second
    /// half, inside the range as BS-ERR-OFFSET-1 wants, and not at its start, so that a client
    /// reading it as the request's offset is caught.
    pub fn backend_failure(
        self,
        cookie: u64,
        offset: u64,
        length: u64,
        grid: u64,
    ) -> OutgoingChunk {
        let body = ChunkBody::Error {
            chunk_type: crate::wire::consts::chunk_type::ERROR_OFFSET,
            error: crate::wire::consts::errno::EIO,
            message: "block status failed in the backend (--fail-block-status)".to_owned(),
            offset: Some(offset + length / 2 / grid * grid),
        };
        self.chunk(true, cookie, offset, &body)
    }

    /// Success of a command without reply payload. Structured connections may still use a
    /// simple reply here; extended ones must not, so they get a NONE chunk.
    pub fn done(self, dst: &mut BytesMut, cookie: u64, offset: u64) {
        match self {
            ReplyForm::Simple | ReplyForm::Structured => {
                ReplyHeader::Simple { error: 0, cookie }.encode(dst)
            }
            ReplyForm::Extended => self.final_chunk(dst, cookie, offset, &ChunkBody::None),
        }
    }

    /// A successful READ: data after a simple header, or one OFFSET_DATA chunk (a NONE chunk for
    /// a zero-length read, since OFFSET_DATA needs at least one byte).
    pub fn read_data(self, dst: &mut BytesMut, cookie: u64, offset: u64, data: Vec<u8>) {
        self.read_head(dst, cookie, offset, data.len());
        dst.extend_from_slice(&data);
    }

    /// What precedes the `length` data bytes of a successful READ ([`read_data`] without the
    /// data, which may then follow in pieces): the simple header, or the OFFSET_DATA chunk's
    /// header and offset. For a zero-length read under structured replies, the whole reply.
    ///
    /// [`read_data`]: ReplyForm::read_data
    pub fn read_head(self, dst: &mut BytesMut, cookie: u64, offset: u64, length: usize) {
        match self {
            ReplyForm::Simple => ReplyHeader::Simple { error: 0, cookie }.encode(dst),
            _ if length == 0 => self.final_chunk(dst, cookie, offset, &ChunkBody::None),
            _ => {
                let chunk_type = crate::wire::consts::chunk_type::OFFSET_DATA;
                // The chunk's payload: the 8-byte offset, then the data.
                let payload = 8 + length as u64;
                self.chunk_header(true, chunk_type, cookie, offset, payload)
                    .encode(dst);
                dst.put_u64(offset);
            }
        }
    }

    /// A successful BLOCK_STATUS: one status chunk per (context id, descriptors), DONE on the
    /// last. Callers only get here on structured or extended connections (contexts need them).
    pub fn block_status(
        self,
        cookie: u64,
        offset: u64,
        chunks: Vec<(u32, Vec<Descriptor>)>,
    ) -> StatusReply {
        StatusReply::Chunks(self.frames(cookie, offset, self.status_bodies(chunks)))
    }

    /// The status chunk body of each context: BLOCK_STATUS_EXT under extended headers,
    /// BLOCK_STATUS otherwise.
    fn status_bodies(self, chunks: Vec<(u32, Vec<Descriptor>)>) -> Vec<ChunkBody> {
        chunks
            .into_iter()
            .map(|(context_id, descriptors)| match self {
                ReplyForm::Extended => ChunkBody::BlockStatusExt {
                    context_id,
                    count: descriptors.len() as u32,
                    descriptors,
                },
                _ => ChunkBody::BlockStatus {
                    context_id,
                    descriptors,
                },
            })
            .collect()
    }

    /// The chunks of one reply, DONE on the last.
    fn frames(self, cookie: u64, offset: u64, bodies: Vec<ChunkBody>) -> Vec<OutgoingChunk> {
        let last = bodies.len().saturating_sub(1);
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| self.chunk(i == last, cookie, offset, body))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::consts::{chunk_type, magic};
    use crate::wire::reply::{scan_reply_header, HeaderScan};

    fn header(buf: &[u8]) -> ReplyHeader {
        match scan_reply_header(buf) {
            HeaderScan::Header(h, _) => h,
            other => panic!("no header: {other:?}"),
        }
    }

    #[test]
    fn a_read_reply_is_one_offset_data_chunk_whose_head_can_go_first() {
        let data = vec![0x5a; 3000];
        for form in [ReplyForm::Structured, ReplyForm::Extended] {
            let mut whole = BytesMut::new();
            form.read_data(&mut whole, 9, 8192, data.clone());
            let body = ChunkBody::OffsetData {
                offset: 8192,
                data: bytes::Bytes::from(data.clone()),
            };
            let mut as_chunk = BytesMut::new();
            form.chunk(true, 9, 8192, &body).encode(&mut as_chunk);
            assert_eq!(whole, as_chunk, "{form:?}");
        }
        let mut simple = BytesMut::new();
        ReplyForm::Simple.read_data(&mut simple, 9, 0, data.clone());
        assert_eq!(simple.len(), magic::SIMPLE_REPLY_LEN + data.len());
    }

    #[test]
    fn forms_follow_negotiation() {
        assert_eq!(ReplyForm::new(false, false), ReplyForm::Simple);
        assert_eq!(ReplyForm::new(true, false), ReplyForm::Structured);
        assert_eq!(ReplyForm::new(false, true), ReplyForm::Extended);
    }

    #[test]
    fn extended_success_is_a_none_chunk_with_the_request_offset() {
        let mut b = BytesMut::new();
        ReplyForm::Extended.done(&mut b, 7, 4096);
        assert_eq!(
            header(&b),
            ReplyHeader::Extended {
                flags: reply_flag::DONE,
                chunk_type: chunk_type::NONE,
                cookie: 7,
                offset: 4096,
                length: 0
            }
        );
    }

    #[test]
    fn structured_error_is_an_error_chunk() {
        let mut b = BytesMut::new();
        ReplyForm::Structured.error(&mut b, 9, 0, 22, "bad");
        match header(&b) {
            ReplyHeader::Structured {
                flags,
                chunk_type: t,
                length,
                ..
            } => {
                assert_eq!((flags, t, length), (reply_flag::DONE, chunk_type::ERROR, 9));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn block_status_sets_done_only_on_the_last_chunk() {
        let mut b = BytesMut::new();
        let d = vec![Descriptor {
            length: 512,
            flags: 3,
        }];
        ReplyForm::Structured
            .block_status(1, 0, vec![(0, d.clone()), (1, d)])
            .encode(&mut b);
        let first = header(&b);
        let second = header(&b[magic::STRUCTURED_REPLY_LEN + 12..]);
        assert!(matches!(
            first,
            ReplyHeader::Structured {
                flags: 0,
                chunk_type: 5,
                length: 12,
                ..
            }
        ));
        assert!(matches!(
            second,
            ReplyHeader::Structured {
                flags: 1,
                chunk_type: 5,
                ..
            }
        ));
    }

    #[test]
    fn chunks_are_encoded_as_the_wire_codec_encodes_them() {
        use crate::wire::reply::encode_chunk;
        let d = vec![
            Descriptor {
                length: 4096,
                flags: 0,
            },
            Descriptor {
                length: 512,
                flags: 3,
            },
        ];
        for form in [ReplyForm::Structured, ReplyForm::Extended] {
            let extended = form == ReplyForm::Extended;
            let mut ours = BytesMut::new();
            form.block_status(7, 4096, vec![(0, d.clone()), (1, d.clone())])
                .encode(&mut ours);
            let mut wire = BytesMut::new();
            for (i, body) in form
                .status_bodies(vec![(0, d.clone()), (1, d.clone())])
                .iter()
                .enumerate()
            {
                let flags = if i == 1 { reply_flag::DONE } else { 0 };
                encode_chunk(&mut wire, extended, flags, 7, 4096, body);
            }
            assert_eq!(ours, wire, "{form:?}");
            let mut error = BytesMut::new();
            form.error(&mut error, 9, 4096, 22, "bad");
            let mut wire_error = BytesMut::new();
            let body = ChunkBody::Error {
                chunk_type: chunk_type::ERROR,
                error: 22,
                message: "bad".into(),
                offset: None,
            };
            encode_chunk(&mut wire_error, extended, reply_flag::DONE, 9, 4096, &body);
            assert_eq!(error, wire_error, "{form:?}");
        }
    }

    #[test]
    fn draft_error_sends_a_zero_parameter_length() {
        let mut b = BytesMut::new();
        StatusReply::draft_refusal(5, 22).encode(&mut b);
        assert_eq!(b.len(), magic::SIMPLE_REPLY_LEN + 4);
        assert_eq!(&b[16..], &[0, 0, 0, 0]);
    }
}
