//! What a step expects: one shape for every kind of step.

use serde::Deserialize;

use crate::clauses::ClauseId;

/// What a step expects, in one shape for every kind of step:
/// `expect = { outcome = "einval", close = "allowed", alive-after = true }` on a request,
/// `expect = { reply = ["ACK"], contexts = 1, clause = "SMC-REPLY-1" }` on an option or GO,
/// `expect = { close = "required", clause = "HS-CFLAGS-3" }` on a connect. Which fields a kind
/// of step takes is checked when the case loads ([`Case::validate`](super::Case::validate)).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Expect {
    /// Requests: how the reply must come out (default `ok`).
    #[serde(default)]
    pub outcome: Outcome,
    /// Options and GO: the acceptable final replies: `ACK`, `ERR_INVALID`, …, or `ERR_*` for
    /// any error.
    #[serde(default)]
    pub reply: Vec<String>,
    /// Options: exactly this many META_CONTEXT replies.
    pub contexts: Option<usize>,
    /// Options: context names that must be among the replies.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Whether the server may (the step broke a client MUST) or must close the connection.
    #[serde(default)]
    pub close: Close,
    /// Requests: afterwards, a valid request on the same connection must still succeed
    /// (TX-NODROP-1).
    #[serde(default)]
    pub alive_after: bool,
    /// The clause an unmet expectation breaks: requests default to the case's first clause,
    /// connect steps to HS-CFLAGS-3; option and go steps name theirs.
    pub clause: Option<ClauseId>,
}

/// How a request's reply must come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A successful reply.
    #[default]
    Ok,
    /// An error reply with EINVAL (another error value is graded by the same clause).
    Einval,
    /// Any error reply.
    Error,
    /// Any well-formed reply, error or success.
    Any,
    /// Draft only: the unknown-type fallback (one descriptor equal to the request, status 0).
    Fallback,
    /// A block status the server's backend fails: an error (its chunks graded as always), or
    /// one descriptor per context spanning the request (BS-ERR-FALLBACK-1). A server whose
    /// backend answered makes the case `unsupported`: it says nothing of failures.
    BackendFailure,
}

/// Whether the server may close the connection instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Close {
    /// Closing breaks a rule (TX-NODROP-1, HS-NOHARD-1).
    #[default]
    Forbidden,
    /// The step broke a client MUST, so the server may close instead (TX-VIOL-1).
    Allowed,
    /// The spec says the server should close after this request (a payload above the maximum,
    /// BS-PAYLOAD-BIG-1): closing, before or after an error reply, is what it should do; a
    /// reply after which the connection stays open breaks the step's clause.
    Preferred,
    /// The server must close (HS-CFLAGS-3).
    Required,
    /// The spec says the server should not close here, though the request is one a client
    /// should not send (length 0: BS-REQ-ZERO-1): a close is graded under the step's clause, as
    /// the SHOULD it is, not as the MUST of TX-NODROP-1.
    Discouraged,
}

impl Expect {
    /// What a request that must succeed on any server expects.
    pub const SUCCESS: Expect = Expect {
        outcome: Outcome::Ok,
        reply: Vec::new(),
        contexts: None,
        contains: Vec::new(),
        close: Close::Forbidden,
        alive_after: false,
        clause: None,
    };

    /// Which fields a kind of step may set.
    pub(super) fn fits(&self, kind: StepKind) -> Result<(), String> {
        let misplaced = |field: &str, kind: &str| Err(format!("`{field}` is not for {kind} steps"));
        match kind {
            StepKind::Request => {
                if !self.reply.is_empty() || self.contexts.is_some() || !self.contains.is_empty() {
                    return misplaced("reply, contexts, contains", "request");
                }
                if self.close == Close::Required {
                    return misplaced("close = \"required\"", "request");
                }
            }
            StepKind::Option => {
                if self.outcome != Outcome::Ok || self.alive_after {
                    return misplaced("outcome, alive-after", "option and go");
                }
                if self.reply.is_empty() || self.clause.is_none() {
                    return Err("an option or go expectation names its `reply` and `clause`".into());
                }
                if matches!(
                    self.close,
                    Close::Required | Close::Preferred | Close::Discouraged
                ) {
                    return misplaced(
                        "close = \"required\", \"preferred\" or \"discouraged\"",
                        "option and go",
                    );
                }
            }
            StepKind::Connect => {
                if self.outcome != Outcome::Ok
                    || self.alive_after
                    || !self.reply.is_empty()
                    || self.contexts.is_some()
                    || !self.contains.is_empty()
                {
                    return Err(
                        "a connect or export-name expectation takes only `close` and `clause`"
                            .into(),
                    );
                }
                if matches!(
                    self.close,
                    Close::Allowed | Close::Preferred | Close::Discouraged
                ) {
                    return misplaced(
                        "close = \"allowed\", \"preferred\" or \"discouraged\"",
                        "connect and export-name",
                    );
                }
            }
        }
        Ok(())
    }
}

/// The kinds of step an expectation can belong to.
#[derive(Clone, Copy)]
pub(super) enum StepKind {
    Request,
    Option,
    Connect,
}
