//! `block-status`, `draft-status` and `raw-request`: one request, its reply graded against
//! what the case expects; and what every request-sending step shares: sending one request and
//! waiting for its reply, judging an outcome, recording its descriptors, the still-alive probe.

use super::{probe_length, Run};
use crate::checks::request::BackendAnswer;
use crate::checks::{self, from_violation};
use crate::clauses::ClauseId;
use crate::client::{ClientError, DraftTrailer, Reply, ReplyBody};
use crate::engine::case::{self, Close, Expect, Outcome};
use crate::engine::outcome::ConnectionLoss;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{command, command_flag, draft};
use crate::wire::draft::DraftQuery;
use crate::wire::request::Request;
use crate::Dialect;

impl Run<'_> {
    pub(super) async fn block_status(&mut self, s: &case::BlockStatus) -> Result<(), Stop> {
        let (offset, length) = self.plan(
            command::BLOCK_STATUS,
            &s.offset,
            &s.length,
            s.expect.outcome,
            s.unaligned,
        )?;
        let Some(spec) = &s.payload else {
            let request = self.new_request(command::BLOCK_STATUS, s.flags.0, offset, length)?;
            return self.request(request, &[], &s.expect).await;
        };
        // The payload form: the planned length is the effect length, the header's is the
        // payload's.
        let payload = self.status_payload(spec, length)?;
        let flags = s.flags.0 | command_flag::PAYLOAD_LEN;
        let request =
            self.new_request(command::BLOCK_STATUS, flags, offset, payload.len() as u64)?;
        self.request(request, &payload, &s.expect).await
    }

    pub(super) async fn draft_status(&mut self, s: &case::DraftStatus) -> Result<(), Stop> {
        let (offset, length) = self.plan(
            draft::CMD_GET_LBA_STATUS,
            &s.offset,
            &s.length,
            s.expect.outcome,
            false,
        )?;
        let request = self.new_request(draft::CMD_GET_LBA_STATUS, s.selector, offset, length)?;
        let neg = self.negotiated()?;
        if neg.advertises_draft_status() {
            return self.request(request, &[], &s.expect).await;
        }
        // Only a case that does not need bit 7 gets here: it asks anyway. A server that answers
        // supports the command and should have said so (DRAFT-FLAG-1); one that does not never
        // offered it, and nothing it does can be graded.
        self.record
            .note(transcript::request(&request, self.case.dialect));
        let result = self.exchange(request).await?;
        match result {
            Ok(reply) if checks::draft::answered(&reply) => {
                let flags = neg.transmission_flags;
                self.record
                    .found_all(checks::draft::flag_advertised(flags, &reply));
                let clause = self.clause_of(&s.expect);
                if let Some(reply) = self.judge(Ok(reply), &s.expect, clause)? {
                    self.record_stream(&reply);
                }
                Ok(())
            }
            _ => Err(Stop::Unsupported(
                "the server neither advertises transmission flag bit 7 nor answers \
                 GET_LBA_STATUS"
                    .into(),
            )),
        }
    }

    pub(super) async fn raw_request(&mut self, s: &case::RawRequest) -> Result<(), Stop> {
        // A frame with a wrong magic is malformed whatever its range: nothing to fit.
        let (offset, length) = match s.magic {
            Some(_) => (self.value(&s.offset)?, self.value(&s.length)?),
            None => self.plan(s.command, &s.offset, &s.length, s.expect.outcome, false)?,
        };
        let mut request = self.new_request(s.command, s.flags.0, offset, length)?;
        if let Some(m) = s.magic {
            request.magic = m;
            // The request line does not show the magic; say which one went out.
            self.record
                .note(format!("(the next request carries the magic {m:#010x})"));
        }
        self.request(request, &[], &s.expect).await
    }

    /// A request in this session's header form, with a fresh cookie.
    pub(super) fn new_request(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        length: u64,
    ) -> Result<Request, Stop> {
        let session = self.session()?;
        let form = session.negotiated.header_form();
        let cookie = session.allocate_cookie();
        Ok(Request::new(form, cmd, flags, cookie, offset, length))
    }

    /// Sends `request` and waits for its whole reply (within the reply deadline): the
    /// outcome, for [`Run::judge`].
    pub(super) async fn exchange(
        &mut self,
        request: Request,
    ) -> Result<Result<Reply, ClientError>, Stop> {
        Ok(self.session()?.exchange(request).await)
    }

    /// Sends one request (and its `payload`), logged, and grades the reply against `expect`.
    async fn request(
        &mut self,
        request: Request,
        payload: &[u8],
        expect: &Expect,
    ) -> Result<(), Stop> {
        self.record
            .note(transcript::request(&request, self.case.dialect));
        if !payload.is_empty() {
            self.record.note(transcript::status_payload(payload));
        }
        let result = self.session()?.exchange_with(request, payload).await;
        let clause = self.clause_of(expect);
        let Some(reply) = self.judge(result, expect, clause)? else {
            return Ok(());
        };
        self.record_stream(&reply);
        if expect.close == Close::Preferred {
            self.expect_close(clause).await?;
        }
        if expect.alive_after {
            self.still_alive(expect, clause).await?;
        }
        Ok(())
    }

    /// After a reply to a request the server should have closed on: it must close now (within
    /// the per-read timeout, not the long reply deadline).
    async fn expect_close(&mut self, clause: ClauseId) -> Result<(), Stop> {
        let (short, long) = (self.settings.timeout, self.settings.reply_timeout);
        let session = self.session()?;
        session.set_timeout(short);
        let closed = session.closed_by_peer().await;
        session.set_timeout(long);
        if closed {
            self.record.note("← connection closed");
            self.closed_as_allowed = true;
            self.drop_link();
        } else {
            self.record.note("← (still open)");
            self.record.found(checks::request::kept_open(clause, short));
        }
        Ok(())
    }

    /// Grades a request's outcome against `expect` (its outcome and whether the server may
    /// close), under `clause`; returns the reply if there was one and the link is usable.
    pub(super) fn judge(
        &mut self,
        result: Result<Reply, ClientError>,
        expect: &Expect,
        clause: ClauseId,
    ) -> Result<Option<Reply>, Stop> {
        let allows_close = matches!(expect.close, Close::Allowed | Close::Preferred);
        let reply = match result {
            Ok(r) => r,
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                self.record.note("← connection closed");
                self.drop_link();
                if expect.close == Close::Discouraged {
                    // Not the connection lost to a broken rule: the case goes on, reconnecting.
                    self.closed_as_allowed = true;
                    self.record
                        .found(checks::request::closed_discouraged(clause));
                    return Ok(None);
                }
                if allows_close {
                    self.closed_as_allowed = true;
                } else {
                    self.record.lost(ConnectionLoss::Dropped);
                }
                self.record.found(checks::request::closed(allows_close));
                return Ok(None);
            }
            Err(ClientError::Timeout { what, after }) => {
                self.record.note(format!(
                    "← (no complete reply: waited {after:?} for {what})"
                ));
                self.drop_link();
                self.record.found(checks::request::incomplete(after));
                // The failure is found; waiting out more deadlines on the same server would
                // only make a run against a hung server long (it still grades fail).
                return Err(Stop::Error(format!(
                    "stopped after a request that got no complete reply within {after:.0?}"
                )));
            }
            Err(ClientError::Protocol(v)) => {
                self.record.note(format!("← unreadable: {v}"));
                self.drop_link();
                self.record.found(from_violation(&v));
                return Ok(None);
            }
            Err(other) => return Err(Stop::Error(other.to_string())),
        };
        let neg = self.negotiated()?;
        for line in transcript::reply(&reply, &neg) {
            self.record.note(line);
        }
        self.record
            .found_all(checks::request::structure(&reply, &neg));
        // A draft server may close instead of sending the error trailer (DRAFT-ERR-1): the
        // connection is gone, and nothing more can be asked on it.
        if matches!(
            reply.body,
            ReplyBody::Draft {
                trailer: DraftTrailer::Closed,
                ..
            }
        ) {
            self.drop_link();
        }
        self.record
            .found_all(checks::request::expected(expect.outcome, clause, &reply));
        if expect.outcome == Outcome::BackendFailure {
            match checks::request::backend_failure(&reply) {
                BackendAnswer::Failed => {}
                BackendAnswer::OneDescriptor(finding) => self.record.found(finding),
                BackendAnswer::Answered(why) => return Err(Stop::Unsupported(why)),
            }
        }
        Ok(Some(reply))
    }

    /// After a request the server should have survived: a plain one must still succeed.
    /// A plain request after the step's: the connection must still serve. After a step whose
    /// close is only discouraged (a zero-length request), a close found here is that step's
    /// SHOULD NOT, under its `clause`, as a close before the reply would be.
    async fn still_alive(&mut self, step: &Expect, clause: ClauseId) -> Result<(), Stop> {
        if self.link.session().is_none() {
            return Ok(());
        }
        let neg = self.negotiated()?;
        let Some(length) = probe_length(&neg) else {
            self.record
                .note("(not probed: the export has no whole block a request may ask for)");
            return Ok(());
        };
        let (cmd, flags) = match neg.dialect {
            Dialect::Draft => (draft::CMD_GET_LBA_STATUS, draft::SELECT_ALLOCATED),
            Dialect::Standard if neg.contexts.is_empty() => (command::READ, 0),
            Dialect::Standard => (command::BLOCK_STATUS, 0),
        };
        let request = self.new_request(cmd, flags, 0, length)?;
        self.record.note(format!(
            "{} (still alive?)",
            transcript::request(&request, self.case.dialect)
        ));
        let result = self.exchange(request).await?;
        let closed = matches!(result, Err(ClientError::Closed { .. } | ClientError::Io(_)));
        if closed && step.close == Close::Discouraged {
            self.record.note("← connection closed");
            self.drop_link();
            self.closed_as_allowed = true;
            self.record
                .found(checks::request::closed_discouraged(clause));
            return Ok(());
        }
        self.judge(result, &Expect::SUCCESS, checks::request::MUST_SUCCEED)?;
        Ok(())
    }

    /// The reply's descriptors, one stream line each, in the order the server sent them.
    pub(super) fn record_stream(&mut self, reply: &Reply) {
        let Some(session) = self.link.session() else {
            return;
        };
        let neg = session.negotiated.clone();
        match &reply.body {
            ReplyBody::Draft { descriptors, .. } => {
                let name = DraftQuery::from_selector(reply.request.flags).context_name();
                for d in descriptors {
                    self.record
                        .stream(&name, d.offset, d.length as u64, d.status as u64);
                }
            }
            _ => {
                for (id, descriptors) in reply.status_chunks() {
                    let name = neg.context_name(id).unwrap_or("?");
                    let mut at = reply.request.offset;
                    for d in descriptors {
                        self.record.stream(name, at, d.length, d.flags);
                        at = at.saturating_add(d.length);
                    }
                }
            }
        }
    }
}
