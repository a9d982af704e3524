//! Block status's payload form (`NBD_CMD_FLAG_PAYLOAD_LEN` with `NBD_FLAG_BLOCK_STATUS_PAYLOAD`):
//! the payload names the area of interest (its effect length) and the selected contexts to
//! answer for. Anything else about it is refused with EINVAL, the payload having been read in
//! full already (BS-PAYLOAD-REJ-1, EH-PL-2), so the next request is read from the right byte.

use super::{misuse, refuse, Refusal};
use crate::server::negotiate::Session;
use crate::wire::consts::errno;
use crate::wire::status_payload::StatusPayload;

/// The form was not offered on this connection (no bit 12): the client broke a SHOULD NOT
/// only, so EINVAL and the connection stays (EH-PL-1).
pub const NOT_OFFERED: Refusal = refuse(errno::EINVAL, "block-status payload form not offered");
/// Not 8 + 4n bytes: the client broke the form's MUST (BS-PAYLOAD-FMT-1).
pub const MALFORMED: Refusal = misuse("CMD_BLOCK_STATUS payload not valid");
/// No id at all: nothing to answer for (BS-PAYLOAD-SHAPE-1).
pub const NO_IDS: Refusal = refuse(errno::EINVAL, "block-status payload lists no context");
/// An id twice, or one that is not selected (BS-PAYLOAD-REJ-1).
pub const REPEATED_ID: Refusal = refuse(errno::EINVAL, "block-status payload repeats a context");
pub const UNKNOWN_ID: Refusal = refuse(
    errno::EINVAL,
    "block-status payload names an unselected context",
);

/// What a valid payload asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub effect_length: u64,
    /// The contexts to answer for, in the session's id order.
    pub ids: Vec<u32>,
}

/// The filter in `payload`, checked against what this session selected and was offered.
pub fn check(payload: &[u8], session: &Session) -> Result<Filter, Refusal> {
    if !session.status_payload {
        return Err(NOT_OFFERED);
    }
    let parsed = StatusPayload::decode(payload).map_err(|_| MALFORMED)?;
    if parsed.ids.is_empty() {
        return Err(NO_IDS);
    }
    if parsed.repeated_id().is_some() {
        return Err(REPEATED_ID);
    }
    if parsed.ids.iter().any(|id| !session.contexts.contains(id)) {
        return Err(UNKNOWN_ID);
    }
    let ids = session
        .contexts
        .iter()
        .copied()
        .filter(|id| parsed.ids.contains(id))
        .collect();
    Ok(Filter {
        effect_length: parsed.effect_length,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn payload(effect_length: u64, ids: &[u32]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        StatusPayload {
            effect_length,
            ids: ids.to_vec(),
        }
        .encode(&mut buf);
        buf.to_vec()
    }

    fn offered(contexts: Vec<u32>) -> Session {
        Session {
            structured: true,
            extended: true,
            contexts,
            status_payload: true,
        }
    }

    #[test]
    fn a_filter_keeps_the_session_order() {
        let s = offered(vec![0, 1, 2]);
        assert_eq!(
            check(&payload(4096, &[2, 0]), &s),
            Ok(Filter {
                effect_length: 4096,
                ids: vec![0, 2]
            })
        );
    }

    #[test]
    fn every_bad_payload_is_einval() {
        let s = offered(vec![0, 1]);
        assert_eq!(check(&payload(1, &[0, 0]), &s), Err(REPEATED_ID));
        assert_eq!(check(&payload(1, &[5]), &s), Err(UNKNOWN_ID));
        assert_eq!(check(&payload(1, &[]), &s), Err(NO_IDS));
        assert_eq!(check(&[0; 10], &s), Err(MALFORMED));
        let not_offered = Session {
            status_payload: false,
            ..s
        };
        assert_eq!(check(&payload(1, &[0]), &not_offered), Err(NOT_OFFERED));
        for r in [REPEATED_ID, UNKNOWN_ID, NO_IDS, MALFORMED, NOT_OFFERED] {
            assert_eq!(r.errno, errno::EINVAL);
        }
    }
}
