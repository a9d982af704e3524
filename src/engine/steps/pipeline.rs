//! `pipeline`: several block-status requests in flight at once, each reply graded
//! (BS-REQ-PIPE-1).

use super::Run;
use crate::checks;
use crate::client::ClientError;
use crate::engine::case::{self, Expect};
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::command;
use crate::wire::request::Request;

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
        let mut cookies = Vec::new();
        for i in 0..p.count as u64 {
            let offset = i.saturating_mul(step) % usable;
            let request = self.new_request(
                command::BLOCK_STATUS,
                p.flags.0,
                offset,
                step.min(usable - offset),
            )?;
            if let Err(e) = self.session()?.send_request(request, &[]).await {
                return self
                    .judge(Err(e), &Expect::SUCCESS, checks::request::PIPELINED)
                    .map(|_| ());
            }
            cookies.push(request.cookie);
        }
        self.record.note(format!(
            "→ {} BLOCK_STATUS requests in flight, {step} bytes each",
            p.count
        ));
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
            if let Some(reply) = self.judge(result, &Expect::SUCCESS, checks::request::PIPELINED)? {
                self.record_stream(&reply);
            }
        }
        Ok(())
    }
}
