//! `map`: the whole export walked for every selected context (every reply checked), then the
//! read-back and fixture-truth oracles over what it said.

use super::Run;
use crate::checks;
use crate::engine::case::{self, Expect};
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::map::{absorb_reply, Track};
use crate::wire::consts::{command, command_flag, draft};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;
use crate::Dialect;

/// Requests one walk may send before the harness gives up on it.
const MAX_WALK_REQUESTS: u32 = 200_000;

impl Run<'_> {
    pub(super) async fn map(&mut self, m: &case::MapStep) -> Result<(), Stop> {
        let neg = self.negotiated()?;
        let max_request = match &m.max_request {
            Some(e) => self.value(e)?,
            None if neg.extended => u64::MAX,
            None => Request::compact_max(neg.minimum_block()),
        };
        if max_request < neg.minimum_block() {
            return Err(Stop::Unsupported(format!(
                "requests of at most {max_request} bytes cannot keep the advertised minimum \
                 block size {}",
                neg.minimum_block()
            )));
        }
        let tracks = match neg.dialect {
            Dialect::Standard => {
                let names: Vec<String> = neg.contexts.iter().map(|(_, n)| n.clone()).collect();
                self.walk(&names, 0, m.req_one, max_request, true).await?
            }
            Dialect::Draft => {
                let selectors = if m.selectors.is_empty() {
                    vec![draft::SELECT_ALLOCATED]
                } else {
                    m.selectors.clone()
                };
                let mut all = Vec::new();
                for s in selectors {
                    let name = DraftQuery::from_selector(s).context_name();
                    all.extend(self.walk(&[name], s, false, max_request, true).await?);
                }
                all
            }
        };
        for t in &tracks {
            for e in &t.entries {
                self.record.stream(&e.context, e.offset, e.length, e.flags);
            }
        }
        self.read_back(&tracks).await?;
        if neg.dialect == Dialect::Draft {
            self.record
                .found_all(checks::draft::dirty_deallocated(&tracks));
        }
        match self.spec.truth.clone() {
            // The case's own writes changed the export: the fixture no longer describes it.
            Some(_) if self.ledger.changed() => self.record.not_checked.push(
                "the map was not compared with the fixture's truth: the case wrote to the \
                 export"
                    .into(),
            ),
            Some(truth) => self
                .record
                .found_all(checks::truth::against_truth(&tracks, &truth)),
            None => {}
        }
        if neg.dialect == Dialect::Standard {
            for t in tracks {
                if t.covered >= neg.size && !self.mapped.iter().any(|m| m.context == t.context) {
                    self.mapped.push(t);
                }
            }
        }
        Ok(())
    }

    /// Walks `[0, size)` sequentially, one request at a time (the engine's walk is about
    /// what each reply says; `map` the command is the fast one); every reply is checked. Stops
    /// early (with findings recorded) when the server errors or the link breaks. `log`: keep
    /// the requests and replies in the transcript.
    pub(super) async fn walk(
        &mut self,
        names: &[String],
        selector: u16,
        req_one: bool,
        max_request: u64,
        log: bool,
    ) -> Result<Vec<Track>, Stop> {
        let neg = self.negotiated()?;
        let mut tracks: Vec<Track> = names.iter().map(|n| Track::new(n, 0)).collect();
        if tracks.is_empty() {
            return Ok(tracks);
        }
        let (cmd, flags) = match neg.dialect {
            Dialect::Draft => (draft::CMD_GET_LBA_STATUS, selector),
            Dialect::Standard if req_one => (command::BLOCK_STATUS, command_flag::REQ_ONE),
            Dialect::Standard => (command::BLOCK_STATUS, 0),
        };
        let minimum = neg.minimum_block();
        let covered = |tracks: &[Track]| tracks.iter().map(|t| t.covered).min().unwrap_or(neg.size);
        for _ in 0..MAX_WALK_REQUESTS {
            let from = covered(&tracks);
            if from >= neg.size {
                return Ok(tracks);
            }
            // Whole blocks only: a server whose descriptors ended off the grid (a SHOULD it
            // broke, warned elsewhere) does not make the client break its MUST; the overlap
            // is clipped by the tracks. The unaligned tail of an export is out of reach.
            let at = from / minimum * minimum;
            let length = (neg.size - at).min(max_request) / minimum * minimum;
            if length == 0 || self.link.session().is_none() {
                return Ok(tracks);
            }
            let request = self.new_request(cmd, flags, at, length)?;
            let result = self.exchange(request).await?;
            if log {
                self.record
                    .note(transcript::request(&request, self.case.dialect));
            }
            let before = self.record.transcript.len();
            let clause = checks::walk::request_clause(neg.dialect);
            let Some(reply) = self.judge(result, &Expect::SUCCESS, clause)? else {
                return Ok(tracks);
            };
            if !log {
                self.record.transcript.truncate(before);
            }
            if reply.error().is_some() {
                return Ok(tracks);
            }
            // A context without a chunk breaks BS-REP-PERCTX-1, which the reply's checks
            // report; the walk goes on with what came.
            let _ = absorb_reply(&mut tracks, &neg, at, neg.size, &reply);
            if covered(&tracks) <= from {
                self.record
                    .found(checks::walk::no_progress(neg.dialect, at));
                return Ok(tracks);
            }
        }
        if covered(&tracks) >= neg.size {
            return Ok(tracks);
        }
        Err(Stop::Error(format!(
            "more than {MAX_WALK_REQUESTS} requests to map the export"
        )))
    }
}
