//! `pipeline`: several block-status (or, in the draft, GET_LBA_STATUS) requests in flight at
//! once, each reply graded (BS-REQ-PIPE-1); with `with-reads`, each behind a READ of its range,
//! so that replies of two shapes are matched by cookie alone.

use super::Run;
use crate::checks;
use crate::client::ClientError;
use crate::engine::case::{self, Expect};
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::command;
use crate::wire::request::Request;
use crate::Dialect;

impl Run<'_> {
    pub(super) async fn pipeline(&mut self, p: &case::Pipeline) -> Result<(), Stop> {
        let length = self.value(&p.length)?;
        let neg = self.negotiated()?;
        let minimum = neg.minimum_block();
        // Only whole blocks can be asked for: the tail of an export that is not a multiple of
        // the minimum block size is out of a client's reach.
        let usable = neg.size / minimum * minimum;
        if usable == 0 {
            return Err(Stop::Unsupported(format!(
                "needs an export of at least one {minimum}-byte block; this one has {}",
                neg.size
            )));
        }
        let mut step = length.max(1);
        if !Request::length_fits(neg.header_form(), step) {
            step = Request::compact_max(minimum);
        }
        if step % minimum != 0 {
            return Err(Stop::Unsupported(format!(
                "requests of {step} bytes are not a multiple of the advertised minimum block size {minimum} (GO-BLKSZ-3)"
            )));
        }
        // The status command has one number in both dialects (7: BLOCK_STATUS, and the
        // draft's GET_LBA_STATUS, whose selector travels in `flags`).
        let status = command::BLOCK_STATUS;
        let kinds: &[u16] = if p.with_reads {
            &[command::READ, status]
        } else {
            &[status]
        };
        let mut cookies = Vec::new();
        for i in 0..p.count as u64 {
            let offset = i.saturating_mul(step) % usable;
            let length = step.min(usable - offset);
            for &cmd in kinds {
                let flags = if cmd == status { p.flags.0 } else { 0 };
                let request = self.new_request(cmd, flags, offset, length)?;
                if let Err(e) = self.session()?.send_request(request, &[]).await {
                    return self
                        .judge(Err(e), &Expect::SUCCESS, checks::request::PIPELINED)
                        .map(|_| ());
                }
                cookies.push(request.cookie);
            }
        }
        let name = match self.case.dialect {
            Dialect::Draft => "GET_LBA_STATUS",
            Dialect::Standard => "BLOCK_STATUS",
        };
        self.record.note(match p.with_reads {
            false => format!("→ {} {name} requests in flight, {step} bytes each", p.count),
            true => format!(
                "→ {} READ and {name} pairs in flight, {step} bytes each, told apart by cookie",
                p.count
            ),
        });
        for cookie in cookies {
            let Some(session) = self.link.session() else {
                break;
            };
            let result = session.wait_for(cookie).await;
            if matches!(result, Err(ClientError::Timeout { .. })) {
                // Not merely slow: the server got on with the requests behind this one.
                let later = session.replies_after(cookie);
                if later > 0 {
                    self.record.note(format!(
                        "(the server answered {later} requests sent after {}: it abandoned that \
                         one)",
                        transcript::cookie(cookie)
                    ));
                }
            }
            let Some(reply) = self.judge(result, &Expect::SUCCESS, checks::request::PIPELINED)?
            else {
                continue;
            };
            self.record_stream(&reply);
        }
        Ok(())
    }
}
