//! The case file format (`cases/**/*.toml`): scripted request sequences, as data.
//!
//! A case names its clauses, dialect, fixture and needs, then lists steps. Each step is one
//! table with a single key naming its kind, e.g. `{ block-status = { offset = "0", length =
//! "4K", flags = ["REQ_ONE"] } }`. Offsets and lengths are expressions: a number with an
//! optional K/M/G/T suffix, `size` (the export size), `max` (2^64 − 1), or one of those plus or
//! minus a number (`size-512`, `max-511`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clauses;
use crate::wire::consts::{command_flag, transmission_flag};
use crate::Dialect;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub title: String,
    pub clauses: Vec<String>,
    #[serde(default)]
    pub dialect: Dialect,
    pub fixture: String,
    /// Capabilities without which the case grades `unsupported` (see [`Need`]).
    #[serde(default)]
    pub needs: Vec<String>,
    /// Set when the outcome on a server that works on requests concurrently depends on
    /// timing (say, a request racing NBD_CMD_DISC): why. Such a case is graded and reported
    /// as always, but its snapshot is compared on the reference server only, whose outcome is
    /// fixed; a third-party server's verdict may differ from run to run, and that is the finding.
    #[serde(default)]
    pub races: Option<String>,
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
    /// Expect the server to close the connection right after the client flags.
    #[serde(default)]
    pub expect_close: bool,
    pub clause: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OptionStep {
    /// Option name (`SET_META_CONTEXT`, …) or number.
    pub option: toml::Value,
    pub export: Option<String>,
    /// For LIST/SET_META_CONTEXT.
    #[serde(default)]
    pub queries: Vec<String>,
    /// Replaces the payload entirely (hex; blanks ignored). `{export-len}` stands for the
    /// 4-byte length of the export name and `{export}` for its bytes, so a hand-made payload
    /// names the export of whatever server runs the case.
    pub data_hex: Option<String>,
    /// Announce this payload length instead of the real one.
    pub claimed_length: Option<u32>,
    pub expect: ExpectOption,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExpectOption {
    /// Acceptable final replies: `ACK`, `ERR_INVALID`, …, or `ERR_*` for any error.
    pub reply: Vec<String>,
    /// Exactly this many META_CONTEXT replies.
    pub contexts: Option<usize>,
    /// Context names that must be among the replies.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Whether closing the connection is acceptable (the client broke a MUST).
    #[serde(default)]
    pub allow_close: bool,
    /// The clause a mismatch breaks.
    pub clause: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Go {
    pub export: Option<String>,
    pub expect: Option<ExpectOption>,
}

/// What a request step accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// A successful reply.
    #[default]
    Ok,
    /// An error reply with EINVAL (another error value is graded by the same clause).
    Einval,
    /// Any error reply.
    Error,
    /// EINVAL, or the server closes (the client broke a MUST, TX-VIOL-1).
    EinvalOrClose,
    /// Any error, or the server closes.
    ErrorOrClose,
    /// Any well-formed reply, error or success; closing breaks TX-NODROP-1.
    Any,
    /// Draft only: the unknown-type fallback (one descriptor equal to the request, status 0).
    Fallback,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockStatus {
    pub offset: String,
    pub length: String,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub expect: Expect,
    /// The clause an unmet expectation breaks (default: the case's first clause).
    pub clause: Option<String>,
    /// Afterwards, a valid request on the same connection must still succeed (TX-NODROP-1).
    #[serde(default)]
    pub then_alive: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DraftStatus {
    pub offset: String,
    pub length: String,
    /// 0 = allocation, 1 = dirtiness, anything else = an unknown query type.
    pub selector: u16,
    #[serde(default)]
    pub expect: Expect,
    pub clause: Option<String>,
    #[serde(default)]
    pub then_alive: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRequest {
    pub magic: Option<u32>,
    pub command: u16,
    #[serde(default)]
    pub flags: Vec<String>,
    pub offset: String,
    pub length: String,
    #[serde(default)]
    pub expect: Expect,
    pub clause: Option<String>,
    #[serde(default)]
    pub then_alive: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pipeline {
    pub count: usize,
    pub length: String,
    #[serde(default)]
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapStep {
    #[serde(default)]
    pub req_one: bool,
    /// Longest request (default: as long as the header allows).
    pub max_request: Option<String>,
    /// Draft dialect: the selectors to walk (default [0]).
    #[serde(default)]
    pub selectors: Vec<u16>,
}

/// A capability a case needs.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Need {
    pub fn parse(s: &str) -> Result<Need, String> {
        Ok(match s {
            "structured-replies" => Need::StructuredReplies,
            "extended-headers" => Need::ExtendedHeaders,
            "min-block>1" => Need::MinBlockAbove1,
            "fixture-truth" => Need::FixtureTruth,
            "draft-status" => Need::DraftStatus,
            _ if s.starts_with("flag:") => Need::Flag(transmission_flag_named(&s[5..])?),
            _ if s.starts_with("no-flag:") => Need::NoFlag(transmission_flag_named(&s[8..])?),
            _ if s.contains(':') => Need::Context(s.to_owned()),
            _ => return Err(format!("unknown need {s:?}")),
        })
    }
}

fn transmission_flag_named(name: &str) -> Result<u16, String> {
    use transmission_flag::*;
    Ok(match name {
        "READ_ONLY" => READ_ONLY,
        "SEND_FLUSH" => SEND_FLUSH,
        "SEND_FUA" => SEND_FUA,
        "SEND_TRIM" => SEND_TRIM,
        "SEND_WRITE_ZEROES" => SEND_WRITE_ZEROES,
        "SEND_DF" => SEND_DF,
        "CAN_MULTI_CONN" => CAN_MULTI_CONN,
        "SEND_CACHE" => SEND_CACHE,
        "SEND_FAST_ZERO" => SEND_FAST_ZERO,
        "BLOCK_STATUS_PAYLOAD" => BLOCK_STATUS_PAYLOAD,
        _ => return Err(format!("unknown transmission flag {name:?}")),
    })
}

/// Command flags by name (`REQ_ONE`, `FUA`, …) or number (`0x8000`), OR-ed together.
pub fn command_flags(names: &[String]) -> Result<u16, String> {
    let mut flags = 0;
    for n in names {
        flags |= match n.as_str() {
            "FUA" => command_flag::FUA,
            "NO_HOLE" => command_flag::NO_HOLE,
            "DF" => command_flag::DF,
            "REQ_ONE" => command_flag::REQ_ONE,
            "FAST_ZERO" => command_flag::FAST_ZERO,
            "PAYLOAD_LEN" => command_flag::PAYLOAD_LEN,
            other => parse_number(other)
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(|| format!("unknown command flag {other:?}"))?,
        };
    }
    Ok(flags)
}

fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok();
    }
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Why an offset or length expression has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    /// The expression does not parse: a fault of the case file.
    Syntax(String),
    /// It parses but leaves 0..2^64 on this export (`size-512` on a 0-byte export): the case
    /// does not fit the export, which is no request to send.
    OutOfRange(String),
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExprError::Syntax(m) | ExprError::OutOfRange(m) => f.write_str(m),
        }
    }
}

/// Evaluates an offset or length expression against the export size. Arithmetic never wraps:
/// a case that wants an overflowing range says so with `max` (`offset = "max-511"`), and an
/// expression that would leave 0..2^64 is [`ExprError::OutOfRange`].
pub fn eval(expr: &str, size: u64) -> Result<u64, ExprError> {
    let e = expr.trim();
    let split = e
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-');
    let (base, rest) = match split {
        Some((i, _)) => (&e[..i], Some(&e[i..])),
        None => (e, None),
    };
    let base = match base.trim() {
        "size" => size,
        "max" => u64::MAX,
        n => parse_number(n)
            .ok_or_else(|| ExprError::Syntax(format!("bad number {n:?} in {expr:?}")))?,
    };
    let Some(r) = rest else {
        return Ok(base);
    };
    let n = parse_number(&r[1..])
        .ok_or_else(|| ExprError::Syntax(format!("bad number in {expr:?}")))?;
    let value = if r.starts_with('+') {
        base.checked_add(n)
    } else {
        base.checked_sub(n)
    };
    value.ok_or_else(|| {
        ExprError::OutOfRange(format!(
            "{expr:?} is outside 0..2^64 on an export of {size} bytes"
        ))
    })
}

/// The offset and length expressions a step evaluates.
fn step_expressions(step: &Step) -> Vec<&str> {
    match step {
        Step::BlockStatus(s) => vec![&s.offset, &s.length],
        Step::DraftStatus(s) => vec![&s.offset, &s.length],
        Step::RawRequest(s) => vec![&s.offset, &s.length],
        Step::Pipeline(s) => vec![&s.length],
        Step::Map(MapStep {
            max_request: Some(m),
            ..
        }) => vec![m],
        _ => Vec::new(),
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
        case.needs.iter_mut().for_each(rename);
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

    /// Checks what can be checked without a server: clause ids exist, needs and flags parse.
    pub fn validate(&self) -> Result<(), String> {
        if self.clauses.is_empty() {
            return Err("names no clause".into());
        }
        let known = |id: &str| clauses::clause(id).is_some();
        for c in &self.clauses {
            if !known(c) {
                return Err(format!("unknown clause {c:?}"));
            }
        }
        for n in &self.needs {
            Need::parse(n)?;
        }
        for step in &self.steps {
            let (clause, flags) = match step {
                Step::BlockStatus(s) => (s.clause.as_deref(), Some(&s.flags)),
                Step::DraftStatus(s) => (s.clause.as_deref(), None),
                Step::RawRequest(s) => (s.clause.as_deref(), Some(&s.flags)),
                Step::Pipeline(s) => (None, Some(&s.flags)),
                Step::Option(s) => (Some(s.expect.clause.as_str()), None),
                Step::Go(Go {
                    expect: Some(e), ..
                }) => (Some(e.clause.as_str()), None),
                Step::Connect(c) => (c.clause.as_deref(), None),
                _ => (None, None),
            };
            if let Some(c) = clause {
                if !known(c) {
                    return Err(format!("step names unknown clause {c:?}"));
                }
            }
            if let Some(f) = flags {
                command_flags(f)?;
            }
            for expr in step_expressions(step) {
                // Only the syntax: whether a value fits depends on the export it runs on.
                if let Err(ExprError::Syntax(m)) = eval(expr, 0) {
                    return Err(m);
                }
            }
        }
        if self.steps.is_empty() {
            return Err("has no steps".into());
        }
        Ok(())
    }

    pub fn needs(&self) -> Vec<Need> {
        self.needs
            .iter()
            .filter_map(|n| Need::parse(n).ok())
            .collect()
    }

    /// The case's clause ids as the registry's `'static` strings (validated at load time).
    pub fn clause_ids(&self) -> Vec<&'static str> {
        self.clauses
            .iter()
            .filter_map(|c| clauses::clause(c).map(|c| c.id))
            .collect()
    }

    /// The clause a step's unmet expectation breaks by default.
    pub fn main_clause(&self) -> &str {
        self.clauses.first().map_or("", String::as_str)
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

    #[test]
    fn expressions() {
        assert_eq!(eval("64K", 0), Ok(65536));
        assert_eq!(eval("size-512", 4096), Ok(3584));
        assert_eq!(eval("size+1", 4096), Ok(4097));
        assert_eq!(eval("max-511", 0), Ok(u64::MAX - 511));
        assert_eq!(eval("0x10", 0), Ok(16));
        assert_eq!(eval("4G", 0), Ok(1 << 32));
        assert!(matches!(eval("lots", 0), Err(ExprError::Syntax(_))));
        // Never wraps: on a 0-byte export `size-512` is no offset at all.
        assert!(matches!(eval("size-512", 0), Err(ExprError::OutOfRange(_))));
        assert!(matches!(eval("max+1", 0), Err(ExprError::OutOfRange(_))));
    }

    #[test]
    fn flags() {
        assert_eq!(
            command_flags(&["REQ_ONE".into(), "0x8000".into()]),
            Ok(0x8008)
        );
        assert!(command_flags(&["NOPE".into()]).is_err());
    }
}
