//! The payload of a `block-status` step in the payload form: the case's context names resolved
//! to the ids this server handed out, a deliberately unknown id, raw bytes, or a payload padded
//! past the maximum.

use super::Run;
use crate::engine::case::{PayloadContext, StatusPayloadSpec};
use crate::engine::run::Stop;
use crate::wire::consts::limit;
use crate::wire::status_payload::StatusPayload;

/// The largest payload an `oversize` step sends: past that the maximum it has to exceed is too
/// large to be worth the bytes, and the case does not apply.
const OVERSIZE_CAP: u64 = 64 << 20;

/// Where a deliberately unknown id is looked for: far above any id a server hands out in order.
const UNKNOWN_BASE: u32 = 0x7fff_0000;

impl Run<'_> {
    /// The payload bytes for `spec` with `effect_length` as the area of interest.
    pub(super) fn status_payload(
        &mut self,
        spec: &StatusPayloadSpec,
        effect_length: u64,
    ) -> Result<Vec<u8>, Stop> {
        let neg = self.negotiated()?;
        if let Some(raw) = &spec.raw_hex {
            return raw.bytes(&neg.export).map_err(Stop::Error);
        }
        let selected: Vec<u32> = neg.contexts.iter().map(|(id, _)| *id).collect();
        let unknown = (UNKNOWN_BASE..)
            .find(|id| !selected.contains(id))
            .ok_or_else(|| Stop::Error("no unknown context id left".into()))?;
        let ids = spec
            .contexts
            .iter()
            .map(|c| match c {
                PayloadContext::Unknown => Ok(unknown),
                PayloadContext::Name(name) => neg
                    .contexts
                    .iter()
                    .find(|(_, n)| n == name)
                    .map(|(id, _)| *id)
                    .ok_or_else(|| {
                        Stop::Unsupported(format!("the server did not select {name:?}"))
                    }),
            })
            .collect::<Result<Vec<u32>, Stop>>()?;
        let payload = StatusPayload { effect_length, ids };
        let mut buf = bytes::BytesMut::new();
        payload.encode(&mut buf);
        if spec.oversize {
            let max = neg
                .block_sizes
                .map_or(limit::MAX_IO_PAYLOAD as u64, |b| u64::from(b.maximum));
            // Just past the maximum, still 8 + 4n bytes, so that only the size is wrong.
            let len = (max + 1).max(buf.len() as u64).next_multiple_of(4);
            if len > OVERSIZE_CAP {
                return Err(Stop::Unsupported(format!(
                    "the advertised maximum payload {max} is too large to send more than"
                )));
            }
            buf.resize(len as usize, 0);
        }
        Ok(buf.to_vec())
    }
}
