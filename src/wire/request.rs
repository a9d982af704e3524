//! Transmission requests: the compact 28-byte header and the extended 32-byte header.

use bytes::{BufMut, BytesMut};

use super::consts::magic;
use super::reader::Reader;

/// Which request header is in use on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderForm {
    Compact,
    Extended,
}

impl HeaderForm {
    pub fn header_len(self) -> usize {
        match self {
            HeaderForm::Compact => magic::COMPACT_REQUEST_LEN,
            HeaderForm::Extended => magic::EXTENDED_REQUEST_LEN,
        }
    }
}

/// A request header as it goes on the wire. Every field is free, including the magic, so that
/// cases can send frames a correct client never would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub magic: u32,
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    /// Effect length (or payload length with `PAYLOAD_LEN`). Compact headers carry only the low
    /// 32 bits: a larger value is truncated on purpose, as a malformed frame.
    pub length: u64,
}

impl Request {
    pub fn new(
        form: HeaderForm,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u64,
    ) -> Self {
        let magic = match form {
            HeaderForm::Compact => magic::REQUEST,
            HeaderForm::Extended => magic::EXTENDED_REQUEST,
        };
        Request {
            magic,
            flags,
            command,
            cookie,
            offset,
            length,
        }
    }

    pub fn encode(&self, form: HeaderForm, dst: &mut BytesMut) {
        dst.put_u32(self.magic);
        dst.put_u16(self.flags);
        dst.put_u16(self.command);
        dst.put_u64(self.cookie);
        dst.put_u64(self.offset);
        match form {
            HeaderForm::Compact => dst.put_u32(self.length as u32),
            HeaderForm::Extended => dst.put_u64(self.length),
        }
    }

    /// Decodes one header of the given form; `None` when fewer bytes than the header are given.
    /// The magic is returned as received: checking it is the caller's job.
    pub fn decode(form: HeaderForm, buf: &[u8]) -> Option<Request> {
        let mut r = Reader::new(buf);
        let magic = r.u32()?;
        let flags = r.u16()?;
        let command = r.u16()?;
        let cookie = r.u64()?;
        let offset = r.u64()?;
        let length = match form {
            HeaderForm::Compact => r.u32()? as u64,
            HeaderForm::Extended => r.u64()?,
        };
        Some(Request {
            magic,
            flags,
            command,
            cookie,
            offset,
            length,
        })
    }
}
