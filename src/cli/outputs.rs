//! The report files of `run`: checked before anything runs (a path that cannot be written ends
//! the run at once, exit [`exit::IO`]), written at the end (one that fails does not stop the
//! others), `-` meaning standard output, and a reader that stops early (`| head`) no error.

use std::io::Write;
use std::path::{Path, PathBuf};

use nbd_conform::report::exit;

/// The path that means standard output (never a file of that name).
pub const STDOUT: &str = "-";

/// The formats a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    Junit,
}

impl Format {
    /// What the closing line calls it.
    fn what(self) -> &'static str {
        match self {
            Format::Markdown => "the Markdown report",
            Format::Json => "the JSON report",
            Format::Junit => "the JUnit report",
        }
    }
}

/// One report the user asked for.
#[derive(Debug, Clone)]
pub struct Output {
    pub format: Format,
    /// `None`: standard output.
    pub file: Option<PathBuf>,
}

impl Output {
    fn new(format: Format, path: &Path) -> Output {
        Output {
            format,
            file: (path.as_os_str() != STDOUT).then(|| path.to_owned()),
        }
    }

    /// Where it went, as the closing line says it.
    pub fn place(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => format!("{} to standard output", self.format.what()),
        }
    }

    /// Writes `text`. A reader of standard output that left early (`| head -c 10`) took what
    /// it wanted: that is no failure, as for any Unix tool.
    pub fn write(&self, text: &str) -> std::io::Result<()> {
        match &self.file {
            Some(p) => std::fs::write(p, text),
            None => match to_stdout(text) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            },
        }
    }
}

/// `text` on standard output, flushed: an error in its last line (`> /dev/full`) is found
/// here, not lost when the process exits.
fn to_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Why the outputs were refused before the run, and the exit code that says so.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    pub code: u8,
}

/// The outputs of `--report`, `--json` and `--junit`, in that order, each checked: at most one
/// may be standard output, and every file must be writable now (its directory exists and lets
/// us in), so that a bad path is found before every case has run, not after.
pub fn check(
    report: Option<&Path>,
    json: Option<&Path>,
    junit: Option<&Path>,
) -> Result<Vec<Output>, Refused> {
    let outputs: Vec<Output> = [
        (Format::Markdown, report),
        (Format::Json, json),
        (Format::Junit, junit),
    ]
    .into_iter()
    .filter_map(|(format, path)| path.map(|p| Output::new(format, p)))
    .collect();
    if outputs.iter().filter(|o| o.file.is_none()).count() > 1 {
        return Err(Refused {
            message: "only one of --report, --json and --junit can be `-` (standard output)".into(),
            code: exit::USAGE,
        });
    }
    for file in outputs.iter().filter_map(|o| o.file.as_deref()) {
        if let Err(e) = writable(file) {
            return Err(Refused {
                message: format!("cannot write {}: {e}", file.display()),
                code: exit::IO,
            });
        }
    }
    Ok(outputs)
}

/// Whether a file can be written at `path`, leaving no trace: an existing file is opened for
/// appending (never truncated here; the report replaces it at the end), a new one is created
/// and removed again (a run stopped by a usage error leaves no empty report behind).
fn writable(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    match open.append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            open.create_new(true).open(path)?;
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}
