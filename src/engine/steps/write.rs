//! `write`, `write-zeroes`, `trim` and `cache`: the commands that change (or only touch) the
//! export. Each success goes into the run's [`Ledger`](checks::writes::Ledger), which a later
//! `verify` grades READ and block status against. The client keeps every client rule: a
//! command or flag the server did not advertise never goes out (the case is `unsupported`
//! instead), and nothing writes unless the export may be written (the `writable` need).

use super::Run;
use crate::checks::{self, writes::Op};
use crate::client::{ClientError, Reply};
use crate::engine::case::{self, Expect, Outcome};
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{command, command_flag, limit, transmission_flag as tf};
use crate::wire::request::Request;

impl Run<'_> {
    pub(super) async fn write(&mut self, w: &case::Write) -> Result<(), Stop> {
        self.writable_here()?;
        let (offset, length) = self.plan(
            command::WRITE,
            &w.offset,
            &w.length,
            w.expect.outcome,
            false,
        )?;
        if length > u64::from(limit::MAX_IO_PAYLOAD) {
            return Err(Stop::Unsupported(format!(
                "a WRITE of {length} bytes is more than this client sends at once"
            )));
        }
        let extended = self.negotiated()?.extended;
        let flags = w.flags.0
            | if extended {
                command_flag::PAYLOAD_LEN
            } else {
                0
            };
        let request = self.new_request(command::WRITE, flags, offset, length)?;
        let data = vec![w.byte; length as usize];
        let Some(reply) = self.send_graded(request, &data, &w.expect).await? else {
            return Ok(());
        };
        if reply.error().is_none() {
            self.ledger.record(Op::write(offset, length, w.byte));
        }
        Ok(())
    }

    pub(super) async fn write_zeroes(&mut self, z: &case::RangeCommand) -> Result<(), Stop> {
        self.writable_here()?;
        self.advertised(tf::SEND_WRITE_ZEROES, "NBD_CMD_WRITE_ZEROES")?;
        let fast = z.flags.0 & command_flag::FAST_ZERO != 0;
        if fast {
            self.advertised(tf::SEND_FAST_ZERO, "NBD_CMD_FLAG_FAST_ZERO")?;
        }
        let (offset, length) = self.plan(
            command::WRITE_ZEROES,
            &z.offset,
            &z.length,
            z.expect.outcome,
            false,
        )?;
        let request = self.new_request(command::WRITE_ZEROES, z.flags.0, offset, length)?;
        // With FAST_ZERO a quick ENOTSUP is as good as success: the rule is graded below.
        let expect = if fast && z.expect.outcome == Outcome::Ok {
            Expect {
                outcome: Outcome::Any,
                ..z.expect.clone()
            }
        } else {
            z.expect.clone()
        };
        let Some(reply) = self.send_graded(request, &[], &expect).await? else {
            return Ok(());
        };
        let neg = self.negotiated()?;
        if neg.transmission_flags & tf::SEND_FAST_ZERO != 0 {
            let observed = checks::request::observed(&reply);
            self.record.found_all(checks::writes::fast_zero_reply(
                fast,
                reply.error(),
                &observed,
            ));
        }
        match reply.error() {
            None => self.ledger.record(Op::write_zeroes(offset, length)),
            Some(crate::wire::consts::errno::ENOTSUP) if fast => {
                self.ledger.record(Op::refused_fast_zero(offset, length))
            }
            // Another refusal may have done anything to the range (a partial write).
            Some(_) => self.ledger.record(Op::trim(offset, length)),
        }
        Ok(())
    }

    pub(super) async fn trim(&mut self, t: &case::RangeCommand) -> Result<(), Stop> {
        self.writable_here()?;
        self.advertised(tf::SEND_TRIM, "NBD_CMD_TRIM")?;
        let (offset, length) =
            self.plan(command::TRIM, &t.offset, &t.length, t.expect.outcome, false)?;
        let request = self.new_request(command::TRIM, t.flags.0, offset, length)?;
        let reply = self.send_graded(request, &[], &t.expect).await?;
        // Whatever the reply, the client may assume nothing about the range any more.
        if reply.is_some() {
            self.ledger.record(Op::trim(offset, length));
        }
        Ok(())
    }

    /// NBD_CMD_CACHE between two READs of its range, which must agree (CACHE-SEM-1). The
    /// command may fail (a server may advertise it and always refuse it): the reads must
    /// agree all the same.
    pub(super) async fn cache(&mut self, c: &case::RangeCommand) -> Result<(), Stop> {
        self.advertised(tf::SEND_CACHE, "NBD_CMD_CACHE")?;
        let (offset, length) =
            self.plan(command::READ, &c.offset, &c.length, Outcome::Ok, false)?;
        let Some(before) = self.read_range(offset, length).await? else {
            return Ok(());
        };
        let request = self.new_request(command::CACHE, c.flags.0, offset, length)?;
        let expect = Expect {
            outcome: Outcome::Any,
            ..c.expect.clone()
        };
        if self.send_graded(request, &[], &expect).await?.is_none() {
            return Ok(());
        }
        let Some(after) = self.read_range(offset, length).await? else {
            return Ok(());
        };
        self.record
            .found_all(checks::writes::cache_kept(offset, &before, &after));
        Ok(())
    }

    /// Stops the case unless it may write here: the user's word for a `--target`, the
    /// server's READ_ONLY flag for any.
    fn writable_here(&mut self) -> Result<(), Stop> {
        if !self.settings.writable {
            return Err(Stop::Unsupported(NOT_WRITABLE.into()));
        }
        if self.negotiated()?.read_only() {
            return Err(Stop::Unsupported(
                "the export is read-only (NBD_FLAG_READ_ONLY)".into(),
            ));
        }
        Ok(())
    }

    /// Stops the case unless the server advertised `flag` (a client MUST NOT use `what`
    /// otherwise).
    fn advertised(&mut self, flag: u16, what: &str) -> Result<(), Stop> {
        if self.negotiated()?.transmission_flags & flag == 0 {
            return Err(Stop::Unsupported(format!(
                "the server does not advertise NBD_FLAG_{} (needed for {what})",
                tf::name_of(flag).unwrap_or("?")
            )));
        }
        Ok(())
    }

    /// Sends `request` with `payload`, logged, and grades the reply against `expect`.
    async fn send_graded(
        &mut self,
        request: Request,
        payload: &[u8],
        expect: &Expect,
    ) -> Result<Option<Reply>, Stop> {
        self.record
            .note(transcript::request(&request, self.case.dialect));
        let session = self.session()?;
        let result: Result<Reply, ClientError> = match session.send_request(request, payload).await
        {
            Ok(()) => session.wait_for(request.cookie).await,
            Err(e) => Err(e),
        };
        let clause = self.clause_of(expect);
        self.judge(result, expect, clause)
    }
}

/// Why a case that writes does not run on a `--target` without `--writable`.
pub(super) const NOT_WRITABLE: &str =
    "the case writes to the export: pass --writable if the target's export may be written";
