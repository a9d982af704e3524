//! The case file format (`cases/**/*.toml`): scripted request sequences, as data, validated
//! into types when a file loads (clause ids against the registry, needs, flags, options, hex
//! payloads, offset and length expressions): a case that loads is one the engine can run, and
//! a field that does not parse fails loading with the file and the reason. A case's id is its
//! path (`cases/bs/range/past-end.toml` is `bs.range.past-end`).
//!
//! `steps` holds the kinds of step, `expect` what a step expects, `values` the typed values
//! (needs, flags, options, payloads, expressions) they are written with.
//!
//! A case names its clauses, dialect, fixture and needs, then lists steps. Each step is one
//! table with a single key naming its kind, e.g. `{ block-status = { offset = "0", length =
//! "4K", flags = ["REQ_ONE"] } }`. Offsets and lengths are expressions: a number with an
//! optional K/M/G/T suffix, `size` (the export size), `max` (2^64 − 1), or one of those plus or
//! minus a number (`size-512`, `max-511`).
//!
//! A case that writes (`write`, `write-zeroes`, `trim`) must list the need `writable`, so
//! that the suite can give it a server of its own on a copy, or leave it out on a target the
//! user did not say may be written.

mod expect;
mod steps;
mod values;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clauses::ClauseId;
use crate::Dialect;

use expect::StepKind;
pub use expect::{Close, Expect, Outcome};
pub use steps::{
    BlockStatus, Connect, DraftStatus, Empty, ExportName, Go, MapStep, Negotiate, OptionStep,
    Pipeline, RangeCommand, RawRequest, StatusPayloadSpec, Verify, Write, WRITE_BYTE,
};
pub use values::{CommandFlags, Expr, HexTemplate, Need, OptionCode, PayloadContext};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub title: String,
    pub clauses: Vec<ClauseId>,
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
    /// The file the case was loaded from; for a shipped case, its path in the source tree
    /// (`cases/bs/range/last-byte.toml`).
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
    /// End haggling with EXPORT_NAME (or expect the server to close on it).
    ExportName(ExportName),
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
    /// NBD_CMD_WRITE of a byte pattern (needs `writable`).
    Write(Write),
    /// NBD_CMD_WRITE_ZEROES, with NO_HOLE or FAST_ZERO if asked (needs `writable`).
    WriteZeroes(RangeCommand),
    /// NBD_CMD_TRIM (needs `writable`).
    Trim(RangeCommand),
    /// NBD_CMD_CACHE between two READs of its range.
    Cache(RangeCommand),
    /// Block status and READ over a range, against what the case wrote.
    Verify(Verify),
}

impl Step {
    /// The variant's name, as `engine::steps` dispatches it (the coverage scan reads that).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Negotiate(_) => "Negotiate",
            Step::Connect(_) => "Connect",
            Step::Option(_) => "Option",
            Step::Go(_) => "Go",
            Step::ExportName(_) => "ExportName",
            Step::BlockStatus(_) => "BlockStatus",
            Step::DraftStatus(_) => "DraftStatus",
            Step::RawRequest(_) => "RawRequest",
            Step::Pipeline(_) => "Pipeline",
            Step::Map(_) => "Map",
            Step::Stability(_) => "Stability",
            Step::Reconnect(_) => "Reconnect",
            Step::Disc(_) => "Disc",
            Step::Write(_) => "Write",
            Step::WriteZeroes(_) => "WriteZeroes",
            Step::Trim(_) => "Trim",
            Step::Cache(_) => "Cache",
            Step::Verify(_) => "Verify",
        }
    }

    /// What the step expects, for the kinds that take an `expect` table.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Step::BlockStatus(BlockStatus { expect, .. })
            | Step::DraftStatus(DraftStatus { expect, .. })
            | Step::RawRequest(RawRequest { expect, .. })
            | Step::Option(OptionStep { expect, .. })
            | Step::Connect(Connect { expect, .. })
            | Step::ExportName(ExportName { expect, .. })
            | Step::Write(Write { expect, .. })
            | Step::WriteZeroes(RangeCommand { expect, .. })
            | Step::Trim(RangeCommand { expect, .. })
            | Step::Cache(RangeCommand { expect, .. }) => Some(expect),
            Step::Go(Go { expect, .. }) => expect.as_ref(),
            _ => None,
        }
    }

    /// One request in transmission (or EXPORT_NAME, which has no reply to name a clause
    /// by), whose unmet expectation defaults to the case's first clause.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Step::BlockStatus(_)
                | Step::ExportName(_)
                | Step::DraftStatus(_)
                | Step::RawRequest(_)
                | Step::Write(_)
                | Step::WriteZeroes(_)
                | Step::Trim(_)
                | Step::Cache(_)
        )
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
                Step::BlockStatus(BlockStatus {
                    payload: Some(p), ..
                }) => {
                    for c in &mut p.contexts {
                        if let PayloadContext::Name(name) = c {
                            rename(name);
                        }
                    }
                }
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
        let writes = self
            .steps
            .iter()
            .any(|s| matches!(s, Step::Write(_) | Step::WriteZeroes(_) | Step::Trim(_)));
        if writes && !self.needs.contains(&Need::Writable) {
            return Err("writes to the export but does not list the need `writable`".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            if let Step::BlockStatus(BlockStatus {
                unaligned: true,
                expect,
                ..
            }) = step
            {
                if !matches!(expect.outcome, Outcome::Einval | Outcome::Error) {
                    return Err(format!(
                        "step {}: an `unaligned` request expects a refusal (outcome einval or error)",
                        i + 1
                    ));
                }
            }
            let checked = match step {
                Step::BlockStatus(BlockStatus { expect, .. })
                | Step::DraftStatus(DraftStatus { expect, .. })
                | Step::RawRequest(RawRequest { expect, .. })
                | Step::Write(Write { expect, .. })
                | Step::WriteZeroes(RangeCommand { expect, .. })
                | Step::Trim(RangeCommand { expect, .. })
                | Step::Cache(RangeCommand { expect, .. }) => expect.fits(StepKind::Request),
                Step::Option(OptionStep { expect, .. })
                | Step::Go(Go {
                    expect: Some(expect),
                    ..
                }) => expect.fits(StepKind::Option),
                Step::Connect(Connect { expect, .. })
                | Step::ExportName(ExportName { expect, .. }) => expect.fits(StepKind::Connect),
                _ => Ok(()),
            };
            checked.map_err(|e| format!("step {}: {e}", i + 1))?;
        }
        self.validate_payloads()
    }

    /// A block-status payload filters on contexts the case negotiates before it: a name it
    /// never asks for is a mistake in the case (a deliberately unknown id is `"unknown"`).
    fn validate_payloads(&self) -> Result<(), String> {
        let mut negotiated: &[String] = &[];
        for (i, step) in self.steps.iter().enumerate() {
            let payload = match step {
                Step::Negotiate(n) => {
                    negotiated = &n.contexts;
                    continue;
                }
                Step::BlockStatus(BlockStatus {
                    payload: Some(p), ..
                }) => p,
                _ => continue,
            };
            let at = |e: String| format!("step {}: {e}", i + 1);
            if payload.raw_hex.is_some() && (!payload.contexts.is_empty() || payload.oversize) {
                return Err(at(
                    "a payload's `raw-hex` replaces `contexts` and `oversize`".into(),
                ));
            }
            for c in &payload.contexts {
                if let PayloadContext::Name(name) = c {
                    if !negotiated.contains(name) {
                        return Err(at(format!(
                            "the payload names {name:?}, which the negotiate step before it does \
                             not select"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn needs(&self) -> &[Need] {
        &self.needs
    }

    /// The case's clause ids.
    pub fn clause_ids(&self) -> Vec<ClauseId> {
        self.clauses.clone()
    }

    /// The level (MUST, SHOULD, …) of the case's main clause, `?` if it names none known.
    pub fn level(&self) -> &'static str {
        self.clauses
            .first()
            .and_then(|c| c.clause())
            .map_or("?", |c| c.level.as_str())
    }

    /// The clause a step's unmet expectation breaks by default.
    /// Only for a validated case (which names at least one clause).
    pub fn main_clause(&self) -> ClauseId {
        self.clauses[0]
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

/// The suite's cases: the files under `$NBD_CONFORM_CASES` when it is set, else the ones
/// built into this crate ([`crate::embedded`]), so that the suite runs from any directory.
pub fn load_suite_cases() -> Result<Vec<Case>, CaseError> {
    match std::env::var_os("NBD_CONFORM_CASES") {
        Some(dir) => load_cases(Path::new(&dir)),
        None => load_shipped_cases(),
    }
}

/// The cases built into this crate (`cases/` of its source tree). Each case's `path` is its
/// path in that tree (`cases/bs/range/last-byte.toml`), for messages.
pub fn load_shipped_cases() -> Result<Vec<Case>, CaseError> {
    let shipped = Path::new("cases");
    let files = crate::embedded::case_files()
        .map(|f| (shipped.join(f.path), Cow::Borrowed(f.text)))
        .collect();
    parse_all(shipped, files)
}

/// Loads and validates every `*.toml` under `dir`, sorted by id; ids must be unique, and each
/// case's fixture must be one that [`crate::fixtures::find`] loads, so that a misspelt name is
/// a usage error before any server starts.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    let mut files = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| CaseError::Io {
            path: path.display().to_string(),
            source,
        })?;
        files.push((path, Cow::Owned(text)));
    }
    parse_all(dir, files)
}

/// Parses and validates case files (path under `dir`, text): what [`load_cases`] says.
fn parse_all(dir: &Path, files: Vec<(PathBuf, Cow<'static, str>)>) -> Result<Vec<Case>, CaseError> {
    let mut cases = Vec::new();
    // Each fixture's verdict once: most cases share a handful of fixtures.
    let mut fixtures: std::collections::HashMap<String, Result<(), String>> =
        std::collections::HashMap::new();
    for (path, text) in files {
        let shown = path.display().to_string();
        let mut case: Case = toml::from_str(&text).map_err(|e| CaseError::Invalid {
            path: shown.clone(),
            reason: crate::toml_error::one_line(&text, &e),
        })?;
        case.validate().map_err(|reason| CaseError::Invalid {
            path: shown.clone(),
            reason,
        })?;
        let fixture = fixtures.entry(case.fixture.clone()).or_insert_with(|| {
            crate::fixtures::find(&case.fixture)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = fixture {
            return Err(CaseError::Invalid {
                path: shown,
                reason: format!("`fixture`: {e}"),
            });
        }
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

    #[test]
    fn a_case_that_writes_must_say_so() {
        let case = |needs: &str| {
            let case: Case = toml::from_str(&format!(
                "id = 'x'\ntitle = 't'\nclauses = ['WRITE-READ-1']\nneeds = [{needs}]\n\
                 fixture = 'f'\nsteps = [{{ write = {{ offset = '0', length = '4K' }} }}, \
                 {{ verify = {{ offset = '0', length = '4K' }} }}]"
            ))
            .expect("parses");
            case.validate()
        };
        assert_eq!(case("'writable'"), Ok(()));
        let e = case("").unwrap_err();
        assert!(e.contains("`writable`"), "{e}");
    }
}
