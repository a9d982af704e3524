//! The report files as the tools that read them see them (issue 11 §4), on real runs: a correct
//! server, a faulty one (failures), and an unreachable one (errors).
//!
//! - JUnit: validated by xmllint against `tests/support/junit-10.xsd`, the constraints of the
//!   Jenkins junit-10 schema CI tools check with; the schema is shown to reject the shapes it
//!   must (properties inside a test case, `skipped` on the root), so a pass means something.
//! - Markdown: parsed as GitHub renders it (CommonMark with GFM tables, pulldown-cmark): every
//!   line that starts with `|` lands in a table, every row has its header's cell count, every
//!   `<details>` closes, and every fenced block inside one renders as code, not as raw HTML.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use libtest_mimic::{Failed, Trial};
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag};

use crate::support::bin;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/junit-10.xsd");

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::report_formats::junit_of_a_passing_run_is_valid",
            || {
                let run = Run::new(&["--spawn", &serve(None), "--only", "bs.req-one"], 0)?;
                run.junit_is_valid()?;
                run.junit_counts(4, 0, 0)
            },
        ),
        Trial::test(
            "selftest::report_formats::junit_of_a_failing_run_is_valid",
            || {
                let spawn = serve(Some("req-one-overrun"));
                let run = Run::new(&["--spawn", &spawn, "--only", "bs.req-one"], 1)?;
                run.junit_is_valid()?;
                run.junit_counts(4, 2, 0)
            },
        ),
        Trial::test(
            "selftest::report_formats::junit_of_an_unreachable_server_is_valid",
            || {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let target = format!("nbd+unix:///?socket={}", dir.path().join("none").display());
                let args = [
                    "--target",
                    &target,
                    "--only",
                    "bs.req-one",
                    "--connect-timeout",
                    "1",
                ];
                let run = Run::new(&args, 3)?;
                run.junit_is_valid()?;
                run.junit_counts(4, 0, 4)
            },
        ),
        Trial::test(
            "selftest::report_formats::the_schema_rejects_what_junit_10_rejects",
            schema_rejects,
        ),
        Trial::test(
            "selftest::report_formats::known_failures_and_stale_lines_render_and_validate",
            known_and_stale,
        ),
        Trial::test(
            "selftest::report_formats::a_crashed_servers_last_lines_render",
            crashed_server,
        )
        .with_ignored_flag(
            nbd_conform::launch::ServerKind::Nbdkit
                .installed_version()
                .as_deref()
                != Some("1.32.5"),
        ),
        Trial::test(
            "selftest::report_formats::markdown_renders_whole_on_github",
            || {
                for (fault, code) in [(None, 0), (Some("req-one-overrun"), 1)] {
                    let run = Run::new(&["--spawn", &serve(fault), "--only", "bs."], code)?;
                    let markdown =
                        std::fs::read_to_string(run.path("r.md")).map_err(|e| e.to_string())?;
                    renders_whole(&markdown)
                        .map_err(|e| format!("{e}\n--- report ---\n{markdown}"))?;
                }
                Ok(())
            },
        ),
        Trial::test(
            "selftest::report_formats::the_render_check_catches_broken_markdown",
            || {
                let broken_table = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n";
                let unclosed = "<details><summary>x</summary>\n\ntext\n";
                let swallowed = "<details><summary>x</summary>\n```\ncode\n```\n\n</details>\n";
                for (name, text) in [
                    ("extra cell", broken_table),
                    ("unclosed", unclosed),
                    ("swallowed fence", swallowed),
                ] {
                    if renders_whole(text).is_ok() {
                        return Err(
                            format!("{name}: broken Markdown passed the render check").into()
                        );
                    }
                }
                Ok(())
            },
        ),
    ]
}

/// A run with a known failure (the faulty server's) and a stale line (a case that passes):
/// both reports keep their shape, and the JUnit says the stale line fails.
fn known_and_stale() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let list = dir.path().join("known.txt");
    std::fs::write(
        &list,
        "bs.req-one.*@nbd-conform  BS-REQ-ONE-2: the fault\nbs.range.last-byte@nbd-conform  stale on purpose\n",
    )
    .map_err(|e| e.to_string())?;
    let list = list.to_string_lossy().into_owned();
    let spawn = serve(Some("req-one-overrun"));
    let args = [
        "--spawn",
        &spawn,
        "--only",
        "bs.req-one",
        "--only",
        "bs.range.last-byte",
        "--known-failing",
        &list,
    ];
    let run = Run::new(&args, 1)?;
    run.junit_is_valid()?;
    // Four bs.req-one cases (two known failures), bs.range.last-byte, and the stale line.
    run.junit_counts(6, 1, 0)?;
    let markdown = std::fs::read_to_string(run.path("r.md")).map_err(|e| e.to_string())?;
    for section in ["## Known failures", "## Stale known-failing lines"] {
        if !markdown.contains(section) {
            return Err(format!("no {section:?} in the report").into());
        }
    }
    renders_whole(&markdown).map_err(|e| format!("{e}\n--- report ---\n{markdown}").into())
}

/// nbdkit 1.32.5 aborts on one case: the report shows its last output, and still renders.
fn crashed_server() -> Result<(), Failed> {
    let args = [
        "--server",
        "nbdkit",
        "--only",
        "bs.big.max-compact-length-in-bounds",
    ];
    let run = Run::new(&args, 1)?;
    run.junit_is_valid()?;
    let markdown = std::fs::read_to_string(run.path("r.md")).map_err(|e| e.to_string())?;
    if !markdown.contains("Assertion `e.length <= length' failed") {
        return Err(format!("no assertion line in the report:\n{markdown}").into());
    }
    renders_whole(&markdown).map_err(|e| format!("{e}\n--- report ---\n{markdown}").into())
}

/// A `spawn` template that starts our reference server, with `fault` if given.
fn serve(fault: Option<&str>) -> String {
    let fault = fault.map_or(String::new(), |f| format!(" --fault {f}"));
    format!(
        "{} serve {{raw}} --socket {{socket}} --export {{export}}{fault}",
        bin()
    )
}

/// One `nbd-conform run` writing all three reports into a temp dir.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new(args: &[&str], expect_code: i32) -> Result<Run, Failed> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = assert_cmd::Command::new(bin())
            .arg("run")
            .args(args)
            .arg("--report")
            .arg(dir.path().join("r.md"))
            .arg("--json")
            .arg(dir.path().join("r.json"))
            .arg("--junit")
            .arg(dir.path().join("r.xml"))
            .timeout(Duration::from_secs(120))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.code() != Some(expect_code) {
            return Err(format!(
                "run {args:?} exited {:?}, expected {expect_code}:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(Run { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn junit_is_valid(&self) -> Result<(), Failed> {
        validate(&self.path("r.xml"))
    }

    /// The root's counts as a CI tool reads them (xmllint's XPath, not our own parser).
    fn junit_counts(&self, tests: usize, failures: usize, errors: usize) -> Result<(), Failed> {
        let xml = self.path("r.xml");
        let count = |xpath: &str| -> Result<String, Failed> {
            let out = Command::new("xmllint")
                .arg("--xpath")
                .arg(xpath)
                .arg(&xml)
                .output()
                .map_err(|e| format!("xmllint: {e} (install libxml2-utils)"))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let seen = [
            count("string(/testsuites/@tests)")?,
            count("string(/testsuites/@failures)")?,
            count("string(/testsuites/@errors)")?,
            count("count(//testcase)")?,
            count("count(//testcase/failure)")?,
            count("count(//testcase/error)")?,
        ];
        let want = [tests, failures, errors, tests, failures, errors].map(|n| n.to_string());
        if seen != want {
            return Err(format!(
                "JUnit counts (tests, failures, errors, and elements) {seen:?}, expected {want:?}"
            )
            .into());
        }
        Ok(())
    }
}

/// `xmllint --schema junit-10.xsd FILE`: Ok when the file validates.
fn validate(xml: &Path) -> Result<(), Failed> {
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", SCHEMA])
        .arg(xml)
        .output()
        .map_err(|e| format!("xmllint: {e} (install libxml2-utils)"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} does not validate against junit-10:\n{}",
        xml.display(),
        String::from_utf8_lossy(&out.stderr)
    )
    .into())
}

/// The two shapes the earlier hand-written JUnit had and Jenkins refuses.
fn schema_rejects() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let case =
        r#"<testcase name="c"><properties><property name="a" value="b"/></properties></testcase>"#;
    let bad = [
        ("properties in a testcase", format!(r#"<testsuites><testsuite name="s" tests="1" failures="0" errors="0">{case}</testsuite></testsuites>"#)),
        ("skipped on the root", r#"<testsuites skipped="0"><testsuite name="s" tests="0" failures="0" errors="0"/></testsuites>"#.to_owned()),
        ("a suite without counts", r#"<testsuites><testsuite name="s"/></testsuites>"#.to_owned()),
    ];
    for (name, xml) in bad {
        let file = dir.path().join("bad.xml");
        std::fs::write(&file, xml).map_err(|e| e.to_string())?;
        if validate(&file).is_ok() {
            return Err(format!("the schema accepts {name}").into());
        }
    }
    let good = dir.path().join("good.xml");
    let xml = r#"<testsuites><testsuite name="s" tests="1" failures="0" errors="0" skipped="0"><testcase name="c" time="0.5"><system-out>x</system-out></testcase></testsuite></testsuites>"#;
    std::fs::write(&good, xml).map_err(|e| e.to_string())?;
    validate(&good)
}

/// Ok when `markdown` renders as its author meant under CommonMark + GFM tables (see the
/// module doc); else what came out broken.
fn renders_whole(markdown: &str) -> Result<(), String> {
    let mut tables: Vec<Range<usize>> = Vec::new();
    let mut fenced_blocks = 0;
    let (mut opened, mut closed) = (0, 0);
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).into_offset_iter();
    for (event, range) in parser {
        match event {
            Event::Start(Tag::Table(_)) => tables.push(range),
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(_))) => fenced_blocks += 1,
            Event::Html(html) | Event::InlineHtml(html) => {
                opened += html.matches("<details>").count();
                closed += html.matches("</details>").count();
            }
            _ => {}
        }
    }
    if opened != closed {
        return Err(format!("{opened} <details> opened, {closed} closed"));
    }
    let mut offset = 0;
    // The backtick count of the fence open, if one is: only a line of at least as many
    // backticks and nothing else closes it (CommonMark), so ``` inside ```` is content.
    let mut open_fence: Option<usize> = None;
    let mut source_fences = 0;
    for line in markdown.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let text = line.trim_end();
        let ticks = text.len() - text.trim_start_matches('`').len();
        let was_open = open_fence.is_some();
        match open_fence {
            Some(n) if ticks >= n && text.len() == ticks => open_fence = None,
            Some(_) => {}
            None if ticks >= 3 => {
                open_fence = Some(ticks);
                source_fences += 1;
            }
            None => {}
        }
        if was_open || open_fence.is_some() || !text.starts_with('|') {
            continue;
        }
        let Some(table) = tables.iter().find(|t| t.contains(&start)) else {
            return Err(format!("a table line renders as text: {text}"));
        };
        let header = markdown[table.clone()].lines().next().unwrap_or("");
        if cells(text) != cells(header) {
            return Err(format!(
                "{} cells under a {}-cell header: {text}",
                cells(text),
                cells(header)
            ));
        }
    }
    if source_fences != fenced_blocks {
        return Err(format!(
            "{source_fences} fenced blocks written, {fenced_blocks} render as code"
        ));
    }
    Ok(())
}

/// Cells of a GFM table row with leading and trailing pipes: the pipes not escaped, minus one.
fn cells(row: &str) -> usize {
    let mut count: usize = 0;
    let mut escaped = false;
    for c in row.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '|' => count += 1,
            _ => {}
        }
    }
    count.saturating_sub(1)
}
