//! The 2016 `NBD_CMD_GET_LBA_STATUS` draft reply: a simple reply header, then (on success, and
//! optionally on error) a 32-bit parameter length P and P bytes of 14-byte descriptors.

use bytes::{BufMut, BytesMut};

use super::consts::draft;
use super::reader::Reader;
use super::{Decoded, Violation};
use crate::clauses::id;

/// One draft descriptor: absolute offset, 32-bit length, 16-bit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DraftDescriptor {
    pub offset: u64,
    pub length: u32,
    pub status: u16,
}

/// Which query a draft request carries in its flags field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftQuery {
    Allocated,
    Dirty,
    /// Any other selector value: the server must answer with the fallback descriptor.
    Other(u16),
}

impl DraftQuery {
    pub fn from_selector(selector: u16) -> Self {
        match selector {
            draft::SELECT_ALLOCATED => DraftQuery::Allocated,
            draft::SELECT_DIRTY => DraftQuery::Dirty,
            other => DraftQuery::Other(other),
        }
    }

    pub fn selector(self) -> u16 {
        match self {
            DraftQuery::Allocated => draft::SELECT_ALLOCATED,
            DraftQuery::Dirty => draft::SELECT_DIRTY,
            DraftQuery::Other(s) => s,
        }
    }

    /// The pseudo context name under which this query's stream is reported.
    pub fn context_name(self) -> String {
        match self {
            DraftQuery::Allocated => draft::CONTEXT_ALLOCATED.to_owned(),
            DraftQuery::Dirty => draft::CONTEXT_DIRTY.to_owned(),
            DraftQuery::Other(s) => format!("draft:selector-{s}"),
        }
    }

    /// Status values the draft defines for this query.
    pub fn defines(self, status: u16) -> bool {
        match self {
            DraftQuery::Allocated => status <= draft::STATE_DEALLOCATED,
            DraftQuery::Dirty => status <= draft::STATE_DIRTY_DEALLOCATED,
            DraftQuery::Other(_) => status == 0,
        }
    }
}

/// Writes P and the descriptors (the part after the simple reply header).
pub fn encode_descriptors(dst: &mut BytesMut, descriptors: &[DraftDescriptor]) {
    dst.put_u32((descriptors.len() * draft::DESCRIPTOR_LEN) as u32);
    for d in descriptors {
        dst.put_u64(d.offset);
        dst.put_u32(d.length);
        dst.put_u16(d.status);
    }
}

/// Decodes the P bytes that follow the parameter length. A trailing partial descriptor is
/// reported (DRAFT-DESC-LEN-1) and dropped.
pub fn decode_descriptors(params: &[u8]) -> Decoded<Vec<DraftDescriptor>> {
    let mut violations = Vec::new();
    if params.len() % draft::DESCRIPTOR_LEN != 0 {
        violations.push(Violation::new(
            id::DRAFT_DESC_LEN_1,
            format!("parameter length {} is not a multiple of 14", params.len()),
        ));
    }
    let mut r = Reader::new(params);
    let mut out = Vec::with_capacity(params.len() / draft::DESCRIPTOR_LEN);
    while let (Some(offset), Some(length), Some(status)) = (r.u64(), r.u32(), r.u16()) {
        out.push(DraftDescriptor {
            offset,
            length,
            status,
        });
    }
    Decoded {
        value: out,
        violations,
    }
}
