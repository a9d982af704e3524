//! `verify`: block status over a range for every selected context, then a READ of it, graded
//! against the run's [`Ledger`](checks::writes::Ledger): what the case's writes put there
//! reads back (WRITE-READ-1, WZ-READ-1, WZ-FAST-2), base:allocation calls no written data
//! ZERO (ALLOC-WRITTEN-1), what it calls ZERO reads as zeros (ALLOC-ZERO-1, which is all a
//! trimmed range is held to), and each dirty bitmap shows every write (QEMU-DB-COVER-1).

use super::Run;
use crate::checks;
use crate::engine::case::{self, Expect, Outcome};
use crate::engine::outcome::Finding;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::map::{absorb_reply, MapEntry, Track};
use crate::wire::consts::{command, context, errno, limit};
use crate::wire::request::Request;

/// Requests one verify may send for its range before the harness gives up on the server.
const MAX_REQUESTS: u32 = 10_000;

impl Run<'_> {
    pub(super) async fn verify(&mut self, v: &case::Verify) -> Result<(), Stop> {
        let (offset, length) = self.plan(
            command::BLOCK_STATUS,
            &v.offset,
            &v.length,
            Outcome::Ok,
            false,
        )?;
        let end = offset + length;
        let Some(tracks) = self.walk_range(offset, end).await? else {
            return Ok(());
        };
        for t in &tracks {
            for e in &t.entries {
                self.record.stream(&e.context, e.offset, e.length, e.flags);
            }
        }
        let Some(data) = self.read_range(offset, length).await? else {
            return Ok(());
        };
        let ledger = &self.ledger;
        let mut found = checks::writes::read_matches(ledger, offset, &data);
        for t in &tracks {
            let covered = t.covered >= end;
            if t.context == context::BASE_ALLOCATION {
                found.extend(checks::writes::zero_over_written(ledger, &t.entries));
                found.extend(zero_ranges_read_zero(&t.entries, offset, &data));
            } else if t.context.starts_with(context::QEMU_DIRTY_BITMAP_PREFIX) && covered {
                found.extend(checks::writes::dirty_misses_writes(
                    ledger, &t.context, &t.entries, offset, end,
                ));
            }
        }
        self.record.note(format!(
            "(verified {offset}+{length} against the case's writes)"
        ));
        self.record.found_all(found);
        Ok(())
    }

    /// Block status over `[offset, end)` until every context covers it; None when the server
    /// refused or the link broke (the findings are recorded).
    async fn walk_range(&mut self, offset: u64, end: u64) -> Result<Option<Vec<Track>>, Stop> {
        let neg = self.negotiated()?;
        let mut tracks: Vec<Track> = neg
            .contexts
            .iter()
            .map(|(_, n)| Track::new(n, offset))
            .collect();
        let minimum = neg.minimum_block();
        let covered = |tracks: &[Track]| tracks.iter().map(|t| t.covered).min().unwrap_or(end);
        for _ in 0..MAX_REQUESTS {
            let from = covered(&tracks);
            if from >= end {
                return Ok(Some(tracks));
            }
            // Whole blocks only, as in `map`'s walk.
            let at = from / minimum * minimum;
            let length = (end - at).min(Request::compact_max(minimum)) / minimum * minimum;
            if length == 0 {
                return Ok(Some(tracks));
            }
            let request = self.new_request(command::BLOCK_STATUS, 0, at, length)?;
            self.record
                .note(transcript::request(&request, self.case.dialect));
            let result = self.exchange(request).await?;
            let clause = checks::walk::request_clause(neg.dialect);
            let Some(reply) = self.judge(result, &Expect::SUCCESS, clause)? else {
                return Ok(None);
            };
            if reply.error().is_some() {
                return Ok(None);
            }
            let _ = absorb_reply(&mut tracks, &neg, at, end, &reply);
            if covered(&tracks) <= from {
                self.record
                    .found(checks::walk::no_progress(neg.dialect, at));
                return Ok(None);
            }
        }
        Err(Stop::Error(format!(
            "more than {MAX_REQUESTS} requests to map {offset}..{end}"
        )))
    }

    /// READs `[offset, offset+length)` in pieces within every payload limit; None when a READ
    /// failed (a refusal is noted as leaving the range unchecked, a lost link is a finding).
    pub(super) async fn read_range(
        &mut self,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<u8>>, Stop> {
        let neg = self.negotiated()?;
        let minimum = neg.minimum_block();
        let piece = neg
            .block_sizes
            .map_or(u64::from(limit::MAX_IO_PAYLOAD), |b| u64::from(b.maximum))
            .min(u64::from(limit::MAX_IO_PAYLOAD))
            / minimum
            * minimum;
        let piece = piece.max(minimum);
        let mut data = Vec::with_capacity(length as usize);
        let mut at = offset;
        while at < offset + length {
            let n = piece.min(offset + length - at);
            let request = self.new_request(command::READ, 0, at, n)?;
            self.record
                .note(transcript::request(&request, self.case.dialect));
            let result = self.exchange(request).await?;
            let Some(reply) =
                self.judge(result, &Expect::SUCCESS, checks::request::MUST_SUCCEED)?
            else {
                return Ok(None);
            };
            let Some(bytes) = reply.read_data() else {
                self.record.not_checked.push(format!(
                    "{offset}+{length} was not read back: the server answered a READ with {}",
                    reply
                        .error()
                        .map_or("an incomplete reply".into(), |e| errno::name(e).to_owned())
                ));
                return Ok(None);
            };
            data.extend(bytes);
            at += n;
        }
        Ok(Some(data))
    }
}

/// What base:allocation calls ZERO inside the range read as `data` (at `offset`) reads as
/// zeros: the only promise a trimmed range carries.
fn zero_ranges_read_zero(entries: &[MapEntry], offset: u64, data: &[u8]) -> Vec<Finding> {
    let end = offset + data.len() as u64;
    let mut found = Vec::new();
    for e in entries {
        if !checks::read_back::says_zero(&e.context, e.flags) {
            continue;
        }
        let (a, b) = (
            e.offset.max(offset),
            e.offset.saturating_add(e.length).min(end),
        );
        if a >= b {
            continue;
        }
        let piece = &data[(a - offset) as usize..(b - offset) as usize];
        if let Some(clause) = checks::read_back::zero_clause(&e.context) {
            found.extend(checks::read_back::nonzero(clause, e, a, piece));
        }
    }
    found
}
