//! What faults change in request checking: a request the clean checks refuse may be answered
//! (`success-past-end`, `payload-ids-unchecked`), one they accept may be refused
//! (`draft-no-fallback`, the FAST_ZERO faults) or answered otherwise (`filter-ignored`,
//! `payload-length-as-effect`, `draft-selector-bitmask`), and an accepted write may do
//! something else (`write-dropped`, `write-zeroes-ignored`, `cache-scribbles`).

use super::{Fault, Faults};
use crate::server::export::Export;
use crate::server::plan::filter::{REPEATED_ID, UNKNOWN_ID};
use crate::server::plan::{refuse, Command, Refusal, PAST_END};
use crate::wire::consts::{command as cmd, command_flag as flag, draft, errno};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;
use crate::wire::status_payload::StatusPayload;

/// What `cache-scribbles` leaves at the start of a cached range.
const SCRIBBLE: u8 = 0xff;

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
            planned => self.review_write(req, planned),
        }
    }

    /// The write faults: what an accepted writing command does, and the FAST_ZERO refusals.
    fn review_write(
        &self,
        req: &Request,
        planned: Result<Command, Refusal>,
    ) -> Result<Command, Refusal> {
        let fast = req.flags & flag::FAST_ZERO != 0;
        match planned {
            // A reply of success with nothing done: CACHE is the clean server's no-op.
            Ok(Command::Write { .. }) if self.has(Fault::WriteDropped) => Ok(Command::Cache),
            Ok(Command::WriteZeroes { .. }) if self.has(Fault::WriteZeroesIgnored) => {
                Ok(Command::Cache)
            }
            Ok(Command::WriteZeroes { .. }) if self.has(Fault::ZeroesEnotsup) => {
                Err(refuse(errno::ENOTSUP, "zeroing is no faster than writing"))
            }
            Err(r) if fast && r.errno == errno::ENOTSUP && self.has(Fault::FastZeroEinval) => {
                Err(refuse(errno::EINVAL, "fast zeroing is not offered"))
            }
            // Carried out here, refused in `after_write`.
            Err(r)
                if fast && r.errno == errno::ENOTSUP && self.has(Fault::FastZeroRefusalZeroes) =>
            {
                Ok(Command::WriteZeroes {
                    offset: req.offset,
                    length: req.length,
                    punch: req.flags & flag::NO_HOLE == 0,
                    fua: req.flags & flag::FUA != 0,
                })
            }
            Ok(Command::Cache) if self.has(Fault::CacheScribbles) && req.length > 0 => {
                Ok(Command::Write {
                    offset: req.offset,
                    data: vec![SCRIBBLE],
                    fua: false,
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

    /// The refusal to send for `req` once its command has run, instead of success
    /// (`fast-zero-refusal-zeroes`: the zeroes are written, the reply says ENOTSUP).
    pub fn after_write(&self, req: &Request) -> Option<Refusal> {
        let fast_zero = req.command == cmd::WRITE_ZEROES && req.flags & flag::FAST_ZERO != 0;
        (fast_zero && self.has(Fault::FastZeroRefusalZeroes))
            .then(|| refuse(errno::ENOTSUP, "zeroing is no faster than writing"))
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
        let write = Command::Write {
            offset: 0,
            data: vec![1],
            fua: false,
        };
        let req = Request::new(HeaderForm::Compact, cmd::WRITE, 0, 1, 0, 1);
        assert_eq!(none.review(&req, &[], &e, Ok(write.clone())), Ok(write));
        let fast = Request::new(
            HeaderForm::Compact,
            cmd::WRITE_ZEROES,
            flag::FAST_ZERO,
            1,
            0,
            1,
        );
        assert_eq!(none.after_write(&fast), None);
    }

    #[test]
    fn write_faults_do_something_else_with_writes() {
        let (_file, e) = export(Dialect::Standard);
        let req = Request::new(HeaderForm::Compact, cmd::WRITE, 0, 1, 0, 1);
        let write = Ok(Command::Write {
            offset: 0,
            data: vec![1],
            fua: false,
        });
        let dropped = Faults::new([Fault::WriteDropped]);
        assert_eq!(dropped.review(&req, &[], &e, write), Ok(Command::Cache));
        let fast = Request::new(
            HeaderForm::Compact,
            cmd::WRITE_ZEROES,
            flag::FAST_ZERO,
            1,
            0,
            1,
        );
        let late = Faults::new([Fault::FastZeroRefusalZeroes]);
        let refused = Err(refuse(errno::ENOTSUP, "fast zeroing is not offered"));
        assert!(matches!(
            late.review(&fast, &[], &e, refused),
            Ok(Command::WriteZeroes { .. })
        ));
        assert_eq!(
            late.after_write(&fast).map(|r| r.errno),
            Some(errno::ENOTSUP)
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
