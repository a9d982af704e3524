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

/// A length a compact (28-byte) request header cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("length {0} does not fit the 32-bit length of a compact request header")]
pub struct LengthTooLong(pub u64);

/// A request header as it goes on the wire. Every field is free, including the magic, so that
/// cases can send frames a correct client never would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub magic: u32,
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    /// Effect length (or payload length with `PAYLOAD_LEN`). A compact header carries 32 bits:
    /// a larger value cannot be encoded in it ([`Request::encode`] refuses), so a case never
    /// sends a length other than the one its transcript shows.
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

    /// Appends the header. Every field goes out as given, except a length that the compact
    /// header has no room for: that is refused, leaving `dst` untouched, rather than cut to
    /// its low 32 bits (8 GiB would go out as 0).
    pub fn encode(&self, form: HeaderForm, dst: &mut BytesMut) -> Result<(), LengthTooLong> {
        let compact_length = match form {
            HeaderForm::Compact => {
                Some(u32::try_from(self.length).map_err(|_| LengthTooLong(self.length))?)
            }
            HeaderForm::Extended => None,
        };
        dst.put_u32(self.magic);
        dst.put_u16(self.flags);
        dst.put_u16(self.command);
        dst.put_u64(self.cookie);
        dst.put_u64(self.offset);
        match compact_length {
            Some(length) => dst.put_u32(length),
            None => dst.put_u64(self.length),
        }
        Ok(())
    }

    /// The longest compact length that keeps to the minimum block size: 4 GiB less one block
    /// (at least 4 KiB, so that no server's 0xffffffff corner is hit by a request not about
    /// it). The one place the harness's longest compact request is decided.
    pub fn compact_max(minimum: u64) -> u64 {
        (1u64 << 32) - minimum.clamp(4096, 1 << 16)
    }

    /// Whether `length` can travel in a header of this form.
    pub fn length_fits(form: HeaderForm, length: u64) -> bool {
        form == HeaderForm::Extended || u32::try_from(length).is_ok()
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
