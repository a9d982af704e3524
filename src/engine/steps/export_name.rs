//! `export-name`: end haggling with NBD_OPT_EXPORT_NAME. It has no option reply: on success
//! the server sends the export's size and flags (and 124 zeros unless NO_ZEROES was agreed),
//! and on an export it will not give it can only end the session (EXPNAME-FAIL-1). A first
//! READ right after it shows whether the bytes in between were what was agreed: with NO_ZEROES
//! a reply that opens with zeros is the padding the server must not send (EXPNAME-NOZERO-1).

use super::Run;
use crate::checks::{self, from_violation};
use crate::client::ClientError;
use crate::engine::case::{self, Close, Expect};
use crate::engine::link::Link;
use crate::engine::outcome::Capabilities;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{option, reply_type};

/// The probe READ's length: small, so that it fits any export and any maximum payload.
const PROBE_LEN: u64 = 512;

impl Run<'_> {
    pub(super) async fn export_name(&mut self, e: &case::ExportName) -> Result<(), Stop> {
        if self.link.is_closed() {
            let hs = self.start(None).await?;
            self.link = Link::Haggling(hs);
        }
        let export = e
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        if e.expect.close == Close::Required {
            self.served_anyway(&export).await?;
        }
        let Some(hs) = self.link.take_handshake() else {
            return Err(Stop::Error("EXPORT_NAME outside option haggling".into()));
        };
        let no_zeroes = hs.no_zeroes;
        self.record.note(format!(
            "→ NBD_OPT_EXPORT_NAME ({}) export={export:?}{}",
            option::EXPORT_NAME,
            if no_zeroes { " (NO_ZEROES agreed)" } else { "" }
        ));
        let clause = self.clause_of(&e.expect);
        let entered = hs.export_name(&export, self.case.dialect).await;
        if e.expect.close == Close::Required {
            match entered {
                Err(ClientError::Closed { .. } | ClientError::Io(_)) => {
                    self.record.note("← connection closed")
                }
                Ok(session) => {
                    let n = &session.negotiated;
                    let line = format!("size={} flags={:#06x}", n.size, n.transmission_flags);
                    self.record.note(format!("← {line}"));
                    self.record
                        .found(checks::export_name::not_closed(Some(clause), line));
                    session.disconnect().await;
                }
                Err(other) => self.record.found(checks::export_name::not_closed(
                    Some(clause),
                    other.to_string(),
                )),
            }
            return Ok(());
        }
        let mut session = match entered {
            Ok(s) => s,
            Err(err) => {
                self.lost_in_haggling(err, false, Some(clause))?;
                return Err(Stop::Error("EXPORT_NAME did not enter transmission".into()));
            }
        };
        let neg = session.negotiated.clone();
        self.record.note(format!(
            "← size={} flags={:#06x}{}",
            neg.size,
            neg.transmission_flags,
            if no_zeroes {
                ""
            } else {
                " and 124 padding bytes"
            }
        ));
        self.record.caps = Capabilities {
            structured_replies: neg.structured,
            extended_headers: neg.extended,
            contexts: neg.contexts.iter().map(|(_, n)| n.clone()).collect(),
        };
        self.record.found_all(checks::session::entered(&neg));
        session.set_timeout(self.settings.reply_timeout);
        let length = neg.size.min(PROBE_LEN);
        if length > 0 {
            self.record.note(format!("→ READ offset=0 length={length}"));
            match session.read(0, length as u32).await {
                Ok(reply) => self.record.note(match reply.error() {
                    None => "← READ ok".to_owned(),
                    Some(e) => format!("← READ error {e}"),
                }),
                Err(ClientError::Protocol(v)) => {
                    let padding =
                        checks::export_name::padding_despite_no_zeroes(no_zeroes, session.unread());
                    self.record
                        .found(padding.unwrap_or_else(|| from_violation(&v)));
                    self.link = Link::Transmitting(session);
                    self.drop_link();
                    return Err(Stop::Error(
                        "the stream is out of step after EXPORT_NAME".into(),
                    ));
                }
                // A close or a deadline missed is graded as after any request.
                Err(other) => {
                    let why = other.to_string();
                    self.link = Link::Transmitting(session);
                    self.judge(Err(other), &Expect::SUCCESS, checks::request::MUST_SUCCEED)?;
                    self.drop_link();
                    return Err(Stop::Error(format!("the READ after EXPORT_NAME: {why}")));
                }
            }
        }
        self.link = Link::Transmitting(session);
        self.check_needs(&neg)
    }

    /// Whether the export exists is the server's to say: one that serves any name (nbdkit
    /// gives its one export whatever the name) owes no close. NBD_OPT_INFO asks first, on the
    /// same connection; an ACK makes the case `unsupported` there.
    async fn served_anyway(&mut self, export: &str) -> Result<(), Stop> {
        self.record
            .note(transcript::option(option::INFO, Some(export), &[], None));
        let hs = self.haggling().await?;
        match hs.info_or_go(option::INFO, export, &[]).await {
            Ok((_, last)) => {
                let name = reply_type::name(last.header.reply_type);
                self.record.note(format!("← {name}"));
                if last.header.reply_type == reply_type::ACK {
                    return Err(Stop::Unsupported(format!(
                        "the server serves export {export:?} (INFO says ACK)"
                    )));
                }
                Ok(())
            }
            Err(err) => {
                self.lost_in_haggling(err, false, None)?;
                Err(Stop::Error(
                    "no connection left for EXPORT_NAME after INFO".into(),
                ))
            }
        }
    }
}
