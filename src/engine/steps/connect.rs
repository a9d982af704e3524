//! `connect`: a new connection up to the greeting (with the client flags a case chooses),
//! left in option haggling, or expected to be closed by the server right away.

use super::Run;
use crate::checks;
use crate::client::ClientError;
use crate::engine::case::{self, Close};
use crate::engine::link::Link;
use crate::engine::run::Stop;
use crate::wire::consts::{option, reply_type};

impl Run<'_> {
    pub(super) async fn connect(&mut self, c: &case::Connect) -> Result<(), Stop> {
        let mut hs = self.start(c.client_flags).await?;
        if let Some(f) = c.client_flags {
            self.record.note(format!("→ client flags {f:#010x}"));
        }
        if c.expect.close != Close::Required {
            self.link = Link::Haggling(hs);
            return Ok(());
        }
        // The server must drop us instead of reading options: probe with a harmless LIST.
        let _ = hs.send_option(option::LIST, &[]).await;
        let clause = c.expect.clause;
        match hs.read_option_reply(option::LIST).await {
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                self.record.note("← connection closed")
            }
            Ok(r) => {
                let reply = reply_type::name(r.header.reply_type);
                self.record.note(format!("← {reply}"));
                self.record.found(checks::options::not_closed(
                    clause,
                    format!("a {reply} reply"),
                ));
            }
            Err(e) => self
                .record
                .found(checks::options::not_closed(clause, e.to_string())),
        }
        Ok(())
    }
}
