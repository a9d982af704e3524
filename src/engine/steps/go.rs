//! `go`: end haggling with NBD_OPT_GO (or expect GO to fail), entering transmission.

use super::Run;
use crate::checks::options::InsistsOnExtendedHeaders;
use crate::checks::{self, from_violation};
use crate::client::negotiate::{ExportInfo, GO_INFO_REQUESTS};
use crate::client::{ClientError, Negotiated};
use crate::engine::case::{self, Close, Need};
use crate::engine::link::Link;
use crate::engine::outcome::Capabilities;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{option, reply_type};

impl Run<'_> {
    pub(super) async fn go_step(&mut self, g: &case::Go) -> Result<(), Stop> {
        if self.link.is_closed() {
            let hs = self.start(None).await?;
            self.link = Link::Haggling(hs);
        }
        let export = g
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        let said = if g.after_info {
            self.info_first(&export).await?
        } else {
            None
        };
        self.go_checked(&export, g.expect.as_ref(), said).await
    }

    /// NBD_OPT_INFO with the parameters GO is about to use; what it said, if it succeeded.
    async fn info_first(&mut self, export: &str) -> Result<Option<ExportInfo>, Stop> {
        let line = transcript::option(option::INFO, Some(export), &[], None);
        self.record.note(line);
        let hs = self.haggling().await?;
        let answer = hs.info_or_go(option::INFO, export, &GO_INFO_REQUESTS).await;
        match answer {
            Ok((info, last)) => {
                self.record.note(format!(
                    "← {}{}",
                    info_line(&info),
                    reply_type::name(last.header.reply_type)
                ));
                Ok((!last.header.is_error()).then_some(info))
            }
            Err(e) => {
                self.lost_in_haggling(e, false, None)?;
                Err(Stop::Error("no connection left for GO after INFO".into()))
            }
        }
    }

    /// GO on the haggling connection. With `expect`, the final reply is graded against it and a
    /// refusal is an outcome; without, a refusal ends the case.
    pub(super) async fn go(
        &mut self,
        export: &str,
        expect: Option<&case::Expect>,
    ) -> Result<(), Stop> {
        self.go_checked(export, expect, None).await
    }

    /// GO, and with `said` (what an INFO right before it said), the two compared.
    async fn go_checked(
        &mut self,
        export: &str,
        expect: Option<&case::Expect>,
        said: Option<ExportInfo>,
    ) -> Result<(), Stop> {
        let Some(mut hs) = self.link.take_handshake() else {
            return Err(Stop::Error("GO outside option haggling".into()));
        };
        let line = transcript::option(option::GO, Some(export), &[], None);
        self.record.note(line);
        let answer = hs.info_or_go(option::GO, export, &GO_INFO_REQUESTS).await;
        let (info, last) = match answer {
            Ok(r) => r,
            Err(e) => {
                // The handshake is about to go: keep what it saw broken on the way.
                let broken = std::mem::take(&mut hs.violations);
                self.record.violations(&broken);
                // A GO that must succeed (a `negotiate` step's, a `go` that expects nothing
                // else) leaves the case nothing to run on.
                let Some(expect) = expect else {
                    return Err(self.handshake_broken(e, option::GO));
                };
                let clause = self.clause_of(expect);
                return self.lost_in_haggling(e, expect.close == Close::Allowed, Some(clause));
            }
        };
        let final_reply = reply_type::name(last.header.reply_type);
        // Only what arrived: a refused GO usually carries no NBD_INFO_EXPORT at all.
        self.record.note(match info.size {
            Some(_) => format!("← {}{final_reply}", info_line(&info)),
            None => format!("← {final_reply}{}", transcript::option_text(&last.data)),
        });
        let extended = hs.extended;
        // Bit 12 "SHOULD NOT" be advertised at GO to a client that selected no context, a rule
        // for GO alone: INFO may show it where GO does not.
        let may_differ = if extended && hs.contexts.is_empty() {
            crate::wire::consts::transmission_flag::BLOCK_STATUS_PAYLOAD
        } else {
            0
        };
        self.record.found_all(checks::session::refusal(
            last.header.reply_type,
            &GO_INFO_REQUESTS,
            extended,
        ));
        self.record
            .found_all(checks::session::info_once(&info.kinds));
        if let (Some(said), false) = (&said, last.header.is_error()) {
            self.record
                .found_all(checks::session::same_story(said, &info, may_differ));
        }
        if let Some(expect) = expect {
            let clause = self.clause_of(expect);
            let allowed =
                checks::options::may_require_extended_headers(option::GO, true, extended, None);
            let last_type = last.header.reply_type;
            match checks::options::insists_on_extended_headers(expect, last_type, allowed) {
                InsistsOnExtendedHeaders::No => {
                    let findings = checks::options::final_reply(expect, clause, last_type, &[]);
                    self.record.found_all(findings);
                }
                InsistsOnExtendedHeaders::AnotherRefusal => {}
                // EH-REQD-1 graded it above, as the SHOULD NOT it is.
                InsistsOnExtendedHeaders::CaseCannotRun => {
                    self.link = Link::Haggling(hs);
                    return Err(Stop::Unsupported(format!(
                        "the server insists on extended headers (GO {export:?} refused with \
                         {final_reply})"
                    )));
                }
            }
        }
        if last.header.is_error() {
            self.link = Link::Haggling(hs);
            if expect.is_some() {
                return Ok(());
            }
            // A server may insist on extended headers (graded EH-REQD-1 above): a case that goes
            // without them cannot run there, which is no harness error.
            if last.header.reply_type == reply_type::ERR_EXT_HEADER_REQD && !extended {
                return Err(Stop::Unsupported(format!(
                    "the server insists on extended headers (GO {export:?} refused with \
                     {final_reply})"
                )));
            }
            return Err(Stop::Error(format!(
                "GO {export:?} refused with {final_reply}"
            )));
        }
        let broken = std::mem::take(&mut hs.violations);
        self.record.violations(&broken);
        let mut session = match hs.enter_transmission(export, info, self.case.dialect) {
            Ok(s) => s,
            // A GO that succeeds without NBD_INFO_EXPORT is the server's fault (GO-ACK-1).
            Err(ClientError::Protocol(v)) => {
                self.record.found(from_violation(&v));
                return Err(Stop::Error(format!("cannot enter transmission: {v}")));
            }
            Err(e) => return Err(Stop::Error(e.to_string())),
        };
        self.record.caps = Capabilities {
            structured_replies: session.negotiated.structured,
            extended_headers: session.negotiated.extended,
            contexts: session
                .negotiated
                .contexts
                .iter()
                .map(|(_, n)| n.clone())
                .collect(),
        };
        self.record
            .found_all(checks::session::entered(&session.negotiated));
        // From here on, messages are replies: they get the generous deadline.
        session.set_timeout(self.settings.reply_timeout);
        // Stored first, so that a case stopped for a missing need keeps the session's findings.
        let negotiated = session.negotiated.clone();
        self.link = Link::Transmitting(session);
        self.check_needs(&negotiated)
    }

    pub(super) fn check_needs(&self, neg: &Negotiated) -> Result<(), Stop> {
        for need in self.case.needs() {
            let met = match need {
                Need::StructuredReplies => neg.structured,
                Need::ExtendedHeaders => neg.extended,
                Need::Context(c) => neg.contexts.iter().any(|(_, n)| n == c),
                Need::Flag(f) => neg.transmission_flags & f != 0,
                Need::NoFlag(f) => neg.transmission_flags & f == 0,
                Need::MinBlockAbove1 => neg.block_sizes.is_some_and(|b| b.minimum > 1),
                Need::FixtureTruth => self.spec.truth.is_some(),
                Need::DraftStatus => neg.advertises_draft_status(),
                Need::Writable => !neg.read_only(),
            };
            if !met {
                return Err(Stop::Unsupported(format!("needs {need}")));
            }
        }
        Ok(())
    }
}

/// What an INFO or GO reply said, for the transcript: `INFO size=… flags=… block sizes …`.
fn info_line(info: &ExportInfo) -> String {
    match info.size {
        Some(size) => format!(
            "INFO size={size} flags={:#06x}{} then ",
            info.transmission_flags,
            info.block_sizes.map_or(String::new(), |b| format!(
                " block sizes {}/{}/{}",
                b.minimum, b.preferred, b.maximum
            )),
        ),
        None => String::new(),
    }
}
