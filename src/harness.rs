//! The library harness: the suite's cases as [libtest-mimic] trials, one per case, so that an
//! NBD server's own `cargo test` runs them against that server.
//!
//! In the server's crate, add `nbd-conform` as a dev-dependency and a test target with
//! `harness = false`:
//!
//! ```toml
//! [dev-dependencies]
//! nbd-conform = "0.1"
//!
//! [[test]]
//! name = "nbd"
//! harness = false
//! ```
//!
//! and in `tests/nbd.rs`, say how to start the server for each fixture image (placeholders as
//! in `nbd-conform run --spawn`: `{socket}` or `{port}`, `{raw}`, `{qcow2}`, `{export}`,
//! `{dir}`), or where it already listens (`.target("nbd+unix:///disk?socket=/run/my.sock")`
//! instead of `.spawn(…)`). This is the code of `examples/implementer/tests/nbd.rs`, which CI
//! builds and runs (the lib's doctests are off, since `cargo test -- --target X` must reach
//! only harnesses that understand it; a unit test keeps the two the same):
//!
//! ```no_run
//! use nbd_conform::harness::Harness;
//!
//! fn main() {
//!     Harness::from_args()
//!         .spawn(concat!(
//!             env!("CARGO_BIN_EXE_toy-nbd-server"),
//!             " --socket {socket} --export {export} {raw}"
//!         ))
//!         .run()
//! }
//! ```
//!
//! `cargo test` then shows one trial per case (`spawn::bs.range.last-byte`, …). A case fails
//! its trial when it grades fail (or warn, under `--strict`) or error; a case that grades
//! unsupported shows as ignored, with the reason. The command line and the environment
//! override what the code says: `cargo test -- --target nbd://127.0.0.1:10809/disk` (or
//! `NBD_TARGET=…`, for nextest, which passes no extra arguments) tests that server instead.
//! Every option ([`Harness::from_args`]) has an `NBD_*` variable; libtest's own arguments
//! (a name filter, `--list`, `--test-threads`, …) work as ever.
//!
//! [libtest-mimic]: https://docs.rs/libtest-mimic

use std::ffi::OsString;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use clap::Parser;
use libtest_mimic::{Arguments, Completion, Trial};

use crate::client::Target;
use crate::engine::case::{load_suite_cases, Case, CaseError, Need};
use crate::engine::outcome::{Capabilities, CaseResult, Grade};
use crate::engine::run::{parse_seconds, Settings};
use crate::engine::suite::{run_on_launched, run_on_target, snapshot_text};
use crate::launch::{Launcher, Pool, SpawnTemplate};
use crate::Dialect;

/// The harness's options: the command line after `cargo test --`, with an `NBD_*` variable
/// for each.
#[derive(Parser, Debug, Clone)]
#[command(about = "nbd-conform: the NBD block-status conformance cases, one trial per case")]
struct Options {
    /// Run the cases against this server (host:port or an NBD URI).
    #[arg(long, env = "NBD_TARGET")]
    target: Option<String>,
    /// Launch the server per fixture from a command template, e.g.
    /// 'my-server --socket {socket} {raw}' (see `nbd-conform run --help`).
    #[arg(long, env = "NBD_SPAWN", conflicts_with = "target")]
    spawn: Option<String>,
    /// Export name on the target (overrides the URI's).
    #[arg(long, env = "NBD_EXPORT")]
    export: Option<String>,
    /// Which cases to run.
    #[arg(long, env = "NBD_DIALECT", value_enum, default_value_t = Dialect::Standard)]
    dialect: Dialect,
    /// The target's export may be written: run the cases that write (else unsupported).
    #[arg(long, env = "NBD_WRITABLE")]
    writable: bool,
    /// Fail trials on SHOULD violations (warn) too.
    #[arg(long, env = "NBD_STRICT")]
    strict: bool,
    /// Run only the cases whose id, or a dotted prefix of it, matches GLOB (`bs.range`,
    /// `bs.*.req-one*`); repeatable, or comma-separated in NBD_ONLY.
    #[arg(long, env = "NBD_ONLY", value_name = "GLOB", value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds to wait for each message from the server, and (plus one second) for the whole
    /// reply to one request, as `nbd-conform run --timeout`.
    #[arg(long, env = "NBD_TIMEOUT", value_parser = parse_seconds, default_value = "30")]
    timeout: Duration,
    /// Seconds to wait to connect and for the greeting.
    #[arg(long, env = "NBD_CONNECT_TIMEOUT", value_parser = parse_seconds, default_value = "5")]
    connect_timeout: Duration,
    #[command(flatten)]
    libtest: Arguments,
}

/// The server under test, as the code or the command line names it.
#[derive(Debug, Clone)]
enum Server {
    Target(String),
    Spawn(String),
}

/// Why the harness cannot make its trials; [`Harness::run`] prints it and exits with 2.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "no server to test: give --target HOST:PORT|URI or --spawn TEMPLATE (NBD_TARGET, \
         NBD_SPAWN), or call Harness::target or Harness::spawn"
    )]
    NoServer,
    #[error("--target: {0}")]
    Target(String),
    #[error("--spawn: {0}")]
    Spawn(String),
    #[error("--writable is for a --target: a spawned server always writes on a private copy")]
    WritableSpawn,
    #[error("--only: {0}")]
    Only(String),
    #[error("no case matches --only {}", .0.join(","))]
    NoCase(Vec<String>),
    #[error("cannot load cases: {0}")]
    Cases(#[from] CaseError),
}

/// The suite as libtest-mimic trials against one server; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Harness {
    options: Options,
    /// What the code said ([`Harness::spawn`], [`Harness::target`]); the command line wins.
    default_server: Option<Server>,
}

impl Harness {
    /// Parses the process's arguments (those after `cargo test --`) and the `NBD_*`
    /// variables; on a bad argument, prints why and exits with 2. `--help` lists them all.
    pub fn from_args() -> Harness {
        Harness::parse_from(std::env::args_os())
    }

    /// Parses `args` (the first is the program name) as [`Harness::from_args`] parses the
    /// process's; on a bad argument, prints why and exits with 2.
    pub fn parse_from<I, T>(args: I) -> Harness
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Harness::try_parse_from(args).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` as [`Harness::parse_from`] does, returning a bad argument as an error.
    pub fn try_parse_from<I, T>(args: I) -> Result<Harness, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Ok(Harness {
            options: Options::try_parse_from(args)?,
            default_server: None,
        })
    }

    /// Launches the server under test per fixture from a command template, unless the
    /// command line names a server (`--spawn`, `--target`, or their variables).
    pub fn spawn(mut self, template: impl Into<String>) -> Harness {
        self.default_server = Some(Server::Spawn(template.into()));
        self
    }

    /// Tests a server that already listens (host:port or an NBD URI, e.g.
    /// `nbd+unix:///disk?socket=/run/my.sock`), unless the command line names a server.
    pub fn target(mut self, target: impl Into<String>) -> Harness {
        self.default_server = Some(Server::Target(target.into()));
        self
    }

    /// Whether a server to test is named, by the command line or by the code.
    pub fn has_server(&self) -> bool {
        self.server().is_some()
    }

    /// The harness options given that apply only to a server named (`--only`, `--strict`,
    /// `--dialect`, `--export`, `--writable`), by their flag: a caller without a server of its
    /// own to test says so, rather than ignore them.
    pub fn server_options_given(&self) -> Vec<&'static str> {
        let o = &self.options;
        let given = [
            ("--only", !o.only.is_empty()),
            ("--strict", o.strict),
            ("--dialect", o.dialect != Dialect::Standard),
            ("--export", o.export.is_some()),
            ("--writable", o.writable),
        ];
        given
            .into_iter()
            .filter(|(_, g)| *g)
            .map(|(f, _)| f)
            .collect()
    }

    /// The timeouts and write permission the options give, for each case.
    pub fn settings(&self) -> Settings {
        Settings {
            timeout: self.options.connect_timeout,
            reply_timeout: self.options.timeout,
            writable: self.options.writable,
            ..Settings::default()
        }
    }

    /// libtest's own arguments (filter, `--list`, `--test-threads`, …), for a caller that runs
    /// trials of its own with [`libtest_mimic::run`].
    pub fn arguments(&self) -> &Arguments {
        &self.options.libtest
    }

    /// One trial per selected case of the chosen dialect, against the server.
    pub fn trials(&self) -> Result<Vec<Trial>, HarnessError> {
        let server = self.server().ok_or(HarnessError::NoServer)?;
        let cases = self.selected_cases()?;
        let settings = self.settings();
        let (dialect, strict) = (self.options.dialect, self.options.strict);
        let trials = match server {
            Server::Spawn(text) => {
                if self.options.writable {
                    return Err(HarnessError::WritableSpawn);
                }
                let template = SpawnTemplate::parse(&text).map_err(HarnessError::Spawn)?;
                let launcher = Launcher::Spawn(template);
                cases
                    .into_iter()
                    .map(|case| {
                        let launcher = launcher.clone();
                        trial(case, "spawn", strict, move |case| {
                            runtime().block_on(run_on_launched(case, &launcher, dialect, settings))
                        })
                    })
                    .collect()
            }
            Server::Target(text) => {
                let mut target: Target = text
                    .parse()
                    .map_err(|e| HarnessError::Target(format!("{e}")))?;
                if let Some(export) = &self.options.export {
                    target.export = export.clone();
                }
                cases
                    .into_iter()
                    .map(|case| {
                        let target = target.clone();
                        let writes = settings.writable && case.needs().contains(&Need::Writable);
                        trial(case, "target", strict, move |case| {
                            let _turn = Turn::take(writes);
                            runtime().block_on(run_on_target(case, &target, dialect, settings))
                        })
                    })
                    .collect()
            }
        };
        Ok(trials)
    }

    /// Runs the trials with libtest's arguments and exits: 0 when every trial passed (or was
    /// ignored), 101 when one failed, 2 when the trials cannot be made ([`HarnessError`]).
    pub fn run(self) -> ! {
        let trials = self.trials().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
        let conclusion = libtest_mimic::run(&self.options.libtest, trials);
        Pool::global().shutdown_all();
        conclusion.exit()
    }

    /// The command line's server, else the code's.
    fn server(&self) -> Option<Server> {
        match (&self.options.target, &self.options.spawn) {
            (Some(t), _) => Some(Server::Target(t.clone())),
            (None, Some(s)) => Some(Server::Spawn(s.clone())),
            (None, None) => self.default_server.clone(),
        }
    }

    /// The suite's cases of the chosen dialect that `--only` selects.
    fn selected_cases(&self) -> Result<Vec<Case>, HarnessError> {
        let globs = self
            .options
            .only
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| HarnessError::Only(format!("{g}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let cases: Vec<Case> = load_suite_cases()?
            .into_iter()
            .filter(|c| c.dialect == self.options.dialect)
            .filter(|c| globs.is_empty() || globs.iter().any(|g| selects(g, &c.id)))
            .collect();
        if cases.is_empty() && !globs.is_empty() {
            return Err(HarnessError::NoCase(self.options.only.clone()));
        }
        Ok(cases)
    }
}

/// `--only`: the glob matches the id or one of its dotted prefixes, so that `bs.range` selects
/// every `bs.range.*` (`run --only` takes plain prefixes instead: `bs.ran` selects there, not
/// here).
fn selects(glob: &glob::Pattern, id: &str) -> bool {
    glob.matches(id) || id.match_indices('.').any(|(i, _)| glob.matches(&id[..i]))
}

/// Each trial on a runtime of its own: trials run on libtest's threads, side by side.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A case against a server the suite has no snapshots for: the trial fails on
/// non-conformance (or on an error), and shows as ignored when unsupported.
fn trial<F>(case: Case, prefix: &str, strict: bool, run: F) -> Trial
where
    F: FnOnce(&Case) -> (CaseResult, Capabilities) + Send + 'static,
{
    let name = format!("{prefix}::{}", case.id);
    let level = case.level();
    Trial::ignorable_test(name, move || {
        let (result, _) = run(&case);
        match result.grade {
            Grade::Unsupported => Ok(Completion::ignored_with(
                result.note.clone().unwrap_or_else(|| "unsupported".into()),
            )),
            g if g.is_nonconformant(strict) || g == Grade::Error => {
                Err(snapshot_text(&result).into())
            }
            _ => Ok(Completion::Completed),
        }
    })
    .with_kind(level)
}

/// On a `--target`, trials run side by side on one export: a case that writes takes it alone,
/// so that no other case's map or read-back sees its writes half done.
enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl Turn {
    fn take(writes: bool) -> Turn {
        static EXPORT: RwLock<()> = RwLock::new(());
        if writes {
            Turn::Alone(EXPORT.write().unwrap_or_else(PoisonError::into_inner))
        } else {
            Turn::Shared(EXPORT.read().unwrap_or_else(PoisonError::into_inner))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module doc's example is the example crate's compiled test, line for line.
    #[test]
    fn the_doc_example_is_the_example_crates_test() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("a file of the tree");
        let this = read("src/harness.rs");
        let doc: Vec<&str> = this
            .lines()
            .skip_while(|l| *l != "//! ```no_run")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                l.strip_prefix("//!")
                    .unwrap_or(l)
                    .strip_prefix(' ')
                    .unwrap_or("")
            })
            .collect();
        let example = read("examples/implementer/tests/nbd.rs");
        let code: Vec<&str> = example
            .lines()
            .filter(|l| !l.starts_with("//!"))
            .skip_while(|l| l.is_empty())
            .collect();
        assert_eq!(doc, code);
    }

    #[test]
    fn only_matches_a_glob_or_a_dotted_prefix() {
        let g = |s: &str| glob::Pattern::new(s).unwrap();
        assert!(selects(&g("bs.range"), "bs.range.last-byte"));
        assert!(selects(&g("bs.*.last-*"), "bs.range.last-byte"));
        assert!(selects(&g("bs.range.last-byte"), "bs.range.last-byte"));
        assert!(!selects(&g("bs.ran"), "bs.range.last-byte"));
        assert!(!selects(&g("eh.*"), "bs.range.last-byte"));
    }

    #[test]
    fn the_command_line_names_the_server_before_the_code() {
        let h = Harness::parse_from(["t", "--target", "127.0.0.1:1"]).spawn("x --socket {socket}");
        assert!(matches!(h.server(), Some(Server::Target(t)) if t == "127.0.0.1:1"));
        let h = Harness::parse_from(["t"]).spawn("x --socket {socket}");
        assert!(matches!(h.server(), Some(Server::Spawn(_))));
    }
}
