//! JUnit XML for CI: one `<testsuite>` per target, one `<testcase>` per case, the clause ids,
//! level and grade as properties. Written by hand; every attribute and text goes through
//! [`attr`] or [`text`].
//!
//! fail → `<failure>`, error → `<error>`, unsupported → `<skipped>`, warn → `<failure>` under
//! `--strict` and otherwise a line in `<system-out>`, like info.

use std::fmt::{self, Write};
use std::time::Duration;

use super::{marker, Decided, RunReport, SPEC_REVISION, SUITE_VERSION};
use crate::clauses;
use crate::engine::outcome::{CaseResult, Grade, TargetResult};

pub(super) fn render(report: &RunReport) -> String {
    let mut out = String::new();
    write_report(&mut out, report).expect("writing to a String cannot fail");
    out
}

/// Counts as JUnit sees them.
#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    time: Duration,
}

impl Counts {
    fn of(cases: &[CaseResult], strict: bool) -> Counts {
        let mut n = Counts::default();
        for c in cases {
            n.tests += 1;
            n.time += c.duration;
            match c.grade {
                Grade::Fail => n.failures += 1,
                Grade::Warn if strict => n.failures += 1,
                Grade::Error => n.errors += 1,
                Grade::Unsupported => n.skipped += 1,
                _ => {}
            }
        }
        n
    }

    fn add(&mut self, other: &Counts) {
        self.tests += other.tests;
        self.failures += other.failures;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.time += other.time;
    }

    fn attrs(&self) -> String {
        format!(
            "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\"",
            self.tests,
            self.failures,
            self.errors,
            self.skipped,
            seconds(self.time)
        )
    }
}

fn write_report(out: &mut String, report: &RunReport) -> fmt::Result {
    let per_target: Vec<Counts> = report
        .targets
        .iter()
        .map(|t| Counts::of(&t.cases, report.strict))
        .collect();
    let mut total = Counts::default();
    per_target.iter().for_each(|c| total.add(c));

    writeln!(out, r#"<?xml version="1.0" encoding="utf-8"?>"#)?;
    writeln!(out, r#"<testsuites name="nbd-conform" {}>"#, total.attrs())?;
    for (t, counts) in report.targets.iter().zip(&per_target) {
        suite(out, report, t, counts)?;
    }
    writeln!(out, "</testsuites>")
}

fn suite(out: &mut String, report: &RunReport, t: &TargetResult, counts: &Counts) -> fmt::Result {
    writeln!(
        out,
        r#"  <testsuite name="{}" {}>"#,
        attr(&t.name),
        counts.attrs()
    )?;
    writeln!(out, "    <properties>")?;
    let dialect = t.dialect.as_str();
    let suite_version = format!("nbd-conform {SUITE_VERSION}");
    let props = [
        ("uri", t.uri.as_str()),
        ("server", t.server.as_str()),
        ("dialect", dialect),
        ("spec", SPEC_REVISION),
        ("suite", &suite_version),
        ("strict", if report.strict { "true" } else { "false" }),
    ];
    for (name, value) in props {
        property(out, 6, name, value)?;
    }
    // Only when it was: the suites of a run that finished read as they always did.
    if let Some(signal) = &report.interrupted {
        property(out, 6, "interrupted", signal)?;
    }
    writeln!(out, "    </properties>")?;
    for c in &t.cases {
        case(out, report.strict, t, c)?;
    }
    writeln!(out, "  </testsuite>")
}

fn case(out: &mut String, strict: bool, t: &TargetResult, c: &CaseResult) -> fmt::Result {
    let decided = Decided::of(c);
    let clause = decided.clause_or_first(c);
    // The deciding finding's level, else the level of the clause the case is about.
    let level = match decided.clause {
        Some(_) => Some(decided.level),
        None => clause.and_then(clauses::clause).map(|k| k.level.as_str()),
    };
    writeln!(
        out,
        r#"    <testcase classname="{}" name="{}" time="{}">"#,
        attr(&t.name),
        attr(&c.id),
        seconds(c.duration)
    )?;
    writeln!(out, "      <properties>")?;
    for id in &c.clauses {
        property(out, 8, "clause", id.as_str())?;
    }
    if let Some(level) = level {
        property(out, 8, "level", level)?;
    }
    property(out, 8, "grade", c.grade.as_str())?;
    writeln!(out, "      </properties>")?;

    let summary = one_line(c, &decided, clause, level);
    match c.grade {
        Grade::Fail => outcome(
            out,
            "failure",
            &summary,
            level.unwrap_or("fail"),
            &details(c),
        )?,
        Grade::Warn if strict => outcome(
            out,
            "failure",
            &summary,
            level.unwrap_or("warn"),
            &details(c),
        )?,
        Grade::Error => outcome(out, "error", &summary, "error", &details(c))?,
        Grade::Unsupported => writeln!(
            out,
            r#"      <skipped message="{}"/>"#,
            attr(decided.observed)
        )?,
        Grade::Pass | Grade::Info | Grade::Warn => {}
    }
    system_out(out, strict, c, &summary)?;
    writeln!(out, "    </testcase>")
}

/// "FAIL BS-REQ-ONE-2 (MUST): expected …; observed …", or the note for an errored case.
fn one_line(
    c: &CaseResult,
    decided: &Decided,
    clause: Option<&str>,
    level: Option<&str>,
) -> String {
    if c.grade == Grade::Error {
        return if decided.observed.is_empty() {
            "could not test".to_string()
        } else {
            decided.observed.to_string()
        };
    }
    format!(
        "{} {} ({}): expected {}; observed {}",
        marker(c.grade),
        clause.unwrap_or("no clause"),
        level.unwrap_or("?"),
        decided.expected,
        decided.observed
    )
}

/// The body of a `<failure>` or `<error>`: the title, every finding (the deciding one first in
/// the message already, here in case order) and the note.
fn details(c: &CaseResult) -> String {
    let mut body = String::new();
    if !c.title.is_empty() {
        body.push_str(&format!("{}\n", c.title));
    }
    for f in &c.findings {
        body.push_str(&format!(
            "{} {} ({}): expected {}; observed {}\n",
            marker(f.grade),
            f.clause,
            f.level(),
            f.expected,
            f.observed
        ));
    }
    if let Some(note) = c.note.as_deref().filter(|n| !n.is_empty()) {
        body.push_str(&format!("note: {note}\n"));
    }
    body
}

fn outcome(out: &mut String, element: &str, message: &str, kind: &str, body: &str) -> fmt::Result {
    writeln!(
        out,
        r#"      <{element} message="{}" type="{}">{}</{element}>"#,
        attr(message),
        attr(kind),
        text(body)
    )
}

/// A warning (when not failing) or info line, then the numbered transcript.
fn system_out(out: &mut String, strict: bool, c: &CaseResult, summary: &str) -> fmt::Result {
    let mut body = String::new();
    if c.grade == Grade::Info || (c.grade == Grade::Warn && !strict) {
        body.push_str(summary);
        body.push('\n');
        if c.grade == Grade::Warn {
            body.push_str("(a SHOULD is broken: conformant, but this fails under --strict)\n");
        }
    }
    let width = c.transcript.len().to_string().len();
    for (i, line) in c.transcript.iter().enumerate() {
        body.push_str(&format!("{:>width$} {line}\n", i + 1));
    }
    if body.is_empty() {
        return Ok(());
    }
    writeln!(out, "      <system-out>{}</system-out>", text(&body))
}

fn property(out: &mut String, indent: usize, name: &str, value: &str) -> fmt::Result {
    writeln!(
        out,
        r#"{:indent$}<property name="{}" value="{}"/>"#,
        "",
        attr(name),
        attr(value)
    )
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Character data: markup characters escaped, characters XML 1.0 forbids replaced.
fn text(s: &str) -> String {
    escape(s, false)
}

/// An attribute value in double quotes: as [`text`], and quotes and line breaks (which a parser
/// would normalise to spaces) as character references.
fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\'' if in_attr => out.push_str("&apos;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if in_attr => out.push_str("&#9;"),
            '\t' | '\n' => out.push(ch),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    /// Elements in document order: (name, attributes, text content directly inside).
    type Element = (String, Vec<(String, String)>, String);

    /// A small XML 1.0 well-formedness check (enough for what this module writes): one root,
    /// balanced tags, quoted attributes without `<`, and only known entity references.
    fn parse(xml: &str) -> Vec<Element> {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n")
            .expect("XML declaration");
        let mut stack: Vec<usize> = Vec::new();
        let mut elements: Vec<Element> = Vec::new();
        let mut roots = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let lt = rest.find('<').unwrap_or(rest.len());
            let chars = &rest[..lt];
            check_entities(chars);
            match stack.last() {
                Some(&open) => elements[open].2.push_str(&unescape(chars)),
                None => assert!(chars.trim().is_empty(), "text outside the root: {chars:?}"),
            }
            rest = &rest[lt..];
            if rest.is_empty() {
                break;
            }
            if let Some(close) = rest.strip_prefix("</") {
                let gt = close.find('>').expect("unterminated end tag");
                let name = &close[..gt];
                let open = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
                assert_eq!(elements[open].0, name, "mismatched end tag");
                rest = &close[gt + 1..];
                continue;
            }
            let mut tag = &rest[1..];
            let name_end = tag
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .expect("tag name");
            let name = tag[..name_end].to_string();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{name:?}"
            );
            tag = &tag[name_end..];
            let mut attrs = Vec::new();
            let self_closing;
            loop {
                tag = tag.trim_start();
                if let Some(after) = tag.strip_prefix("/>") {
                    self_closing = true;
                    tag = after;
                    break;
                }
                if let Some(after) = tag.strip_prefix('>') {
                    self_closing = false;
                    tag = after;
                    break;
                }
                let eq = tag.find("=\"").expect("attribute");
                let key = tag[..eq].to_string();
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{key:?}");
                let value_and_rest = &tag[eq + 2..];
                let q = value_and_rest.find('"').expect("closing quote");
                let value = &value_and_rest[..q];
                assert!(!value.contains('<'), "raw < in attribute {value:?}");
                check_entities(value);
                assert!(
                    !attrs.iter().any(|(k, _): &(String, String)| *k == key),
                    "duplicate attribute {key}"
                );
                attrs.push((key, unescape(value)));
                tag = &value_and_rest[q + 1..];
            }
            if stack.is_empty() {
                roots += 1;
            }
            elements.push((name, attrs, String::new()));
            if !self_closing {
                stack.push(elements.len() - 1);
            }
            rest = tag;
        }
        assert!(stack.is_empty(), "unclosed elements");
        assert_eq!(roots, 1, "one root element");
        elements
    }

    fn check_entities(s: &str) {
        for (i, _) in s.match_indices('&') {
            let semi = s[i..]
                .find(';')
                .unwrap_or_else(|| panic!("bare & in {s:?}"));
            let entity = &s[i + 1..i + semi];
            let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
                || entity
                    .strip_prefix('#')
                    .is_some_and(|n| n.parse::<u32>().is_ok());
            assert!(known, "unknown entity &{entity}; in {s:?}");
        }
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#10;", "\n")
            .replace("&#13;", "\r")
            .replace("&#9;", "\t")
            .replace("&amp;", "&")
    }

    fn attr_of<'a>(e: &'a Element, key: &str) -> &'a str {
        e.1.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} on <{}>", e.0))
    }

    fn named<'a>(elements: &'a [Element], name: &str) -> Vec<&'a Element> {
        elements.iter().filter(|e| e.0 == name).collect()
    }

    #[test]
    fn is_well_formed_with_the_right_counts() {
        let xml = sample().to_junit();
        let elements = parse(&xml);
        assert_eq!(xml.matches("<testcase ").count(), 8);
        let suites = named(&elements, "testsuite");
        assert_eq!(suites.len(), 2);
        assert_eq!(attr_of(suites[0], "name"), "alpha");
        assert_eq!(attr_of(suites[0], "tests"), "6");
        assert_eq!(attr_of(suites[0], "failures"), "1");
        assert_eq!(attr_of(suites[0], "errors"), "1");
        assert_eq!(attr_of(suites[0], "skipped"), "1");
        assert_eq!(attr_of(suites[0], "time"), "0.072");
        assert_eq!(attr_of(suites[1], "tests"), "2");
        assert_eq!(attr_of(suites[1], "failures"), "0");
        let root = &named(&elements, "testsuites")[0];
        assert_eq!(attr_of(root, "tests"), "8");
        assert_eq!(named(&elements, "failure").len(), 1);
        assert_eq!(named(&elements, "error").len(), 1);
        assert_eq!(named(&elements, "skipped").len(), 1);

        let cases = named(&elements, "testcase");
        assert_eq!(attr_of(cases[1], "classname"), "alpha");
        assert_eq!(attr_of(cases[1], "name"), "block-status/req-one");
        assert_eq!(attr_of(cases[6], "classname"), "beta");
    }

    #[test]
    fn messages_escape_markup_and_survive_a_parser() {
        let xml = sample().to_junit();
        let elements = parse(&xml);
        let failure = named(&elements, "failure")[0];
        assert_eq!(
            attr_of(failure, "message"),
            "FAIL BS-REQ-ONE-2 (MUST): expected 1 descriptor, length <= 4096; observed 2 descriptors | lengths 4096+512 <&\"'>"
        );
        assert_eq!(attr_of(failure, "type"), "MUST");
        assert!(failure.2.contains(
            "WARN BS-REP-512-1 (SHOULD): expected multiples of 512; observed length 100"
        ));
        assert!(
            xml.contains("&lt;&amp;&quot;&apos;&gt;"),
            "attribute escaping"
        );
        assert!(xml.contains("&lt;&amp;\"'&gt;"), "text escaping");

        let error = named(&elements, "error")[0];
        assert_eq!(
            attr_of(error, "message"),
            "connect refused <127.0.0.1:10809> & gave up"
        );
        let skipped = named(&elements, "skipped")[0];
        assert_eq!(
            attr_of(skipped, "message"),
            "server did not negotiate extended headers"
        );

        assert_eq!(attr("a\nb\t\u{1}"), "a&#10;b&#9;\u{FFFD}");
        assert_eq!(text("a\nb\u{0}"), "a\nb\u{FFFD}");
    }

    #[test]
    fn properties_name_clauses_level_and_grade() {
        let elements = parse(&sample().to_junit());
        let props: Vec<(&str, &str)> = named(&elements, "property")
            .into_iter()
            .map(|p| (attr_of(p, "name"), attr_of(p, "value")))
            .collect();
        // The req-one case, after alpha's six suite properties and basic's three.
        let req_one = &props[6 + 3..6 + 3 + 4];
        assert_eq!(
            req_one,
            [
                ("clause", "BS-REQ-ONE-2"),
                ("clause", "BS-REP-LEN-1"),
                ("level", "MUST"),
                ("grade", "fail")
            ]
        );
    }

    #[test]
    fn warn_is_a_failure_only_under_strict() {
        let mut report = sample();
        let lenient = parse(&report.to_junit());
        let align_out = &named(&lenient, "system-out")
            .into_iter()
            .find(|e| {
                e.2.contains(
                    "BS-REP-512-1 (SHOULD): expected multiples of 512; observed line one\nline two",
                )
            })
            .expect("warning in system-out");
        assert!(align_out.2.starts_with("WARN "));
        assert_eq!(named(&lenient, "failure").len(), 1);

        report.strict = true;
        let strict = parse(&report.to_junit());
        let failures = named(&strict, "failure");
        assert_eq!(failures.len(), 2);
        assert_eq!(attr_of(failures[1], "type"), "SHOULD");
        assert_eq!(attr_of(named(&strict, "testsuite")[0], "failures"), "2");
    }

    #[test]
    fn transcript_goes_to_system_out() {
        let xml = sample().to_junit();
        assert!(xml.contains(
            "<system-out>1 TX REQUEST type=BLOCK_STATUS flags=REQ_ONE cookie=0x1\n2 RX CHUNK"
        ));
    }

    #[test]
    fn renders_the_sample_run() {
        insta::assert_snapshot!("sample-run", sample().to_junit());
    }
}
