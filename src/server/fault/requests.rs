//! What faults change in request checking: a request the clean checks refuse may be answered
//! (`success-past-end`, `payload-ids-unchecked`), one they accept may be refused
//! (`draft-no-fallback`) or answered otherwise (`filter-ignored`, `payload-length-as-effect`,
//! `draft-selector-bitmask`).

use super::{Fault, Faults};
use crate::server::export::Export;
use crate::server::plan::filter::{REPEATED_ID, UNKNOWN_ID};
use crate::server::plan::{refuse, Command, Refusal, PAST_END};
use crate::wire::consts::{command as cmd, command_flag as flag, draft, errno};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;
use crate::wire::status_payload::StatusPayload;

impl Faults {
    /// The verdict on `req` (which carried `payload`) as the server will act on it, where
    /// `planned` is the clean checks' verdict on it against `export`.
    pub fn review(
        &self,
        req: &Request,
        payload: &[u8],
        export: &Export,
        planned: Result<Command, Refusal>,
    ) -> Result<Command, Refusal> {
        // The draft's GET_LBA_STATUS has BLOCK_STATUS's number.
        let block_status = !export.is_draft() && req.command == cmd::BLOCK_STATUS;
        let req_one = req.flags & flag::REQ_ONE != 0;
        match planned {
            Err(PAST_END) if block_status => {
                match self.answer_past_end(req.offset, req.length, export.size()) {
                    Some(length) => Ok(Command::BlockStatus {
                        offset: req.offset,
                        length,
                        req_one,
                        only: None,
                    }),
                    None => Err(PAST_END),
                }
            }
            Ok(Command::BlockStatus {
                only: Some(_),
                offset,
                length,
                req_one,
            }) if self.has(Fault::FilterIgnored) => Ok(Command::BlockStatus {
                offset,
                length,
                req_one,
                only: None,
            }),
            Ok(Command::BlockStatus {
                only: Some(only),
                offset,
                ..
            }) if self.has(Fault::PayloadLengthAsEffect) => {
                within(offset, req.length, export)?;
                Ok(Command::BlockStatus {
                    offset,
                    length: req.length,
                    req_one,
                    only: Some(only),
                })
            }
            Err(REPEATED_ID | UNKNOWN_ID)
                if block_status && self.has(Fault::PayloadIdsUnchecked) =>
            {
                let parsed = StatusPayload::decode(payload).map_err(|_| UNKNOWN_ID)?;
                within(req.offset, parsed.effect_length, export)?;
                let mut ids = parsed.ids;
                ids.sort_unstable();
                ids.dedup();
                Ok(Command::BlockStatus {
                    offset: req.offset,
                    length: parsed.effect_length,
                    req_one,
                    only: Some(ids),
                })
            }
            // The clean server answers a query it cannot express with the fallback descriptor.
            Ok(Command::LbaStatus {
                query: DraftQuery::Other(_),
                ..
            }) if self.has(Fault::DraftNoFallback) => {
                Err(refuse(errno::EINVAL, "unknown query type"))
            }
            // `draft-selector-bitmask`: bit 0 read as "dirty" whatever else is set, as a
            // server that took the selector for today's bitmask of flags would.
            Ok(Command::LbaStatus {
                query: DraftQuery::Other(selector),
                offset,
                length,
            }) if self.has(Fault::DraftSelectorBitmask)
                && selector & draft::SELECT_DIRTY != 0
                && !export.bitmaps.is_empty() =>
            {
                Ok(Command::LbaStatus {
                    offset,
                    length,
                    query: DraftQuery::Dirty,
                })
            }
            planned => planned,
        }
    }

    /// `big-payload-kept-open`: a payload above the maximum is read and discarded, and the
    /// connection goes on after the refusal.
    pub fn keeps_open_after_big_payload(&self) -> bool {
        self.has(Fault::BigPayloadKeptOpen)
    }

    /// `success-past-end`: the length to answer for a block-status request that starts inside
    /// an export of `size` bytes but runs past its end (None: refuse it, as the clean server does).
    fn answer_past_end(&self, offset: u64, length: u64, size: u64) -> Option<u64> {
        let runs_past = offset < size && offset.checked_add(length).is_some_and(|e| e > size);
        (self.has(Fault::SuccessPastEnd) && runs_past).then(|| size - offset)
    }
}

/// The clean range rule, for the answers a fault makes up.
fn within(offset: u64, length: u64, export: &Export) -> Result<(), Refusal> {
    match offset.checked_add(length) {
        Some(end) if end <= export.size() => Ok(()),
        _ => Err(PAST_END),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::image::Image;
    use crate::wire::request::HeaderForm;
    use crate::Dialect;

    /// A 5-byte export in `dialect` (the file must outlive the export's use).
    fn export(dialect: Dialect) -> (tempfile::NamedTempFile, Export) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(5).unwrap();
        let image = Image::open(file.path(), false).unwrap();
        (file, Export::new("disk".into(), dialect, image, &[]))
    }

    fn status(offset: u64, length: u64) -> Request {
        Request::new(HeaderForm::Compact, cmd::BLOCK_STATUS, 0, 1, offset, length)
    }

    #[test]
    fn no_faults_change_nothing() {
        let (_file, e) = export(Dialect::Standard);
        let none = Faults::default();
        assert_eq!(
            none.review(&status(0, 10), &[], &e, Err(PAST_END)),
            Err(PAST_END)
        );
        let fallback = Ok(Command::LbaStatus {
            offset: 0,
            length: 1,
            query: DraftQuery::Other(0x8000),
        });
        assert_eq!(
            none.review(&status(0, 1), &[], &e, fallback.clone()),
            fallback
        );
    }

    #[test]
    fn past_end_is_answered_up_to_the_end() {
        let (_file, e) = export(Dialect::Standard);
        let f = Faults::new([Fault::SuccessPastEnd]);
        assert_eq!(
            f.review(&status(2, 10), &[], &e, Err(PAST_END)),
            Ok(Command::BlockStatus {
                offset: 2,
                length: 3,
                req_one: false,
                only: None,
            })
        );
        // Starting at or past the end, or wrapping around, is still refused.
        assert_eq!(
            f.review(&status(5, 1), &[], &e, Err(PAST_END)),
            Err(PAST_END)
        );
        let wraps = status(u64::MAX - 1, 4);
        assert_eq!(f.review(&wraps, &[], &e, Err(PAST_END)), Err(PAST_END));
        // So is the draft's GET_LBA_STATUS, which has the same command number.
        let (_file, draft) = export(Dialect::Draft);
        assert_eq!(
            f.review(&status(2, 10), &[], &draft, Err(PAST_END)),
            Err(PAST_END)
        );
    }
}
