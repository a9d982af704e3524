//! The payload of a filtered `NBD_CMD_BLOCK_STATUS` (`NBD_CMD_FLAG_PAYLOAD_LEN` under extended
//! headers, offered with `NBD_FLAG_BLOCK_STATUS_PAYLOAD`): a 64-bit effect length, then the
//! 32-bit ids of the contexts the client wants answers for (BS-PAYLOAD-FMT-1). The request
//! header's length is then the payload's length, not the area of interest.

use bytes::{BufMut, BytesMut};

use super::reader::Reader;

/// Bytes before the first id: the 64-bit effect length.
pub const EFFECT_LEN: usize = 8;

/// A block-status payload as it goes on the wire. Any list is encoded as given (repeated ids,
/// ids no context has, none at all), so that cases can send what a correct client never would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPayload {
    pub effect_length: u64,
    pub ids: Vec<u32>,
}

/// Why bytes are not a block-status payload: the form is 8 + 4·n bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadShape {
    #[error("{0} bytes: shorter than the 8-byte effect length")]
    Short(usize),
    #[error("{0} bytes: the ids after the effect length are not whole 32-bit values")]
    Ragged(usize),
}

impl StatusPayload {
    /// The payload's length: what the request header's length field carries.
    pub fn wire_len(&self) -> usize {
        EFFECT_LEN + 4 * self.ids.len()
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.effect_length);
        for id in &self.ids {
            dst.put_u32(*id);
        }
    }

    /// Decodes a whole payload. An empty id list decodes (its meaning is for the caller); a
    /// length that is not 8 + 4·n does not. Allocates no more ids than `buf` holds.
    pub fn decode(buf: &[u8]) -> Result<StatusPayload, PayloadShape> {
        if buf.len() < EFFECT_LEN {
            return Err(PayloadShape::Short(buf.len()));
        }
        if (buf.len() - EFFECT_LEN) % 4 != 0 {
            return Err(PayloadShape::Ragged(buf.len()));
        }
        let mut r = Reader::new(buf);
        let effect_length = r.u64().ok_or(PayloadShape::Short(buf.len()))?;
        let mut ids = Vec::with_capacity(r.remaining() / 4);
        while let Some(id) = r.u32() {
            ids.push(id);
        }
        Ok(StatusPayload { effect_length, ids })
    }

    /// The first id listed twice, if any.
    pub fn repeated_id(&self) -> Option<u32> {
        let mut seen = std::collections::HashSet::new();
        self.ids.iter().copied().find(|id| !seen.insert(*id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let p = StatusPayload {
            effect_length: 0x1_0000_0001,
            ids: vec![0, 7, 7],
        };
        let mut buf = BytesMut::new();
        p.encode(&mut buf);
        assert_eq!(buf.len(), p.wire_len());
        assert_eq!(&buf[..8], &[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(&buf[8..12], &[0, 0, 0, 0]);
        assert_eq!(StatusPayload::decode(&buf), Ok(p.clone()));
        assert_eq!(p.repeated_id(), Some(7));
    }

    #[test]
    fn shapes_that_are_not_a_payload() {
        assert_eq!(StatusPayload::decode(&[0; 7]), Err(PayloadShape::Short(7)));
        assert_eq!(
            StatusPayload::decode(&[0; 10]),
            Err(PayloadShape::Ragged(10))
        );
        let empty = StatusPayload::decode(&[0; 8]).unwrap();
        assert!(empty.ids.is_empty());
        assert_eq!(empty.repeated_id(), None);
    }
}
