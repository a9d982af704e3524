//! Transmission replies: simple replies, structured (20-byte) and extended (32-byte) chunk
//! headers, and the payload of every chunk type.

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::{chunk_type, limit, magic};
use super::reader::Reader;
use super::{decode_string, Decoded, Violation};
use crate::clauses::{id, ClauseId};

/// A reply header as received, before its payload (if any) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    Simple {
        error: u32,
        cookie: u64,
    },
    Structured {
        flags: u16,
        chunk_type: u16,
        cookie: u64,
        length: u32,
    },
    Extended {
        flags: u16,
        chunk_type: u16,
        cookie: u64,
        offset: u64,
        length: u64,
    },
}

impl ReplyHeader {
    pub fn cookie(&self) -> u64 {
        match *self {
            ReplyHeader::Simple { cookie, .. }
            | ReplyHeader::Structured { cookie, .. }
            | ReplyHeader::Extended { cookie, .. } => cookie,
        }
    }

    /// Payload length the header announces (0 for simple replies, whose payload, if any,
    /// depends on the request).
    pub fn payload_len(&self) -> u64 {
        match *self {
            ReplyHeader::Simple { .. } => 0,
            ReplyHeader::Structured { length, .. } => length as u64,
            ReplyHeader::Extended { length, .. } => length,
        }
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        match *self {
            ReplyHeader::Simple { error, cookie } => {
                dst.put_u32(magic::SIMPLE_REPLY);
                dst.put_u32(error);
                dst.put_u64(cookie);
            }
            ReplyHeader::Structured {
                flags,
                chunk_type,
                cookie,
                length,
            } => {
                dst.put_u32(magic::STRUCTURED_REPLY);
                dst.put_u16(flags);
                dst.put_u16(chunk_type);
                dst.put_u64(cookie);
                dst.put_u32(length);
            }
            ReplyHeader::Extended {
                flags,
                chunk_type,
                cookie,
                offset,
                length,
            } => {
                dst.put_u32(magic::EXTENDED_REPLY);
                dst.put_u16(flags);
                dst.put_u16(chunk_type);
                dst.put_u64(cookie);
                dst.put_u64(offset);
                dst.put_u64(length);
            }
        }
    }
}

/// Result of looking for a reply header at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderScan {
    /// This many bytes in total are needed before the header can be decoded.
    NeedMore(usize),
    /// A header and the number of bytes it used.
    Header(ReplyHeader, usize),
    /// The first four bytes are no reply magic: the stream is out of sync.
    BadMagic(u32),
}

/// The cheap "is a whole header buffered?" check and the parse, in one.
pub fn scan_reply_header(buf: &[u8]) -> HeaderScan {
    let mut r = Reader::new(buf);
    let Some(m) = r.u32() else {
        return HeaderScan::NeedMore(4);
    };
    let need = match m {
        magic::SIMPLE_REPLY => magic::SIMPLE_REPLY_LEN,
        magic::STRUCTURED_REPLY => magic::STRUCTURED_REPLY_LEN,
        magic::EXTENDED_REPLY => magic::EXTENDED_REPLY_LEN,
        other => return HeaderScan::BadMagic(other),
    };
    if buf.len() < need {
        return HeaderScan::NeedMore(need);
    }
    // The length check above makes every read below succeed; the fallbacks are unreachable
    // but keep this function free of panics.
    let header = match m {
        magic::SIMPLE_REPLY => ReplyHeader::Simple {
            error: r.u32().unwrap_or_default(),
            cookie: r.u64().unwrap_or_default(),
        },
        magic::STRUCTURED_REPLY => ReplyHeader::Structured {
            flags: r.u16().unwrap_or_default(),
            chunk_type: r.u16().unwrap_or_default(),
            cookie: r.u64().unwrap_or_default(),
            length: r.u32().unwrap_or_default(),
        },
        _ => ReplyHeader::Extended {
            flags: r.u16().unwrap_or_default(),
            chunk_type: r.u16().unwrap_or_default(),
            cookie: r.u64().unwrap_or_default(),
            offset: r.u64().unwrap_or_default(),
            length: r.u64().unwrap_or_default(),
        },
    };
    HeaderScan::Header(header, need)
}

/// One extent of a block-status chunk. Compact descriptors are widened to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Descriptor {
    pub length: u64,
    pub flags: u64,
}

/// The payload of one chunk, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkBody {
    None,
    OffsetData {
        offset: u64,
        data: Bytes,
    },
    OffsetHole {
        offset: u64,
        length: u32,
    },
    BlockStatus {
        context_id: u32,
        descriptors: Vec<Descriptor>,
    },
    BlockStatusExt {
        context_id: u32,
        count: u32,
        descriptors: Vec<Descriptor>,
    },
    Error {
        chunk_type: u16,
        error: u32,
        message: String,
        offset: Option<u64>,
    },
    /// A chunk type this decoder does not know (or a known one too short to decode).
    Unknown {
        chunk_type: u16,
        length: usize,
    },
}

impl ChunkBody {
    pub fn chunk_type(&self) -> u16 {
        match self {
            ChunkBody::None => chunk_type::NONE,
            ChunkBody::OffsetData { .. } => chunk_type::OFFSET_DATA,
            ChunkBody::OffsetHole { .. } => chunk_type::OFFSET_HOLE,
            ChunkBody::BlockStatus { .. } => chunk_type::BLOCK_STATUS,
            ChunkBody::BlockStatusExt { .. } => chunk_type::BLOCK_STATUS_EXT,
            ChunkBody::Error { chunk_type, .. } | ChunkBody::Unknown { chunk_type, .. } => {
                *chunk_type
            }
        }
    }

    /// The (context id, descriptors) of a block-status chunk, compact or extended.
    pub fn block_status(&self) -> Option<(u32, &[Descriptor])> {
        match self {
            ChunkBody::BlockStatus {
                context_id,
                descriptors,
            }
            | ChunkBody::BlockStatusExt {
                context_id,
                descriptors,
                ..
            } => Some((*context_id, descriptors.as_slice())),
            _ => None,
        }
    }

    /// Writes the payload (not the header).
    pub fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            ChunkBody::None | ChunkBody::Unknown { .. } => {}
            ChunkBody::OffsetData { offset, data } => {
                dst.put_u64(*offset);
                dst.put_slice(data);
            }
            ChunkBody::OffsetHole { offset, length } => {
                dst.put_u64(*offset);
                dst.put_u32(*length);
            }
            ChunkBody::BlockStatus {
                context_id,
                descriptors,
            } => {
                dst.put_u32(*context_id);
                for d in descriptors {
                    dst.put_u32(d.length as u32);
                    dst.put_u32(d.flags as u32);
                }
            }
            ChunkBody::BlockStatusExt {
                context_id,
                count,
                descriptors,
            } => {
                dst.put_u32(*context_id);
                dst.put_u32(*count);
                for d in descriptors {
                    dst.put_u64(d.length);
                    dst.put_u64(d.flags);
                }
            }
            ChunkBody::Error {
                error,
                message,
                offset,
                ..
            } => {
                dst.put_u32(*error);
                dst.put_u16(message.len() as u16);
                dst.put_slice(message.as_bytes());
                if let Some(o) = offset {
                    dst.put_u64(*o);
                }
            }
        }
    }

    /// Decodes a chunk payload leniently. Never panics; allocates at most in proportion to
    /// `payload.len()`.
    pub fn decode(kind: u16, payload: &[u8]) -> Decoded<ChunkBody> {
        let mut v = Vec::new();
        let body = match kind {
            chunk_type::NONE => {
                if !payload.is_empty() {
                    v.push(Violation::new(
                        id::CHUNK_NONE_1,
                        format!("NONE chunk has length {}, not 0", payload.len()),
                    ));
                }
                ChunkBody::None
            }
            chunk_type::OFFSET_DATA => decode_offset_data(payload, &mut v),
            chunk_type::OFFSET_HOLE => decode_offset_hole(payload, &mut v),
            chunk_type::BLOCK_STATUS => decode_block_status(payload, &mut v),
            chunk_type::BLOCK_STATUS_EXT => decode_block_status_ext(payload, &mut v),
            chunk_type::ERROR | chunk_type::ERROR_OFFSET => decode_error(kind, payload, &mut v),
            other if other & chunk_type::ERROR_BIT != 0 => decode_error(kind, payload, &mut v),
            other => ChunkBody::Unknown {
                chunk_type: other,
                length: payload.len(),
            },
        };
        Decoded {
            value: body,
            violations: v,
        }
    }
}

fn decode_offset_data(payload: &[u8], v: &mut Vec<Violation>) -> ChunkBody {
    let mut r = Reader::new(payload);
    match r.u64() {
        Some(offset) if payload.len() > 8 => ChunkBody::OffsetData {
            offset,
            data: Bytes::copy_from_slice(r.rest()),
        },
        _ => {
            v.push(Violation::new(
                id::CHUNK_INCONS_1,
                format!("OFFSET_DATA chunk has length {}, below 9", payload.len()),
            ));
            ChunkBody::Unknown {
                chunk_type: chunk_type::OFFSET_DATA,
                length: payload.len(),
            }
        }
    }
}

fn decode_offset_hole(payload: &[u8], v: &mut Vec<Violation>) -> ChunkBody {
    let mut r = Reader::new(payload);
    match (payload.len(), r.u64(), r.u32()) {
        (12, Some(offset), Some(length)) => ChunkBody::OffsetHole { offset, length },
        _ => {
            v.push(Violation::new(
                id::CHUNK_INCONS_1,
                format!("OFFSET_HOLE chunk has length {}, not 12", payload.len()),
            ));
            ChunkBody::Unknown {
                chunk_type: chunk_type::OFFSET_HOLE,
                length: payload.len(),
            }
        }
    }
}

fn decode_block_status(payload: &[u8], v: &mut Vec<Violation>) -> ChunkBody {
    let mut r = Reader::new(payload);
    let Some(context_id) = r.u32() else {
        v.push(Violation::new(
            id::BS_REP_LEN_1,
            format!(
                "BLOCK_STATUS chunk has length {}, too short for a context id",
                payload.len()
            ),
        ));
        return ChunkBody::Unknown {
            chunk_type: chunk_type::BLOCK_STATUS,
            length: payload.len(),
        };
    };
    let body = payload.len() - 4;
    if body == 0 || body % 8 != 0 {
        v.push(Violation::new(
            id::BS_REP_LEN_1,
            format!(
                "BLOCK_STATUS chunk length {} is not 4 + a positive multiple of 8",
                payload.len()
            ),
        ));
    }
    let mut descriptors = Vec::with_capacity(body / 8);
    while let (Some(length), Some(flags)) = (r.u32(), r.u32()) {
        descriptors.push(Descriptor {
            length: length as u64,
            flags: flags as u64,
        });
    }
    check_descriptors(&descriptors, id::BS_REP_NZ_1, v);
    ChunkBody::BlockStatus {
        context_id,
        descriptors,
    }
}

fn decode_block_status_ext(payload: &[u8], v: &mut Vec<Violation>) -> ChunkBody {
    let mut r = Reader::new(payload);
    let (Some(context_id), Some(count)) = (r.u32(), r.u32()) else {
        v.push(Violation::new(
            id::BS_EXT_LEN_1,
            format!(
                "BLOCK_STATUS_EXT chunk has length {}, below 8",
                payload.len()
            ),
        ));
        return ChunkBody::Unknown {
            chunk_type: chunk_type::BLOCK_STATUS_EXT,
            length: payload.len(),
        };
    };
    let body = payload.len() - 8;
    if body == 0 || body % 16 != 0 {
        v.push(Violation::new(
            id::BS_EXT_LEN_1,
            format!(
                "BLOCK_STATUS_EXT chunk length {} is not 8 + a positive multiple of 16",
                payload.len()
            ),
        ));
    }
    let mut descriptors = Vec::with_capacity(body / 16);
    while let (Some(length), Some(flags)) = (r.u64(), r.u64()) {
        descriptors.push(Descriptor { length, flags });
    }
    if count == 0 || count as usize != descriptors.len() {
        v.push(Violation::new(
            id::BS_EXT_COUNT_1,
            format!(
                "BLOCK_STATUS_EXT count field says {count}, payload holds {} descriptors",
                descriptors.len()
            ),
        ));
    }
    check_descriptors(&descriptors, id::BS_EXT_NZ_1, v);
    ChunkBody::BlockStatusExt {
        context_id,
        count,
        descriptors,
    }
}

fn check_descriptors(descriptors: &[Descriptor], zero_clause: ClauseId, v: &mut Vec<Violation>) {
    if let Some(i) = descriptors.iter().position(|d| d.length == 0) {
        v.push(Violation::new(
            zero_clause,
            format!("descriptor {i} has length 0"),
        ));
    }
    if descriptors.len() > limit::MAX_DESCRIPTORS_PER_CHUNK {
        v.push(Violation::new(
            id::BS_REP_CAP_1,
            format!("{} descriptors in one chunk, over 2^20", descriptors.len()),
        ));
    }
}

fn decode_error(kind: u16, payload: &[u8], v: &mut Vec<Violation>) -> ChunkBody {
    let with_offset = kind == chunk_type::ERROR_OFFSET;
    let (clause, fixed) = if with_offset {
        (id::ERRCHUNK_OFF_1, 14)
    } else {
        (id::ERRCHUNK_ERR_1, 6)
    };
    let mut r = Reader::new(payload);
    let (Some(error), Some(msg_len)) = (r.u32(), r.u16()) else {
        v.push(Violation::new(
            clause,
            format!(
                "{} chunk has length {}, below {fixed}",
                chunk_type::name(kind),
                payload.len()
            ),
        ));
        return ChunkBody::Unknown {
            chunk_type: kind,
            length: payload.len(),
        };
    };
    if error == 0 {
        v.push(Violation::new(
            id::ERRCHUNK_NONZERO_1,
            "error chunk carries error value 0",
        ));
    }
    let room = payload.len().saturating_sub(fixed);
    if payload.len() < fixed || msg_len as usize > room {
        v.push(Violation::new(
            clause,
            format!(
                "message length {msg_len} overruns the {}-byte {} chunk",
                payload.len(),
                chunk_type::name(kind)
            ),
        ));
    } else if (kind == chunk_type::ERROR || with_offset) && msg_len as usize != room {
        // The two defined error chunks have no room for anything else; unknown error types may.
        v.push(Violation::new(
            clause,
            format!(
                "{} stray bytes in the {} chunk",
                room - msg_len as usize,
                chunk_type::name(kind)
            ),
        ));
    }
    let take = (msg_len as usize).min(r.remaining().saturating_sub(fixed - 6));
    let message = decode_string(r.take(take).unwrap_or_default(), "error message", v);
    let offset = if with_offset { r.u64() } else { None };
    ChunkBody::Error {
        chunk_type: kind,
        error,
        message,
        offset,
    }
}

/// Writes a whole chunk (header and payload) in the header form of the connection.
pub fn encode_chunk(
    dst: &mut BytesMut,
    extended: bool,
    flags: u16,
    cookie: u64,
    offset: u64,
    body: &ChunkBody,
) {
    let mut payload = BytesMut::new();
    body.encode_payload(&mut payload);
    let header = if extended {
        ReplyHeader::Extended {
            flags,
            chunk_type: body.chunk_type(),
            cookie,
            offset,
            length: payload.len() as u64,
        }
    } else {
        ReplyHeader::Structured {
            flags,
            chunk_type: body.chunk_type(),
            cookie,
            length: payload.len() as u32,
        }
    };
    header.encode(dst);
    dst.put_slice(&payload);
}
