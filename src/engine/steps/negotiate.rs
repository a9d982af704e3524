//! `negotiate`: connect, haggle (extended headers or structured replies, then the contexts)
//! and GO; `reconnect`: the same again.

use super::Run;
use crate::client::Handshake;
use crate::engine::case::{Need, Negotiate};
use crate::engine::link::Link;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{option, reply_type};
use crate::Dialect;

impl Run<'_> {
    pub(super) async fn negotiate(&mut self, n: &Negotiate) -> Result<(), Stop> {
        self.last_negotiate = Some(n.clone());
        let export = n
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        let mut hs = self.start(None).await?;
        let haggled = self.haggle(n, &export, &mut hs).await;
        // Kept even when haggling ends the case, so that what the server broke is reported.
        self.link = Link::Haggling(hs);
        haggled?;
        let go_export = n.go_export.clone().unwrap_or(export);
        self.go(&go_export, None).await
    }

    pub(super) async fn reconnect(&mut self) -> Result<(), Stop> {
        match self.last_negotiate.clone() {
            Some(n) => self.negotiate(&n).await,
            None => Err(Stop::Error("reconnect before any negotiate step".into())),
        }
    }

    /// The options of a `negotiate` step before GO: EXTENDED_HEADERS or STRUCTURED_REPLY,
    /// then SET_META_CONTEXT.
    async fn haggle(
        &mut self,
        n: &Negotiate,
        export: &str,
        hs: &mut Handshake,
    ) -> Result<(), Stop> {
        if self.case.dialect != Dialect::Standard {
            return Ok(());
        }
        let failed = |e: crate::client::ClientError| Stop::Error(e.to_string());
        if n.extended {
            let line = transcript::option(option::EXTENDED_HEADERS, None, &[], None);
            self.record.note(line);
            let r = hs.extended_headers().await.map_err(failed)?;
            self.record.note(format!("← {}", reply_type::name(r)));
            if r != reply_type::ACK {
                return Err(refused("NBD_OPT_EXTENDED_HEADERS", r));
            }
        } else if n.structured {
            let line = transcript::option(option::STRUCTURED_REPLY, None, &[], None);
            self.record.note(line);
            let r = hs.structured_reply().await.map_err(failed)?;
            self.record.note(format!("← {}", reply_type::name(r)));
            if r != reply_type::ACK
                && (!n.contexts.is_empty() || self.case.needs().contains(&Need::StructuredReplies))
            {
                return Err(refused("NBD_OPT_STRUCTURED_REPLY", r));
            }
        }
        if n.contexts.is_empty() {
            return Ok(());
        }
        let queries: Vec<&str> = n.contexts.iter().map(String::as_str).collect();
        let line = transcript::option(option::SET_META_CONTEXT, Some(export), &queries, None);
        self.record.note(line);
        let (selected, last) = hs
            .set_meta_context(export, &queries)
            .await
            .map_err(failed)?;
        for (id, name) in &selected {
            self.record.note(format!("← META_CONTEXT id={id} {name:?}"));
        }
        self.record.note(format!("← {}", reply_type::name(last)));
        // A server that selects a context twice or under two ids breaks SMC-REPLY-1 (the
        // client reports it) whether or not the case can go on.
        let broken = std::mem::take(&mut hs.violations);
        self.record.violations(&broken);
        if last != reply_type::ACK {
            return Err(refused("NBD_OPT_SET_META_CONTEXT", last));
        }
        if let Some(wanted) = n
            .contexts
            .iter()
            .find(|wanted| !selected.iter().any(|(_, name)| name == *wanted))
        {
            return Err(Stop::Unsupported(format!(
                "the server does not offer {wanted}"
            )));
        }
        // Keep the case's order whatever order the server replied in.
        let rank = |name: &str| n.contexts.iter().position(|c| c == name);
        hs.contexts.sort_by_key(|(_, name)| rank(name));
        Ok(())
    }
}

fn refused(option: &str, reply: u32) -> Stop {
    Stop::Unsupported(format!(
        "the server refused {option} ({})",
        reply_type::name(reply)
    ))
}
