//! Newstyle negotiation: the greeting, client flags, options and option replies.
//!
//! Both directions are here because the client and the reference server share them: the client
//! encodes options and decodes replies, the server does the opposite.

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::{info, magic, reply_type};
use super::reader::Reader;
use super::{decode_string, Decoded, Violation};
use crate::clauses::id;

/// The 18-byte newstyle greeting, as received (magics kept raw so they can be graded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    pub nbd_magic: u64,
    pub option_magic: u64,
    pub flags: u16,
}

impl Greeting {
    pub fn new(flags: u16) -> Self {
        Greeting {
            nbd_magic: magic::NBDMAGIC,
            option_magic: magic::IHAVEOPT,
            flags,
        }
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.nbd_magic);
        dst.put_u64(self.option_magic);
        dst.put_u16(self.flags);
    }

    /// Decodes exactly [`magic::GREETING_LEN`] bytes; `None` when fewer are given.
    pub fn decode(buf: &[u8]) -> Option<Decoded<Greeting>> {
        let mut r = Reader::new(buf);
        let greeting = Greeting {
            nbd_magic: r.u64()?,
            option_magic: r.u64()?,
            flags: r.u16()?,
        };
        let mut violations = Vec::new();
        if greeting.nbd_magic != magic::NBDMAGIC {
            violations.push(Violation::new(
                id::HS_GREET_1,
                format!(
                    "greeting starts with {:#018x}, not NBDMAGIC",
                    greeting.nbd_magic
                ),
            ));
        }
        if greeting.option_magic != magic::IHAVEOPT {
            violations.push(Violation::new(
                id::HS_GREET_1,
                format!(
                    "second greeting word is {:#018x}, not IHAVEOPT (oldstyle server?)",
                    greeting.option_magic
                ),
            ));
        }
        if greeting.flags & !0x3 != 0 {
            violations.push(Violation::new(
                id::HS_HFLAGS_1,
                format!("handshake flags {:#06x} set undefined bits", greeting.flags),
            ));
        }
        Some(Decoded {
            value: greeting,
            violations,
        })
    }
}

/// The header of an option the client sends: magic, option number, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub magic: u64,
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    pub fn decode(buf: &[u8]) -> Option<OptionHeader> {
        let mut r = Reader::new(buf);
        Some(OptionHeader {
            magic: r.u64()?,
            option: r.u32()?,
            length: r.u32()?,
        })
    }
}

/// Writes a well-formed option.
pub fn encode_option(dst: &mut BytesMut, option: u32, data: &[u8]) {
    encode_option_raw(dst, magic::IHAVEOPT, option, data.len() as u32, data);
}

/// Writes an option with any magic and any claimed length, for malformed-frame cases.
pub fn encode_option_raw(dst: &mut BytesMut, magic: u64, option: u32, claimed: u32, data: &[u8]) {
    dst.put_u64(magic);
    dst.put_u32(option);
    dst.put_u32(claimed);
    dst.put_slice(data);
}

/// The header of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub magic: u64,
    pub option: u32,
    pub reply_type: u32,
    pub length: u32,
}

impl OptionReplyHeader {
    pub fn decode(buf: &[u8]) -> Option<OptionReplyHeader> {
        let mut r = Reader::new(buf);
        Some(OptionReplyHeader {
            magic: r.u64()?,
            option: r.u32()?,
            reply_type: r.u32()?,
            length: r.u32()?,
        })
    }

    pub fn is_error(&self) -> bool {
        self.reply_type & reply_type::ERROR_BIT != 0
    }
}

pub fn encode_option_reply(dst: &mut BytesMut, option: u32, reply: u32, data: &[u8]) {
    dst.put_u64(magic::OPTION_REPLY);
    dst.put_u32(option);
    dst.put_u32(reply);
    dst.put_u32(data.len() as u32);
    dst.put_slice(data);
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: name length, name, request count, info types.
pub fn info_request_payload(export: &str, requests: &[u16]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(export.len() as u32);
    b.put_slice(export.as_bytes());
    b.put_u16(requests.len() as u16);
    for r in requests {
        b.put_u16(*r);
    }
    b.freeze()
}

/// Payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
pub fn meta_context_payload(export: &str, queries: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(export.len() as u32);
    b.put_slice(export.as_bytes());
    b.put_u32(queries.len() as u32);
    for q in queries {
        b.put_u32(q.len() as u32);
        b.put_slice(q.as_bytes());
    }
    b.freeze()
}

/// Why a client's option payload could not be parsed (the server answers `ERR_INVALID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedOption {
    #[error("name length {0} runs past the option payload")]
    NameOverrun(u32),
    #[error("option payload ends early")]
    Truncated,
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    #[error("string is not valid: {0}")]
    BadString(String),
}

fn take_name<'a>(r: &mut Reader<'a>) -> Result<&'a str, MalformedOption> {
    let len = r.u32().ok_or(MalformedOption::Truncated)?;
    let bytes = r
        .take(len as usize)
        .ok_or(MalformedOption::NameOverrun(len))?;
    let s =
        std::str::from_utf8(bytes).map_err(|_| MalformedOption::BadString("not UTF-8".into()))?;
    if s.contains('\0') || s.len() > super::consts::limit::MAX_STRING {
        return Err(MalformedOption::BadString("NUL or over 4096 bytes".into()));
    }
    Ok(s)
}

/// Server side: parse an INFO/GO payload into (export name, requested info types).
pub fn parse_info_request(data: &[u8]) -> Result<(String, Vec<u16>), MalformedOption> {
    let mut r = Reader::new(data);
    let name = take_name(&mut r)?.to_owned();
    let count = r.u16().ok_or(MalformedOption::Truncated)?;
    let mut requests = Vec::with_capacity((count as usize).min(r.remaining() / 2));
    for _ in 0..count {
        requests.push(r.u16().ok_or(MalformedOption::Truncated)?);
    }
    if r.remaining() != 0 {
        return Err(MalformedOption::Trailing(r.remaining()));
    }
    Ok((name, requests))
}

/// Server side: parse a LIST/SET_META_CONTEXT payload into (export name, queries).
pub fn parse_meta_context_request(data: &[u8]) -> Result<(String, Vec<String>), MalformedOption> {
    let mut r = Reader::new(data);
    let name = take_name(&mut r)?.to_owned();
    let count = r.u32().ok_or(MalformedOption::Truncated)?;
    let mut queries = Vec::with_capacity((count as usize).min(r.remaining() / 4));
    for _ in 0..count {
        queries.push(take_name(&mut r)?.to_owned());
    }
    if r.remaining() != 0 {
        return Err(MalformedOption::Trailing(r.remaining()));
    }
    Ok((name, queries))
}

/// One `NBD_REP_INFO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    Export { size: u64, flags: u16 },
    Name(String),
    Description(String),
    BlockSize(BlockSizes),
    Unknown(u16),
}

/// The three numbers of `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlockSizes {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

impl Info {
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Info::Export { size, flags } => {
                dst.put_u16(info::EXPORT);
                dst.put_u64(*size);
                dst.put_u16(*flags);
            }
            Info::Name(s) => {
                dst.put_u16(info::NAME);
                dst.put_slice(s.as_bytes());
            }
            Info::Description(s) => {
                dst.put_u16(info::DESCRIPTION);
                dst.put_slice(s.as_bytes());
            }
            Info::BlockSize(b) => {
                dst.put_u16(info::BLOCK_SIZE);
                dst.put_u32(b.minimum);
                dst.put_u32(b.preferred);
                dst.put_u32(b.maximum);
            }
            Info::Unknown(t) => dst.put_u16(*t),
        }
    }

    /// Decodes an `NBD_REP_INFO` payload; `None` when it is too short for its type field, or for
    /// the fixed fields of `NBD_INFO_EXPORT` / `NBD_INFO_BLOCK_SIZE`.
    pub fn decode(data: &[u8]) -> Option<Decoded<Info>> {
        let mut r = Reader::new(data);
        let kind = r.u16()?;
        let mut violations = Vec::new();
        let value = match kind {
            info::EXPORT => {
                if data.len() != 12 {
                    violations.push(Violation::new(
                        id::GO_EXPORT_1,
                        format!("NBD_INFO_EXPORT has length {}, not 12", data.len()),
                    ));
                }
                match (r.u64(), r.u16()) {
                    (Some(size), Some(flags)) => Info::Export { size, flags },
                    _ => return None,
                }
            }
            info::NAME | info::DESCRIPTION => {
                let s = decode_string(r.rest(), "info string", &mut violations);
                if kind == info::NAME {
                    Info::Name(s)
                } else {
                    Info::Description(s)
                }
            }
            info::BLOCK_SIZE => {
                if data.len() != 14 {
                    violations.push(Violation::new(
                        id::GO_BLKSZ_1,
                        format!("NBD_INFO_BLOCK_SIZE has length {}, not 14", data.len()),
                    ));
                }
                match (r.u32(), r.u32(), r.u32()) {
                    (Some(minimum), Some(preferred), Some(maximum)) => {
                        Info::BlockSize(BlockSizes {
                            minimum,
                            preferred,
                            maximum,
                        })
                    }
                    _ => return None,
                }
            }
            other => Info::Unknown(other),
        };
        Some(Decoded { value, violations })
    }
}

/// Payload of `NBD_REP_META_CONTEXT`: context id and name.
pub fn encode_meta_context_reply(dst: &mut BytesMut, id: u32, name: &str) {
    dst.put_u32(id);
    dst.put_slice(name.as_bytes());
}

pub fn decode_meta_context_reply(data: &[u8]) -> Option<Decoded<(u32, String)>> {
    let mut r = Reader::new(data);
    let id = r.u32()?;
    let mut violations = Vec::new();
    let name = decode_string(r.rest(), "context name", &mut violations);
    match name.split_once(':') {
        Some((ns, _)) if !ns.is_empty() && !ns.chars().any(char::is_whitespace) => {}
        _ => violations.push(Violation::new(
            id::MC_NAME_1,
            format!("context name {name:?} is not namespace:leaf"),
        )),
    }
    Some(Decoded {
        value: (id, name),
        violations,
    })
}

/// Payload of `NBD_REP_SERVER` (an `NBD_OPT_LIST` entry): name length, name, description.
pub fn encode_server_reply(dst: &mut BytesMut, name: &str, description: &str) {
    dst.put_u32(name.len() as u32);
    dst.put_slice(name.as_bytes());
    dst.put_slice(description.as_bytes());
}

pub fn decode_server_reply(data: &[u8]) -> Option<Decoded<(String, String)>> {
    let mut r = Reader::new(data);
    let len = r.u32()?;
    let name = r.take(len as usize)?;
    let mut violations = Vec::new();
    let name = decode_string(name, "export name", &mut violations);
    let description = decode_string(r.rest(), "export description", &mut violations);
    Some(Decoded {
        value: (name, description),
        violations,
    })
}

/// What `NBD_OPT_EXPORT_NAME` returns on success: size, flags, and optionally 124 zero bytes.
pub fn encode_export_name_reply(dst: &mut BytesMut, size: u64, flags: u16, zero_pad: bool) {
    dst.put_u64(size);
    dst.put_u16(flags);
    if zero_pad {
        dst.put_bytes(0, magic::EXPORT_NAME_PADDING);
    }
}
