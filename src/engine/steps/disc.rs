//! `disc`: a block-status request and NBD_CMD_DISC back to back; the server answers the
//! request, then closes (TX-DISC-1).

use super::{probe_length, Run};
use crate::checks;
use crate::client::ClientError;
use crate::engine::case::Expect;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::command;

impl Run<'_> {
    pub(super) async fn disc(&mut self) -> Result<(), Stop> {
        let neg = self.negotiated()?;
        let Some(length) = probe_length(&neg) else {
            return Err(Stop::Unsupported(
                "needs an export with at least one whole block to ask about".into(),
            ));
        };
        let request = self.new_request(command::BLOCK_STATUS, 0, 0, length)?;
        let disc = self.new_request(command::DISC, 0, 0, 0)?;
        self.record
            .note(transcript::request(&request, self.case.dialect));
        self.record
            .note(transcript::request(&disc, self.case.dialect));
        let session = self.session()?;
        let sent = match session.send_request(request, &[]).await {
            Ok(()) => session.send_request(disc, &[]).await,
            Err(e) => Err(e),
        };
        let result = match sent {
            Ok(()) => session.wait_for(request.cookie).await,
            Err(e) => Err(e),
        };
        let reply = match result {
            Ok(reply) => reply,
            // Closing with the request unanswered is what DISC must not do (TX-DISC-1), not an
            // ordinary dropped connection.
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                self.record.note("← connection closed");
                self.drop_link();
                self.record.found(checks::disc::closed_unanswered());
                return Ok(());
            }
            Err(e) => {
                self.judge(Err(e), &Expect::SUCCESS, checks::disc::CLAUSE)?;
                return Ok(());
            }
        };
        // nbdkit answers or sends ESHUTDOWN from run to run, so the transcript says only that
        // the reply came; its content is checked by other cases.
        self.record.violations(&reply.violations);
        let label = transcript::cookie(request.cookie);
        match checks::disc::answer(&reply) {
            None => self.record.note(format!(
                "← a reply to {label} (data or ESHUTDOWN: either handles it)"
            )),
            Some(broken) => {
                self.record.note(format!(
                    "← {} to {label}",
                    checks::request::observed(&reply)
                ));
                self.record.found(broken);
            }
        }
        let closed = self.session()?.closed_by_peer().await;
        self.record.note(if closed {
            "← connection closed"
        } else {
            "← (still open)"
        });
        if !closed {
            let after = self.settings.reply_timeout;
            self.record.found(checks::disc::still_open(after));
        }
        self.drop_link();
        Ok(())
    }
}
