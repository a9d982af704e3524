//! The case file format (`cases/**/*.toml`): scripted request sequences, as data, validated
//! into types when a file loads (clause ids against the registry, needs, flags, options, hex
//! payloads, offset and length expressions): a case that loads is one the engine can run, and
//! a field that does not parse fails loading with the file and the reason. A case's id is its
//! path (`cases/bs/range/past-end.toml` is `bs.range.past-end`).
//!
//! A case names its clauses, dialect, fixture and needs, then lists steps. Each step is one
//! table with a single key naming its kind, e.g. `{ block-status = { offset = "0", length =
//! "4K", flags = ["REQ_ONE"] } }`. Offsets and lengths are expressions: a number with an
//! optional K/M/G/T suffix, `size` (the export size), `max` (2^64 − 1), or one of those plus or
//! minus a number (`size-512`, `max-511`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clauses::ClauseRef;
use crate::size::parse_number;
use crate::wire::consts::{command_flag, option, transmission_flag};
use crate::Dialect;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub title: String,
    pub clauses: Vec<ClauseRef>,
    #[serde(default)]
    pub dialect: Dialect,
    pub fixture: String,
    /// Capabilities without which the case grades `unsupported` (see [`Need`]).
    #[serde(default)]
    pub needs: Vec<Need>,
    /// Set when the outcome on a server that works on requests concurrently depends on
    /// timing (say, a request racing NBD_CMD_DISC): why. Such a case is graded and reported
    /// as always, but its snapshot is compared on the reference server only, whose outcome is
    /// fixed; a third-party server's verdict may differ from run to run, and that is the finding.
    #[serde(default)]
    pub races: Option<String>,
    /// Set when the case's requests may crash a server that fails it (a probe that has
    /// brought real servers down): why. A server the harness launches is then started for
    /// this case alone, so that a crash takes no other case's server with it.
    #[serde(default, rename = "own-server")]
    pub own_server: Option<String>,
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Connect, negotiate (extended headers or structured replies, contexts) and GO.
    Negotiate(Negotiate),
    /// Connect and read the greeting, leaving the connection in option haggling.
    Connect(Connect),
    /// Send one option during haggling and check its replies.
    Option(OptionStep),
    /// End haggling with GO (or expect GO to fail).
    Go(Go),
    BlockStatus(BlockStatus),
    DraftStatus(DraftStatus),
    /// A request header with any field, including a wrong magic.
    RawRequest(RawRequest),
    /// Several block-status requests in flight at once.
    Pipeline(Pipeline),
    /// Map the whole export for every selected context, with the read-back and truth oracles.
    Map(MapStep),
    /// Map again with other context mixes and orders; everything must agree.
    Stability(Empty),
    /// Close and negotiate again as the last `negotiate` step did.
    Reconnect(Empty),
    /// A block-status request and NBD_CMD_DISC back to back: the reply, then the close.
    Disc(Empty),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Negotiate {
    #[serde(default = "yes")]
    pub structured: bool,
    #[serde(default)]
    pub extended: bool,
    #[serde(default)]
    pub contexts: Vec<String>,
    /// Export for SET_META_CONTEXT and GO; default: the target's.
    pub export: Option<String>,
    /// Export for GO only, when it should differ from the SET one.
    pub go_export: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connect {
    /// Client flags to send instead of the usual ones.
    pub client_flags: Option<u32>,
    /// `close = "required"`: the server must close right after the client flags.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OptionStep {
    /// Option name (`SET_META_CONTEXT`, …) or number.
    pub option: OptionCode,
    pub export: Option<String>,
    /// For LIST/SET_META_CONTEXT.
    #[serde(default)]
    pub queries: Vec<String>,
    /// Replaces the payload entirely (hex; blanks ignored). `{export-len}` stands for the
    /// 4-byte length of the export name and `{export}` for its bytes, so a hand-made payload
    /// names the export of whatever server runs the case.
    pub data_hex: Option<HexTemplate>,
    /// Announce this payload length instead of the real one.
    pub claimed_length: Option<u32>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Go {
    pub export: Option<String>,
    pub expect: Option<Expect>,
}

/// What a step expects, in one shape for every kind of step:
/// `expect = { outcome = "einval", close = "allowed", alive-after = true }` on a request,
/// `expect = { reply = ["ACK"], contexts = 1, clause = "SMC-REPLY-1" }` on an option or GO,
/// `expect = { close = "required", clause = "HS-CFLAGS-3" }` on a connect. Which fields a kind
/// of step takes is checked when the case loads ([`Case::validate`]).
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
    /// The clause an unmet expectation breaks (requests default to the case's first clause).
    pub clause: Option<ClauseRef>,
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
    /// The server must close (HS-CFLAGS-3).
    Required,
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
    fn fits(&self, kind: StepKind) -> Result<(), String> {
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
                if self.close == Close::Required {
                    return misplaced("close = \"required\"", "option and go");
                }
            }
            StepKind::Connect => {
                if self.outcome != Outcome::Ok
                    || self.alive_after
                    || !self.reply.is_empty()
                    || self.contexts.is_some()
                    || !self.contains.is_empty()
                {
                    return Err("a connect expectation takes only `close` and `clause`".into());
                }
                if self.close == Close::Allowed {
                    return misplaced("close = \"allowed\"", "connect");
                }
            }
        }
        Ok(())
    }
}

/// The kinds of step an expectation can belong to.
#[derive(Clone, Copy)]
enum StepKind {
    Request,
    Option,
    Connect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockStatus {
    pub offset: Expr,
    pub length: Expr,
    #[serde(default)]
    pub flags: CommandFlags,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DraftStatus {
    pub offset: Expr,
    pub length: Expr,
    /// 0 = allocation, 1 = dirtiness, anything else = an unknown query type.
    pub selector: u16,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRequest {
    pub magic: Option<u32>,
    pub command: u16,
    #[serde(default)]
    pub flags: CommandFlags,
    pub offset: Expr,
    pub length: Expr,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pipeline {
    pub count: usize,
    pub length: Expr,
    #[serde(default)]
    pub flags: CommandFlags,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapStep {
    #[serde(default)]
    pub req_one: bool,
    /// Longest request (default: as long as the header allows).
    pub max_request: Option<Expr>,
    /// Draft dialect: the selectors to walk (default [0]).
    #[serde(default)]
    pub selectors: Vec<u16>,
}

/// A capability a case needs, spelled `structured-replies`, `extended-headers`,
/// `min-block>1`, `fixture-truth`, `draft-status`, `flag:NAME`, `no-flag:NAME` or a context
/// name (`base:allocation`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Need {
    StructuredReplies,
    ExtendedHeaders,
    Context(String),
    Flag(u16),
    NoFlag(u16),
    MinBlockAbove1,
    FixtureTruth,
    DraftStatus,
}

impl TryFrom<String> for Need {
    type Error = String;

    fn try_from(s: String) -> Result<Need, String> {
        Ok(match s.as_str() {
            "structured-replies" => Need::StructuredReplies,
            "extended-headers" => Need::ExtendedHeaders,
            "min-block>1" => Need::MinBlockAbove1,
            "fixture-truth" => Need::FixtureTruth,
            "draft-status" => Need::DraftStatus,
            _ if s.starts_with("flag:") => Need::Flag(transmission_flag_named(&s[5..])?),
            _ if s.starts_with("no-flag:") => Need::NoFlag(transmission_flag_named(&s[8..])?),
            _ if s.contains(':') => Need::Context(s),
            _ => return Err(format!("unknown need {s:?}")),
        })
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::StructuredReplies => f.write_str("structured replies"),
            Need::ExtendedHeaders => f.write_str("extended headers"),
            Need::Context(c) => write!(f, "metadata context {c}"),
            Need::Flag(flag) => write!(f, "transmission flag {flag:#06x}"),
            Need::NoFlag(flag) => write!(f, "transmission flag {flag:#06x} clear"),
            Need::MinBlockAbove1 => f.write_str("an advertised minimum block size above 1"),
            Need::FixtureTruth => f.write_str("a fixture the harness built"),
            Need::DraftStatus => {
                f.write_str("transmission flag bit 7 (NBD_FLAG_SEND_GET_LBA_STATUS)")
            }
        }
    }
}

fn transmission_flag_named(name: &str) -> Result<u16, String> {
    transmission_flag::by_name(name).ok_or_else(|| format!("unknown transmission flag {name:?}"))
}

/// Command flags by name (`REQ_ONE`, `FUA`, …) or number (`0x8000`), OR-ed together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct CommandFlags(pub u16);

impl TryFrom<Vec<String>> for CommandFlags {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<CommandFlags, String> {
        let mut flags = 0;
        for n in &names {
            flags |= command_flag::by_name(n)
                .or_else(|| parse_number(n).ok().and_then(|v| u16::try_from(v).ok()))
                .ok_or_else(|| format!("unknown command flag {n:?}"))?;
        }
        Ok(CommandFlags(flags))
    }
}

/// An option by name (`SET_META_CONTEXT`, `NBD_OPT_GO`) or by number (any `u32`, so that a
/// case can send an option no server knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OptionSpelling")]
pub struct OptionCode(pub u32);

#[derive(Deserialize)]
#[serde(untagged)]
enum OptionSpelling {
    Number(i64),
    Name(String),
}

impl TryFrom<OptionSpelling> for OptionCode {
    type Error = String;

    fn try_from(v: OptionSpelling) -> Result<OptionCode, String> {
        match v {
            OptionSpelling::Number(n) => u32::try_from(n)
                .map(OptionCode)
                .map_err(|_| format!("option number {n} out of range")),
            OptionSpelling::Name(s) => option::by_name(s.trim_start_matches("NBD_OPT_"))
                .map(OptionCode)
                .ok_or_else(|| format!("unknown option {s:?}")),
        }
    }
}

/// A raw option payload in hex (blanks ignored), decoded when the case loads. `{export-len}`
/// stands for the 4-byte length of the export name the case addresses and `{export}` for its
/// bytes, so that a hand-made payload names the export of whatever server runs the case
/// (`conform` on the servers the harness launches).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HexTemplate(Vec<HexPiece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum HexPiece {
    Bytes(Vec<u8>),
    ExportLength,
    Export,
}

impl TryFrom<String> for HexTemplate {
    type Error = String;

    fn try_from(s: String) -> Result<HexTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = s.as_str();
        loop {
            let next = [
                ("{export-len}", HexPiece::ExportLength),
                ("{export}", HexPiece::Export),
            ]
            .into_iter()
            .filter_map(|(token, piece)| rest.find(token).map(|at| (at, token, piece)))
            .min_by_key(|(at, _, _)| *at);
            let Some((at, token, piece)) = next else {
                pieces.push(HexPiece::Bytes(decode_hex(rest)?));
                return Ok(HexTemplate(pieces));
            };
            pieces.push(HexPiece::Bytes(decode_hex(&rest[..at])?));
            pieces.push(piece);
            rest = &rest[at + token.len()..];
        }
    }
}

impl HexTemplate {
    /// The payload for a server whose export is named `export`.
    pub fn bytes(&self, export: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in &self.0 {
            match piece {
                HexPiece::Bytes(b) => out.extend(b),
                HexPiece::ExportLength => {
                    let len = u32::try_from(export.len()).map_err(|_| "export name too long")?;
                    out.extend(len.to_be_bytes());
                }
                HexPiece::Export => out.extend(export.as_bytes()),
            }
        }
        Ok(out)
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

/// An offset or length, parsed when the case loads: a number with an optional K/M/G/T suffix
/// (or `0x` hex), `size` (the export size), `max` (2^64 − 1), or one of those plus or minus a
/// number (`size-512`, `max-511`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Expr {
    text: String,
    base: Base,
    /// `Some((true, n))` for `+n`, `Some((false, n))` for `-n`.
    delta: Option<(bool, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Size,
    Max,
    Number(u64),
}

impl TryFrom<String> for Expr {
    type Error = String;

    fn try_from(text: String) -> Result<Expr, String> {
        let e = text.trim();
        let split = e
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-');
        let (base, rest) = match split {
            Some((i, _)) => (&e[..i], Some(&e[i..])),
            None => (e, None),
        };
        let base = match base.trim() {
            "size" => Base::Size,
            "max" => Base::Max,
            n => Base::Number(parse_number(n).map_err(|e| format!("bad number in {text:?}: {e}"))?),
        };
        let delta = match rest {
            None => None,
            Some(r) => Some((
                r.starts_with('+'),
                parse_number(&r[1..]).map_err(|e| format!("bad number in {text:?}: {e}"))?,
            )),
        };
        Ok(Expr { text, base, delta })
    }
}

impl Expr {
    /// A constant, as a case would write it.
    pub fn number(n: u64) -> Expr {
        Expr {
            text: n.to_string(),
            base: Base::Number(n),
            delta: None,
        }
    }

    /// The value on an export of `size` bytes. Arithmetic never wraps: a case that wants an
    /// overflowing range says so with `max` (`offset = "max-511"`); an expression that would
    /// leave 0..2^64 (`size-512` on a 0-byte export) has no value there, and the case does not
    /// fit that export.
    pub fn eval(&self, size: u64) -> Result<u64, String> {
        let base = match self.base {
            Base::Size => size,
            Base::Max => u64::MAX,
            Base::Number(n) => n,
        };
        let value = match self.delta {
            None => Some(base),
            Some((true, n)) => base.checked_add(n),
            Some((false, n)) => base.checked_sub(n),
        };
        value.ok_or_else(|| {
            format!(
                "{:?} is outside 0..2^64 on an export of {size} bytes",
                self.text
            )
        })
    }
}

impl Case {
    /// The case with the fixture's dirty bitmaps renamed to a server's (`renames` holds
    /// (fixture name, server name) pairs): a server we did not set up exports its own bitmaps
    /// (`qemu-nbd -B backup-a`), and the case asks for those instead of `bm0`.
    pub fn with_bitmaps_renamed(&self, renames: &[(String, String)]) -> Case {
        let rename = |name: &mut String| {
            let Some(bitmap) =
                name.strip_prefix(crate::wire::consts::context::QEMU_DIRTY_BITMAP_PREFIX)
            else {
                return;
            };
            if let Some((_, to)) = renames.iter().find(|(from, _)| from == bitmap) {
                *name = format!(
                    "{}{to}",
                    crate::wire::consts::context::QEMU_DIRTY_BITMAP_PREFIX
                );
            }
        };
        let mut case = self.clone();
        for need in &mut case.needs {
            if let Need::Context(name) = need {
                rename(name);
            }
        }
        for step in &mut case.steps {
            match step {
                Step::Negotiate(n) => n.contexts.iter_mut().for_each(rename),
                Step::Option(o) => {
                    o.queries.iter_mut().for_each(rename);
                    o.expect.contains.iter_mut().for_each(rename);
                }
                _ => {}
            }
        }
        case
    }

    /// What the types cannot say: a case names a clause and has steps, and each step's
    /// expectation sets only what its kind of step can check.
    pub fn validate(&self) -> Result<(), String> {
        if self.clauses.is_empty() {
            return Err("names no clause".into());
        }
        if self.steps.is_empty() {
            return Err("has no steps".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let checked = match step {
                Step::BlockStatus(BlockStatus { expect, .. })
                | Step::DraftStatus(DraftStatus { expect, .. })
                | Step::RawRequest(RawRequest { expect, .. }) => expect.fits(StepKind::Request),
                Step::Option(OptionStep { expect, .. })
                | Step::Go(Go {
                    expect: Some(expect),
                    ..
                }) => expect.fits(StepKind::Option),
                Step::Connect(Connect { expect, .. }) => expect.fits(StepKind::Connect),
                _ => Ok(()),
            };
            checked.map_err(|e| format!("step {}: {e}", i + 1))?;
        }
        Ok(())
    }

    pub fn needs(&self) -> &[Need] {
        &self.needs
    }

    /// The case's clause ids as the registry's strings.
    pub fn clause_ids(&self) -> Vec<&'static str> {
        self.clauses.iter().map(|c| c.id()).collect()
    }

    /// The clause a step's unmet expectation breaks by default.
    pub fn main_clause(&self) -> &'static str {
        self.clauses[0].id()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Where case files live: `$NBD_CONFORM_CASES`, else the source tree's `cases/`.
pub fn cases_dir() -> PathBuf {
    std::env::var_os("NBD_CONFORM_CASES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("cases"),
        PathBuf::from,
    )
}

/// Loads and validates every `*.toml` under `dir`, sorted by id; ids must be unique.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    let mut cases = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| CaseError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut case: Case = toml::from_str(&text).map_err(|e| CaseError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        case.validate().map_err(|reason| CaseError::Invalid {
            path: shown.clone(),
            reason,
        })?;
        let from_path = id_of(dir, &path);
        if case.id != from_path {
            return Err(CaseError::Invalid {
                path: shown,
                reason: format!(
                    "the id {:?} is not the file's path (a case at this path has the id \
                     {from_path:?})",
                    case.id
                ),
            });
        }
        case.path = path;
        cases.push(case);
    }
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = cases.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(CaseError::Invalid {
            path: w[1].path.display().to_string(),
            reason: format!("duplicate case id {:?}", w[1].id),
        });
    }
    Ok(cases)
}

/// The id a case file at `path` under `dir` has: its path without `.toml`, `/` read as `.`
/// (`bs/range/past-end.toml` is `bs.range.past-end`), so that a case is found from its id.
fn id_of(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join(".")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CaseError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CaseError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| CaseError::Io {
                path: dir.display().to_string(),
                source,
            })?
            .path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, size: u64) -> Result<u64, String> {
        Expr::try_from(text.to_owned())?.eval(size)
    }

    #[test]
    fn expressions() {
        assert_eq!(eval("64K", 0), Ok(65536));
        assert_eq!(eval("size-512", 4096), Ok(3584));
        assert_eq!(eval("size+1", 4096), Ok(4097));
        assert_eq!(eval("max-511", 0), Ok(u64::MAX - 511));
        assert_eq!(eval("0x10", 0), Ok(16));
        assert_eq!(eval("4G", 0), Ok(1 << 32));
        assert!(Expr::try_from("lots".to_owned()).is_err());
        // Never wraps: on a 0-byte export `size-512` is no offset at all.
        assert!(eval("size-512", 0).is_err());
        assert!(eval("max+1", 0).is_err());
    }

    #[test]
    fn flags() {
        assert_eq!(
            CommandFlags::try_from(vec!["REQ_ONE".into(), "0x8000".into()]),
            Ok(CommandFlags(0x8008))
        );
        assert!(CommandFlags::try_from(vec!["NOPE".into()]).is_err());
    }

    #[test]
    fn payload_hex_spells_the_export_of_the_server_under_test() {
        let hex = |s: &str| HexTemplate::try_from(s.to_owned());
        assert_eq!(
            hex("{export-len} {export} 0002 7ffe")
                .unwrap()
                .bytes("disk")
                .unwrap(),
            [0, 0, 0, 4, b'd', b'i', b's', b'k', 0, 2, 0x7f, 0xfe]
        );
        assert_eq!(
            hex("000003e8{export}").unwrap().bytes("").unwrap(),
            [0, 0, 3, 0xe8]
        );
        assert_eq!(hex("").unwrap().bytes("x").unwrap(), Vec::<u8>::new());
        assert!(hex("{export} 0").is_err());
        assert!(hex("{exports}").is_err());
    }

    #[test]
    fn a_case_is_found_from_its_id() {
        let dir = Path::new("/x/cases");
        assert_eq!(
            id_of(dir, &dir.join("bs/range/past-end.toml")),
            "bs.range.past-end"
        );
    }

    #[test]
    fn a_case_file_that_names_an_unknown_clause_or_need_does_not_load() {
        let case = |clauses: &str, needs: &str| {
            toml::from_str::<Case>(&format!(
                "id = 'x'\ntitle = 't'\nclauses = [{clauses}]\nneeds = [{needs}]\nfixture = 'f'\n\
                 steps = [{{ block-status = {{ offset = '0', length = '4K' }} }}]"
            ))
        };
        assert!(case("'BS-REP-PERCTX-1'", "'base:allocation'").is_ok());
        let e = case("'NO-SUCH-1'", "").unwrap_err().to_string();
        assert!(e.contains("unknown clause \"NO-SUCH-1\""), "{e}");
        let e = case("'BS-REP-PERCTX-1'", "'flag:NOPE'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown transmission flag \"NOPE\""), "{e}");
    }
}
