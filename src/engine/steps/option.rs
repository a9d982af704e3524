//! `option`: one option, as the case spells it (any number, any payload, any claimed length),
//! sent during haggling; its replies are decoded, shown and checked.

use crate::clauses::ClauseId;
use bytes::BytesMut;

use super::Run;
use crate::checks::options::InsistsOnExtendedHeaders;
use crate::checks::{self, from_violation};
use crate::client::negotiate::OptionReply;
use crate::client::ClientError;
use crate::engine::case::{self, Close};
use crate::engine::outcome::ConnectionLoss;
use crate::engine::run::Stop;
use crate::engine::transcript;
use crate::wire::consts::{magic, option, reply_type};
use crate::wire::handshake::{self, decode_meta_context_reply, decode_server_reply, Info};

impl Run<'_> {
    pub(super) async fn option(&mut self, o: &case::OptionStep) -> Result<(), Stop> {
        let opt = o.option.0;
        let export = o
            .export
            .clone()
            .unwrap_or_else(|| self.spec.target.export.clone());
        let queries: Vec<&str> = o.queries.iter().map(String::as_str).collect();
        let data: Vec<u8> = match &o.data_hex {
            Some(hex) => hex.bytes(&export).map_err(Stop::Error)?,
            None => match opt {
                option::LIST_META_CONTEXT | option::SET_META_CONTEXT => {
                    handshake::meta_context_payload(&export, &queries).to_vec()
                }
                option::INFO | option::GO => handshake::info_request_payload(&export, &[]).to_vec(),
                _ => Vec::new(),
            },
        };
        let mut frame = BytesMut::new();
        handshake::encode_option_raw(
            &mut frame,
            magic::IHAVEOPT,
            opt,
            o.claimed_length.unwrap_or(data.len() as u32),
            &data,
        );
        let hs = self.haggling().await?;
        let sent = hs.send_raw(&frame).await;
        let replies = match sent {
            Ok(()) => hs.read_option_replies(opt).await,
            Err(e) => Err(e),
        };
        let claimed = o.claimed_length.unwrap_or(data.len() as u32);
        let hand_made = o.data_hex.is_some() || o.claimed_length.is_some();
        let names_export = !hand_made
            && matches!(
                opt,
                option::LIST_META_CONTEXT | option::SET_META_CONTEXT | option::INFO | option::GO
            );
        self.record.note(transcript::option(
            opt,
            names_export.then_some(export.as_str()),
            &queries,
            hand_made.then_some((data.len(), claimed)),
        ));
        let replies = match replies {
            Ok(r) => r,
            Err(ClientError::Closed { .. } | ClientError::Io(_)) if opt == option::ABORT => {
                self.record.note("← connection closed");
                self.drop_link();
                self.record.found(checks::options::abort_unacknowledged());
                return Ok(());
            }
            Err(e) => {
                let clause = self.clause_of(&o.expect);
                let allowed = o.expect.close == Close::Allowed;
                return self.lost_in_haggling(e, allowed, Some(clause));
            }
        };
        let mut contexts = Vec::new();
        let mut ids = Vec::new();
        for r in &replies {
            if r.header.reply_type == reply_type::META_CONTEXT {
                if let Some(d) = decode_meta_context_reply(&r.data) {
                    ids.push(d.value.0);
                    contexts.push(d.value.1.clone());
                    // A name the server got wrong (MC-NAME-1, GEN-STR-1) is reported whatever
                    // the option; a SET's replies are reported below, with its own rules.
                    if opt != option::SET_META_CONTEXT {
                        self.record.violations(&d.violations);
                    }
                }
            }
            self.record.note(reply_line(r));
        }
        let last = replies.last().map_or(0, |r| r.header.reply_type);
        // ERR_UNSUP is how a server says it does not implement an optional option (HS-UNSUP-1,
        // SR-REPLY-1, EH-UNSUP-1, LMC-SHAPE-1): the case cannot apply, which is no failure,
        // unless the case itself expects ERR_UNSUP.
        let optional = matches!(
            opt,
            option::STRUCTURED_REPLY
                | option::EXTENDED_HEADERS
                | option::LIST_META_CONTEXT
                | option::SET_META_CONTEXT
        );
        let unsup_expected = o
            .expect
            .reply
            .iter()
            .any(|r| r == "ERR_UNSUP" || r == "ERR_*");
        if optional && last == reply_type::ERR_UNSUP && !unsup_expected {
            return Err(Stop::Unsupported(format!(
                "the server does not implement NBD_OPT_{} (ERR_UNSUP)",
                option::name(opt)
            )));
        }
        // A SET's contexts are checked as the client checks its own (decoding, SMC-REPLY-1),
        // and reported here, where the old per-step check stood.
        let selected = match (opt, self.link.handshake()) {
            (option::SET_META_CONTEXT, Some(hs)) => {
                let before = hs.violations.len();
                let selected = hs.meta_contexts(opt, &replies);
                let broken = hs.violations.split_off(before);
                self.record.violations(&broken);
                selected
            }
            _ => Vec::new(),
        };
        if opt == option::LIST_META_CONTEXT {
            self.record.found_all(checks::options::list_reply_ids(&ids));
            let types: Vec<u32> = replies.iter().map(|r| r.header.reply_type).collect();
            self.record.found_all(checks::options::list_shape(&types));
        }
        self.record
            .found_all(checks::options::namespaces(&contexts));
        let clause = self.clause_of(&o.expect);
        let (structured, extended) = self
            .link
            .handshake()
            .map_or((false, false), |hs| (hs.structured, hs.extended));
        let allowed = checks::options::may_require_extended_headers(
            opt,
            structured,
            extended,
            (!hand_made).then_some(o.queries.as_slice()),
        );
        match checks::options::insists_on_extended_headers(&o.expect, last, allowed) {
            InsistsOnExtendedHeaders::No => {
                let findings = checks::options::final_reply(&o.expect, clause, last, &contexts);
                self.record.found_all(findings);
            }
            InsistsOnExtendedHeaders::AnotherRefusal => {}
            InsistsOnExtendedHeaders::CaseCannotRun => {
                return Err(Stop::Unsupported(format!(
                    "the server insists on extended headers (NBD_OPT_{} refused with \
                     ERR_EXT_HEADER_REQD, as the extension allows)",
                    option::name(opt)
                )));
            }
        }
        // Keep the handshake's idea of the state in step with what the server accepted.
        if opt == option::ABORT {
            self.drop_link();
        } else if let Some(hs) = self.link.handshake() {
            hs.accepted(opt, last, &export, selected);
        }
        Ok(())
    }

    /// An option the case cannot do without (a `negotiate` step's, a GO that must succeed)
    /// broke off: what the server broke on the way is its finding, as in a case about that
    /// option ([`Run::lost_in_haggling`]), and the case cannot go on. Only a harness error
    /// stops the case without one.
    pub(super) fn handshake_broken(&mut self, e: ClientError, opt: u32) -> Stop {
        let why = e.to_string();
        match self.lost_in_haggling(e, false, None) {
            Ok(()) => Stop::Error(format!(
                "the handshake cannot go on: NBD_OPT_{} broke off ({why})",
                option::name(opt)
            )),
            Err(stop) => stop,
        }
    }

    /// The server went away (or broke framing) while we haggled.
    pub(super) fn lost_in_haggling(
        &mut self,
        e: ClientError,
        allow_close: bool,
        clause: Option<ClauseId>,
    ) -> Result<(), Stop> {
        self.drop_link();
        match e {
            ClientError::Closed { .. } | ClientError::Io(_) => {
                self.record.note("← connection closed");
                if !allow_close {
                    self.record.lost(ConnectionLoss::Dropped);
                    self.record.found(checks::options::closed_while_haggling());
                }
                Ok(())
            }
            ClientError::Protocol(v) => {
                self.record.found(from_violation(&v));
                Ok(())
            }
            ClientError::Timeout { .. } => {
                let after = self.settings.reply_timeout;
                self.record
                    .found(checks::options::no_option_reply(clause, after));
                Ok(())
            }
            other => Err(Stop::Error(other.to_string())),
        }
    }
}

/// One option reply as the transcript shows it.
fn reply_line(r: &OptionReply) -> String {
    match r.header.reply_type {
        reply_type::META_CONTEXT => match decode_meta_context_reply(&r.data) {
            Some(d) => format!("← META_CONTEXT id={} {:?}", d.value.0, d.value.1),
            None => "← META_CONTEXT (too short)".to_owned(),
        },
        reply_type::SERVER => format!(
            "← SERVER {:?}",
            decode_server_reply(&r.data)
                .map(|d| d.value.0)
                .unwrap_or_default()
        ),
        reply_type::INFO => format!("← INFO {:?}", Info::decode(&r.data).map(|d| d.value)),
        t => format!(
            "← {}{}",
            reply_type::name(t),
            transcript::option_text(&r.data)
        ),
    }
}
