//! Known-failing lists (`run --known-failing FILE`): deviations of a server that someone has
//! looked at and acknowledged, so that a CI job can stay green on them and still go red on
//! anything new, or on an acknowledgement that is no longer true.
//!
//! A line is `CASE-GLOB@SERVER-GLOB[=VERSION-GLOB]  reason`; `#` starts a comment line. The
//! case glob matches case ids (`*` also crosses `/`), the server glob the server's name as the
//! report prints it (`nbdkit`, `nbd-server`, `qemu-nbd`, `reference`), the version glob its
//! version (`1.32.5`). A failing case (fail, or warn under `--strict`) that a line matches is a
//! *known failure*: reported, not counted as a failure. An error never is: the harness could
//! not test, and no list may hide that. A line whose cases ran on a matching server and passed,
//! with none of them failing, is *stale*: it fails the run, so that lists shrink as servers get
//! fixed. A *known-flaky* list (`run --known-flaky FILE`, same lines) is for deviations a
//! server shows only some of the time (a race, `races` in a case file): its lines acknowledge
//! a failure the same way but are never stale, since a pass proves nothing about the next run.

use std::path::{Path, PathBuf};

use glob::Pattern;

use crate::engine::outcome::{CaseResult, Grade, Summary, TargetResult};

/// Where a line came from, printed `FILE:LINE` (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRef {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One acknowledgement, parsed.
#[derive(Debug, Clone)]
struct Entry {
    at: LineRef,
    /// The line's `CASE@SERVER[=VERSION]`, as written (reports quote it).
    key: String,
    case: Pattern,
    server: Pattern,
    version: Option<Pattern>,
    reason: String,
    /// From a known-flaky list: a pass does not make it stale.
    flaky: bool,
    /// Some case the line names is not run (`--only`, `--skip`): the passes of the others do
    /// not make it stale, since the one it is about may be among those left out.
    partly_run: bool,
}

/// Why a list cannot be used: the run does not start (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read the list {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {why} (a line is `CASE-GLOB@SERVER-GLOB[=VERSION-GLOB]  reason`)")]
    Malformed { at: LineRef, why: String },
    #[error("{at}: `{glob}` matches no case")]
    NoSuchCase { at: LineRef, glob: String },
}

/// Every line of every `--known-failing` file, in order (the first line that matches a case
/// acknowledges it).
#[derive(Debug, Clone, Default)]
pub struct KnownFailingList {
    entries: Vec<Entry>,
}

/// A failing case that a line acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFailure {
    /// The target's name, as in the report.
    pub target: String,
    pub case: String,
    /// "name version", as the report's Server column.
    pub server: String,
    /// The grade the case really got (fail, or warn under `--strict`).
    pub grade: Grade,
    pub reason: String,
    pub at: LineRef,
}

/// A line that acknowledged nothing while the cases it names passed on a server it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLine {
    pub at: LineRef,
    pub key: String,
    pub reason: String,
    /// `case on target`, for every matched case that passed.
    pub passed: Vec<String>,
}

/// What a list made of a run: the known failures and the stale lines (both in list order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledged {
    pub known: Vec<KnownFailure>,
    pub stale: Vec<StaleLine>,
}

impl Acknowledged {
    /// The acknowledgement of `case` on `target`, if a line made it a known failure.
    pub fn of(&self, target: &TargetResult, case: &CaseResult) -> Option<&KnownFailure> {
        self.known
            .iter()
            .find(|k| k.target == target.name && k.case == case.id)
    }

    /// `target`'s grade counts, a known failure counted as `known`, not as its grade.
    pub fn summary(&self, target: &TargetResult) -> Summary {
        let mut s = target.summary();
        for k in self.known.iter().filter(|k| k.target == target.name) {
            match k.grade {
                Grade::Fail => s.fail = s.fail.saturating_sub(1),
                Grade::Warn => s.warn = s.warn.saturating_sub(1),
                _ => continue,
            }
            s.known += 1;
        }
        s
    }

    /// One line per known failure and per stale line, for the end of `run`'s output.
    pub fn lines(&self) -> Vec<String> {
        let known = self.known.iter().map(|k| {
            format!(
                "known failure: {} on {} ({}), acknowledged by {}",
                k.case, k.target, k.grade, k.at
            )
        });
        let stale = self.stale.iter().map(|s| {
            format!(
                "STALE known-failing line {}: {} now passes ({}); remove the line",
                s.at,
                s.key,
                s.passed.join(", ")
            )
        });
        known.chain(stale).collect()
    }
}

impl KnownFailingList {
    /// Reads `files` in order; every case glob must match one of `case_ids` (all the cases
    /// loaded, before `--only` and `--skip`), so that a typo cannot acknowledge nothing forever.
    pub fn load(
        failing: &[PathBuf],
        flaky: &[PathBuf],
        case_ids: &[&str],
    ) -> Result<Self, ListError> {
        let mut list = KnownFailingList::default();
        let files = failing.iter().map(|f| (f, false));
        for (file, is_flaky) in files.chain(flaky.iter().map(|f| (f, true))) {
            let text = std::fs::read_to_string(file).map_err(|source| ListError::Read {
                file: file.clone(),
                source,
            })?;
            let mut entries = parse(file, &text)?;
            entries.iter_mut().for_each(|e| e.flaky = is_flaky);
            list.entries.extend(entries);
        }
        list.every_line_names_a_case(case_ids)?;
        Ok(list)
    }

    fn every_line_names_a_case(&self, case_ids: &[&str]) -> Result<(), ListError> {
        match self
            .entries
            .iter()
            .find(|e| !case_ids.iter().any(|id| e.case.matches(id)))
        {
            Some(e) => Err(ListError::NoSuchCase {
                at: e.at.clone(),
                glob: e.case.as_str().to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// A list from `text`, as if read from a file called `name` (no case check).
    #[cfg(test)]
    pub(crate) fn from_text(name: &str, text: &str) -> Result<Self, ListError> {
        Ok(KnownFailingList {
            entries: parse(Path::new(name), text)?,
        })
    }

    /// Which of the cases (`all`) the run selected: a line naming one it left out cannot go
    /// stale in this run.
    pub fn note_selection(&mut self, all: &[&str], selected: &[&str]) {
        for e in &mut self.entries {
            e.partly_run = all
                .iter()
                .any(|id| e.case.matches(id) && !selected.contains(id));
        }
    }

    /// What the list makes of `targets`' results.
    pub fn apply(&self, targets: &[TargetResult], strict: bool) -> Acknowledged {
        let mut acknowledged = Acknowledged::default();
        for e in &self.entries {
            let mut absorbed = false;
            let mut passed = Vec::new();
            for t in targets.iter().filter(|t| e.names_server(&t.server)) {
                for c in t.cases.iter().filter(|c| e.case.matches(&c.id)) {
                    if c.grade.is_nonconformant(strict) {
                        // The first line that matches acknowledges; a later one still counts
                        // as matching a failing case (so it is not stale either).
                        absorbed = true;
                        if acknowledged.of(t, c).is_none() {
                            acknowledged.known.push(KnownFailure {
                                target: t.name.clone(),
                                case: c.id.clone(),
                                server: t.server.clone(),
                                grade: c.grade,
                                reason: e.reason.clone(),
                                at: e.at.clone(),
                            });
                        }
                    } else if matches!(c.grade, Grade::Pass | Grade::Info) {
                        passed.push(format!("{} on {}", c.id, t.name));
                    }
                }
            }
            if !absorbed && !passed.is_empty() && !e.flaky && !e.partly_run {
                acknowledged.stale.push(StaleLine {
                    at: e.at.clone(),
                    key: e.key.clone(),
                    reason: e.reason.clone(),
                    passed,
                });
            }
        }
        acknowledged
    }
}

impl Entry {
    /// Whether `server` (a report's Server text) is one this line names.
    fn names_server(&self, server: &str) -> bool {
        let (name, version) = server_name_and_version(server);
        self.server.matches(name) && self.version.as_ref().is_none_or(|v| v.matches(version))
    }
}

/// The name and version a list line matches a server by, from the report's Server text:
/// "nbdkit 1.32.5" and "nbdkit 1.32.5 in IMAGE" are `nbdkit` at `1.32.5`; a `--spawn` server,
/// "spawned: ./bin/my-server --socket …", is its program's file name, `my-server`, with no
/// version; a `--target` is "unknown".
pub fn server_name_and_version(server: &str) -> (&str, &str) {
    if let Some(command) = server.strip_prefix("spawned: ") {
        let program = command.split_whitespace().next().unwrap_or("");
        return (program.rsplit('/').next().unwrap_or(program), "");
    }
    let mut words = server.split_whitespace();
    (words.next().unwrap_or(""), words.next().unwrap_or(""))
}

fn parse(file: &Path, text: &str) -> Result<Vec<Entry>, ListError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = LineRef {
            file: file.to_owned(),
            line: i + 1,
        };
        let malformed = |why: String| ListError::Malformed {
            at: at.clone(),
            why,
        };
        let (key, reason) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(k, r)| (k, r.trim()));
        if reason.is_empty() {
            return Err(malformed(format!(
                "`{key}` has no reason: say which clause the server breaks and how"
            )));
        }
        let Some((case, server)) = key.split_once('@') else {
            return Err(malformed(format!("`{key}` has no `@SERVER`")));
        };
        let (server, version) = match server.split_once('=') {
            Some((s, v)) => (s, Some(v)),
            None => (server, None),
        };
        let glob = |what: &str, text: &str| {
            if text.is_empty() {
                return Err(malformed(format!("`{key}` has an empty {what}")));
            }
            Pattern::new(text).map_err(|e| malformed(format!("{what} `{text}`: {e}")))
        };
        entries.push(Entry {
            key: key.to_owned(),
            case: glob("case glob", case)?,
            server: glob("server glob", server)?,
            version: version.map(|v| glob("version glob", v)).transpose()?,
            reason: reason.to_owned(),
            flaky: false,
            partly_run: false,
            at,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{case, target};
    use super::*;

    #[test]
    fn a_line_whose_cases_were_not_all_run_is_not_stale() {
        let mut list =
            KnownFailingList::from_text("k.txt", "x.*@reference  R: why\n").expect("list");
        let passed = target("t", vec![case("x.a", Grade::Pass, &[])]);
        list.note_selection(&["x.a", "x.b"], &["x.a"]);
        assert!(list
            .apply(std::slice::from_ref(&passed), false)
            .stale
            .is_empty());
        list.note_selection(&["x.a", "x.b"], &["x.a", "x.b"]);
        assert_eq!(
            list.apply(std::slice::from_ref(&passed), false).stale.len(),
            1
        );
    }

    #[test]
    fn a_spawned_server_is_named_by_its_program() {
        assert_eq!(
            server_name_and_version("spawned: ./target/release/my-srv --socket {socket} {raw}"),
            ("my-srv", "")
        );
        assert_eq!(
            server_name_and_version("nbdkit 1.32.5 in img:tag"),
            ("nbdkit", "1.32.5")
        );
        assert_eq!(server_name_and_version("unknown"), ("unknown", ""));
    }

    #[test]
    fn a_flaky_line_acknowledges_a_failure_and_is_never_stale() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("flaky.txt");
        std::fs::write(&file, "x@reference  TX-DISC-1: a race\n").expect("write");
        let list = KnownFailingList::load(&[], &[file], &["x"]).expect("a valid list");
        let failed = target("t", vec![case("x", Grade::Fail, &[])]);
        let failed = TargetResult {
            server: "reference 0.1.0".into(),
            ..failed
        };
        let acknowledged = list.apply(std::slice::from_ref(&failed), false);
        assert_eq!((acknowledged.known.len(), acknowledged.stale.len()), (1, 0));
        let passed = target("t", vec![case("x", Grade::Pass, &[])]);
        let passed = TargetResult {
            server: "reference 0.1.0".into(),
            ..passed
        };
        let acknowledged = list.apply(std::slice::from_ref(&passed), false);
        assert_eq!((acknowledged.known.len(), acknowledged.stale.len()), (0, 0));
    }

    const IDS: &[&str] = &["bs/a", "bs/b", "neg/abort"];

    fn list(text: &str) -> Result<KnownFailingList, ListError> {
        let list = KnownFailingList::from_text("k.txt", text)?;
        list.every_line_names_a_case(IDS)?;
        Ok(list)
    }

    fn nbdkit(cases: Vec<CaseResult>) -> TargetResult {
        let mut t = target("nbdkit", cases);
        t.server = "nbdkit 1.32.5".into();
        t
    }

    #[test]
    fn a_failing_case_on_a_named_server_and_version_is_known() {
        let l = list("# c\n\nbs/*@nbdkit=1.32.*  BS-X: nbdkit does y\n").unwrap();
        let t = nbdkit(vec![
            case("bs/a", Grade::Fail, &[]),
            case("bs/b", Grade::Error, &[]),
        ]);
        let a = l.apply(&[t], false);
        assert_eq!(a.known.len(), 1, "{a:?}");
        assert_eq!(a.known[0].case, "bs/a");
        assert_eq!(a.known[0].at.to_string(), "k.txt:3");
        assert_eq!(a.known[0].reason, "BS-X: nbdkit does y");
        assert!(a.stale.is_empty(), "an error is no pass: {a:?}");
    }

    #[test]
    fn a_server_in_a_container_is_named_by_its_first_two_words() {
        let l = list("bs/a@nbdkit=1.32.5  r\n").unwrap();
        let mut t = nbdkit(vec![case("bs/a", Grade::Fail, &[])]);
        t.server = "nbdkit 1.32.5 in nbd-conform-peers:bookworm".into();
        assert_eq!(l.apply(&[t], false).known.len(), 1);
    }

    #[test]
    fn another_version_or_server_is_not_acknowledged() {
        let l = list("bs/a@nbdkit=1.40.*  r\nbs/a@qemu-nbd  r\n").unwrap();
        let a = l.apply(&[nbdkit(vec![case("bs/a", Grade::Fail, &[])])], false);
        assert_eq!(a, Acknowledged::default());
    }

    #[test]
    fn warn_is_known_only_under_strict_and_never_stale() {
        let l = list("bs/a@nbdkit  r\n").unwrap();
        let t = nbdkit(vec![case("bs/a", Grade::Warn, &[])]);
        assert_eq!(
            l.apply(std::slice::from_ref(&t), false),
            Acknowledged::default()
        );
        assert_eq!(l.apply(&[t], true).known.len(), 1);
    }

    #[test]
    fn a_line_whose_cases_pass_is_stale() {
        let l = list("bs/*@nbdkit  r\n").unwrap();
        let a = l.apply(
            &[nbdkit(vec![
                case("bs/a", Grade::Pass, &[]),
                case("bs/b", Grade::Info, &[]),
            ])],
            false,
        );
        assert_eq!(a.stale.len(), 1);
        assert_eq!(a.stale[0].passed, ["bs/a on nbdkit", "bs/b on nbdkit"]);
        assert!(a.lines()[0].starts_with("STALE known-failing line k.txt:1: bs/*@nbdkit"));
        // Not run on a server it names: not stale, just unused.
        let mut other = nbdkit(vec![case("bs/a", Grade::Pass, &[])]);
        other.server = "qemu-nbd 10.0.2".into();
        assert_eq!(l.apply(&[other], false), Acknowledged::default());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, says) in [
            ("\nbs/a@nbdkit\n", "k.txt:2: `bs/a@nbdkit` has no reason"),
            ("bs/a  r\n", "k.txt:1: `bs/a` has no `@SERVER`"),
            ("bs/a@  r\n", "k.txt:1: `bs/a@` has an empty server glob"),
            (
                "bs/a@x=  r\n",
                "k.txt:1: `bs/a@x=` has an empty version glob",
            ),
            ("bs/[a@x  r\n", "k.txt:1: case glob `bs/[a`"),
            ("bs/zz*@x  r\n", "k.txt:1: `bs/zz*` matches no case"),
        ] {
            let e = list(text).unwrap_err().to_string();
            assert!(e.starts_with(says), "{text:?}: {e}");
        }
    }
}
