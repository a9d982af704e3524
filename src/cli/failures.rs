//! What `run` prints on standard error under each target: the cases that failed (or warned,
//! under `--strict`) and those that could not be tested, each reason once. Servers launched
//! per fixture that cannot start fail every case the same way but for their temp dir; masked
//! ([`mask_scratch_dirs`]), those errors compare equal and are told once with a count.

use nbd_conform::engine::outcome::{CaseResult, Grade};
use nbd_conform::launch::mask_scratch_dirs;

/// One line to print: the first case with this grade and reason, and how many had it.
#[derive(Debug, PartialEq, Eq)]
pub struct Told {
    pub grade: Grade,
    /// A `--known-failing` line acknowledged these cases.
    pub known: bool,
    pub first: String,
    pub why: String,
    pub times: usize,
}

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = if self.known { "KNOWN " } else { "" };
        let grade = format!("{known}{}", self.grade.as_str().to_uppercase());
        match self.times {
            1 => write!(f, "{grade} {}: {}", self.first, self.why),
            n => write!(
                f,
                "{grade} {} and {} more: {} ({n} times)",
                self.first,
                n - 1,
                self.why
            ),
        }
    }
}

/// The non-conformant and erroring cases of one target, grouped by grade and reason in the
/// order they first appear; `known` tells the failures a `--known-failing` line acknowledged.
pub fn told(cases: &[CaseResult], strict: bool, known: impl Fn(&CaseResult) -> bool) -> Vec<Told> {
    let mut lines: Vec<Told> = Vec::new();
    for c in cases
        .iter()
        .filter(|c| c.grade.is_nonconformant(strict) || c.grade == Grade::Error)
    {
        let why = c.deciding().map_or_else(
            || c.note.clone().unwrap_or_default(),
            |f| {
                format!(
                    "{}: expected {}; observed {}",
                    f.clause, f.expected, f.observed
                )
            },
        );
        let why = mask_scratch_dirs(&why);
        let is_known = known(c);
        match lines
            .iter_mut()
            .find(|l| l.grade == c.grade && l.known == is_known && l.why == why)
        {
            Some(line) => line.times += 1,
            None => lines.push(Told {
                grade: c.grade,
                known: is_known,
                first: c.id.clone(),
                why,
                times: 1,
            }),
        }
    }
    lines
}
