//! `stability`: the export mapped again, context by context and in reverse order, and compared
//! with the first walk and with earlier `map` steps (BS-STABLE-1).

use super::Run;
use crate::checks;
use crate::engine::case::Negotiate;
use crate::engine::run::Stop;
use crate::wire::request::Request;

impl Run<'_> {
    pub(super) async fn stability(&mut self) -> Result<(), Stop> {
        let Some(base) = self.last_negotiate.clone() else {
            return Err(Stop::Error("stability needs a negotiate step first".into()));
        };
        let neg = self.negotiated()?;
        let names: Vec<String> = neg.contexts.iter().map(|(_, n)| n.clone()).collect();
        if names.is_empty() {
            return Err(Stop::Error("stability needs at least one context".into()));
        }
        let compact_max = Request::compact_max(neg.minimum_block());
        let first = self.walk(&names, 0, false, compact_max, false).await?;
        // Earlier `map` steps of the case (other negotiations, other context mixes, e.g. the
        // B7 recipe of peers.md) must agree with this walk too.
        let size = self.negotiated()?.size;
        let broken = checks::stability::same_maps(
            &self.mapped,
            first.iter().filter(|t| t.covered >= size),
            |context, was| format!("{context} as an earlier map step saw it: {was}"),
            |now| format!("now: {now}"),
        );
        if let Some(broken) = broken {
            self.record.found(broken);
            return Ok(());
        }
        let mut reversed = names.clone();
        reversed.reverse();
        let mut mixes: Vec<Vec<String>> = names.iter().rev().map(|n| vec![n.clone()]).collect();
        mixes.push(reversed.clone());
        mixes.push(reversed);
        for mix in mixes {
            let n = Negotiate {
                contexts: mix.clone(),
                ..base.clone()
            };
            self.negotiate(&n).await?;
            let again = self.walk(&mix, 0, false, compact_max, false).await?;
            self.record
                .note(format!("(mapped again with contexts {mix:?})"));
            let broken = checks::stability::same_maps(
                &first,
                &again,
                |context, was| format!("{context} as first mapped: {was}"),
                |now| format!("with contexts {mix:?}: {now}"),
            );
            if let Some(broken) = broken {
                self.record.found(broken);
                return Ok(());
            }
        }
        self.last_negotiate = Some(base);
        Ok(())
    }
}
