//! `negotiate`: connect, haggle (extended headers or structured replies, then the contexts)
//! and GO; `reconnect`: the same again.

use super::Run;
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
        let hs = self.start(None).await?;
        // On the link while haggling, so that what the server breaks is reported however the
        // haggling ends.
        self.link = Link::Haggling(hs);
        self.haggle(n, &export).await?;
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
    /// then SET_META_CONTEXT. A reply the server got wrong or a connection it dropped is its
    /// failure here as in any case about the handshake ([`Run::handshake_broken`]).
    async fn haggle(&mut self, n: &Negotiate, export: &str) -> Result<(), Stop> {
        if self.case.dialect != Dialect::Standard {
            return Ok(());
        }
        if n.extended {
            let line = transcript::option(option::EXTENDED_HEADERS, None, &[], None);
            self.record.note(line);
            let r = match self.haggling().await?.extended_headers().await {
                Ok(r) => r,
                Err(e) => return Err(self.handshake_broken(e, option::EXTENDED_HEADERS)),
            };
            self.record.note(format!("← {}", reply_type::name(r)));
            if r != reply_type::ACK {
                return Err(refused("NBD_OPT_EXTENDED_HEADERS", r));
            }
        } else if n.structured {
            let line = transcript::option(option::STRUCTURED_REPLY, None, &[], None);
            self.record.note(line);
            let r = match self.haggling().await?.structured_reply().await {
                Ok(r) => r,
                Err(e) => return Err(self.handshake_broken(e, option::STRUCTURED_REPLY)),
            };
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
        let asked = self
            .haggling()
            .await?
            .set_meta_context(export, &queries)
            .await;
        let (selected, last) = match asked {
            Ok(r) => r,
            Err(e) => return Err(self.handshake_broken(e, option::SET_META_CONTEXT)),
        };
        for (id, name) in &selected {
            self.record.note(format!("← META_CONTEXT id={id} {name:?}"));
        }
        self.record.note(format!("← {}", reply_type::name(last)));
        // A server that selects a context twice or under two ids breaks SMC-REPLY-1 (the
        // client reports it) whether or not the case can go on.
        self.drain_violations();
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
        let hs = self.haggling().await?;
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
