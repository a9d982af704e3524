//! The Markdown report (design §6): for people, and for a CI job summary.
//!
//! Deterministic by construction (no clock, no durations, input order or sorted order
//! everywhere) so it can be snapshot-tested.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write};

use super::{
    marker, spec, Decided, RunReport, TargetVerdict, Verdict, SPEC_REVISION, SUITE_VERSION,
};
use crate::clauses;
use crate::engine::outcome::{CaseResult, Finding, Grade, TargetResult};
use crate::Dialect;

/// The longest "observed" text the by-section table shows; the rest is in the failure entry
/// and the JSON.
const ONE_LINE_MAX: usize = 120;

pub(super) fn render(report: &RunReport) -> String {
    let mut out = String::new();
    write_report(&mut out, report).expect("writing to a String cannot fail");
    out
}

fn write_report(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(out, "# NBD block-status conformance report")?;
    targets(out, report)?;
    verdict(out, report)?;
    legend(out)?;
    capabilities(out, report)?;
    entries(out, report, Grade::Fail)?;
    entries(out, report, Grade::Warn)?;
    known_failures(out, report)?;
    stale_lines(out, report)?;
    not_checked(out, report)?;
    not_tested(out, report)?;
    by_section(out, report)?;
    coverage(out, report)?;
    if report.targets.len() >= 2 {
        matrix(out, report)?;
    }
    Ok(())
}

/// The run at a glance: one row per target, its verdict and its grade counts, the counts that
/// need a look marked.
fn targets(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(
        out,
        "\n| Target | Server | Verdict | Pass | Fail | Warn | Known | Info | Unsupported | Error |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    )?;
    for t in &report.targets {
        let s = report.summary(t);
        let verdict = match report.target_verdict(t) {
            TargetVerdict::Judged(Verdict::Conformant) => "✅ conformant".to_owned(),
            TargetVerdict::Judged(Verdict::NonConformant) => "❌ **non-conformant**".to_owned(),
            TargetVerdict::Judged(v @ Verdict::CouldNotTest) => format!("⛔ **{v}**"),
            v => v.as_str().to_owned(),
        };
        let marked = |n: usize, grade: Grade| match n {
            0 => "0".to_owned(),
            n => format!("{} **{n}**", emoji(grade)),
        };
        writeln!(
            out,
            "| {} | {} | {verdict} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&t.name),
            cell(&server_at_version(&t.server)),
            s.pass,
            marked(s.fail, Grade::Fail),
            marked(s.warn, Grade::Warn),
            s.known,
            s.info,
            s.unsupported,
            marked(s.error, Grade::Error)
        )?;
    }
    for t in &report.targets {
        for note in &t.notes {
            writeln!(out, "\n- {}: {}", cell(&t.name), inline(note))?;
        }
    }
    Ok(())
}

/// A grade in a table: FAIL, WARN and ERROR marked so that they stand out in a long column.
fn mark(grade: Grade) -> String {
    match grade {
        Grade::Fail | Grade::Warn | Grade::Error => {
            format!("{} **{}**", emoji(grade), marker(grade))
        }
        _ => marker(grade).to_owned(),
    }
}

fn emoji(grade: Grade) -> &'static str {
    match grade {
        Grade::Fail => "❌",
        Grade::Warn => "⚠️",
        Grade::Error => "⛔",
        _ => "",
    }
}

fn verdict(out: &mut String, report: &RunReport) -> fmt::Result {
    let s = report.total();
    let strict = if report.strict {
        " under `--strict`"
    } else {
        ""
    };
    let verdict = match report.verdict() {
        Verdict::Conformant => "conformant",
        Verdict::NonConformant => "non-conformant",
        Verdict::CouldNotTest => "could not test",
        Verdict::Interrupted => "interrupted",
    };
    let strict = match &report.interrupted {
        Some(signal) => format!(
            " by {signal}{strict}: this report holds the targets that finished, with their \
             verdicts, and the cases that finished of the one cut short; the run has none"
        ),
        None => strict.to_owned(),
    };
    writeln!(
        out,
        "\n**Verdict: {verdict}**{strict} ({} fail, {} warn, {} known, {} pass, {} info, {} unsupported, {} error)",
        s.fail, s.warn, s.known, s.pass, s.info, s.unsupported, s.error
    )?;
    if !report.known_failing.stale.is_empty() {
        writeln!(
            out,
            "\n{} stale known-failing line(s) fail the run: see \"Stale known-failing lines\".",
            report.known_failing.stale.len()
        )?;
    }
    writeln!(out, "\nSpec {SPEC_REVISION} · nbd-conform {SUITE_VERSION}")
}

/// What the cases could not check (a budget ran out): a verdict is as wide as what was read.
fn not_checked(out: &mut String, report: &RunReport) -> fmt::Result {
    let rows: Vec<(&TargetResult, &CaseResult, &String)> = report
        .targets
        .iter()
        .flat_map(|t| {
            t.cases
                .iter()
                .flat_map(move |c| c.not_checked.iter().map(move |n| (t, c, n)))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## Not checked\n\n| Target | Case | What was left unchecked |\n|---|---|---|"
    )?;
    for (t, c, n) in rows {
        writeln!(
            out,
            "| {} | {} | {} |",
            cell(&t.name),
            code_cell(&c.id),
            cell(n)
        )?;
    }
    Ok(())
}

/// The cases that tested nothing (unsupported, error), target by target, grouped by why, the
/// largest group first: "72 × the server refused NBD_OPT_STRUCTURED_REPLY" reads at a glance
/// where 72 rows would not.
fn not_tested(out: &mut String, report: &RunReport) -> fmt::Result {
    let untested = |c: &&CaseResult| matches!(c.grade, Grade::Unsupported | Grade::Error);
    if !report
        .targets
        .iter()
        .any(|t| t.cases.iter().any(|c| untested(&c)))
    {
        return Ok(());
    }
    writeln!(out, "\n## Not tested, and why")?;
    for t in &report.targets {
        let mut groups: Vec<(Grade, &str, Vec<&str>)> = Vec::new();
        for c in t.cases.iter().filter(untested) {
            let why = c.note.as_deref().unwrap_or("no reason recorded");
            match groups
                .iter_mut()
                .find(|(g, w, _)| *g == c.grade && *w == why)
            {
                Some((_, _, ids)) => ids.push(&c.id),
                None => groups.push((c.grade, why, vec![&c.id])),
            }
        }
        if groups.is_empty() {
            continue;
        }
        // Largest first; errors before unsupported among equals (stable sort keeps run order).
        groups.sort_by_key(|(g, _, ids)| (std::cmp::Reverse(ids.len()), *g != Grade::Error));
        let total: usize = groups.iter().map(|(_, _, ids)| ids.len()).sum();
        writeln!(out, "\n### {} ({total} not tested)\n", inline(&t.name))?;
        for (grade, why, ids) in groups {
            let ids: Vec<String> = ids.iter().map(|id| code(id)).collect();
            writeln!(
                out,
                "- **{}** × {}: {}<br>{}",
                ids.len(),
                mark(grade),
                inline(why),
                ids.join(", ")
            )?;
        }
    }
    Ok(())
}

fn legend(out: &mut String) -> fmt::Result {
    writeln!(
        out,
        "\n## Grades

| Grade | Meaning |
|---|---|
| PASS | the clause holds |
| ❌ **FAIL** | a MUST / MUST NOT is broken |
| ⚠️ **WARN** | a SHOULD / SHOULD NOT is broken (fails only under `--strict`) |
| INFO | a MAY or unspecified behaviour, recorded |
| UNSUPPORTED | a prerequisite was not negotiated (no structured replies, no context, no extended headers) |
| ⛔ **ERROR** | the harness could not test (refused, timeout while connecting, bad arguments); never a verdict |
| KNOWN FAIL, KNOWN WARN | a failure a `--known-failing` line acknowledges: not counted |"
    )
}

fn capabilities(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(
        out,
        "\n## Capabilities\n\n| Target | URI | Dialect | Structured replies | Extended headers | Contexts |\n|---|---|---|---|---|---|"
    )?;
    for t in &report.targets {
        let caps = &t.capabilities;
        let contexts = if caps.contexts.is_empty() {
            "none".to_string()
        } else {
            caps.contexts
                .iter()
                .map(|c| code_cell(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {contexts} |",
            cell(&t.name),
            code_cell(&t.uri),
            dialect(t.dialect),
            yes_no(caps.structured_replies),
            yes_no(caps.extended_headers)
        )?;
    }
    Ok(())
}

/// "## Failures" or "## Warnings": one entry per case of that grade, target by target.
fn entries(out: &mut String, report: &RunReport, grade: Grade) -> fmt::Result {
    match grade {
        Grade::Warn if report.strict => writeln!(out, "\n## Warnings (failing under `--strict`)")?,
        Grade::Warn => writeln!(out, "\n## Warnings")?,
        _ => writeln!(out, "\n## Failures")?,
    }
    let mut any = false;
    for t in &report.targets {
        for c in t
            .cases
            .iter()
            .filter(|c| c.grade == grade && report.known(t, c).is_none())
        {
            entry(out, t, c, marker(c.grade))?;
            any = true;
        }
    }
    if !any {
        writeln!(out, "\nNone.")?;
    }
    Ok(())
}

/// One case's finding in full, headed `### LABEL case — clause`.
fn entry(out: &mut String, target: &TargetResult, case: &CaseResult, label: &str) -> fmt::Result {
    let decided = Decided::of(case);
    let clause = decided.clause_or_first(case);
    let level = match (decided.clause, clause) {
        (Some(_), _) => decided.level,
        (None, Some(id)) => clauses::clause(id).map_or("?", |c| c.level.as_str()),
        (None, None) => "?",
    };
    writeln!(
        out,
        "\n### {label} {} — {} ({level})",
        code(&case.id),
        clause.map_or_else(|| "no clause".to_string(), code)
    )?;
    writeln!(
        out,
        "\n{} · target {}",
        inline(&case.title),
        code(&target.name)
    )?;

    if let Some(c) = clause.and_then(clauses::clause) {
        writeln!(out)?;
        for line in c.text.lines() {
            writeln!(out, "> {}", inline(line))?;
        }
        let section = match spec::section_url(c.section) {
            Some(url) => format!("[{}]({url})", inline(c.section)),
            None => inline(c.section),
        };
        writeln!(out, ">\n> — our paraphrase; spec section: {section}")?;
    }

    writeln!(out)?;
    writeln!(out, "- Expected: {}", inline(decided.expected))?;
    writeln!(out, "- Observed: {}", inline(decided.observed))?;
    if let Some(note) = case
        .note
        .as_deref()
        .filter(|n| !n.is_empty() && *n != decided.observed)
    {
        writeln!(out, "- Note: {}", inline(note))?;
    }
    for n in &case.not_checked {
        writeln!(out, "- Not checked: {}", inline(n))?;
    }
    if !case.server_log.is_empty() {
        // What the server said as it died (an assertion, a panic): often the whole diagnosis.
        let fence = "`".repeat(fence_len(&case.server_log));
        writeln!(
            out,
            "\nThe server died during this case; its last output:\n\n{fence}\n{}\n{fence}",
            case.server_log.join("\n")
        )?;
    }

    let deciding = case.deciding();
    let others: Vec<_> = case
        .findings
        .iter()
        .filter(|f| !deciding.is_some_and(|d| std::ptr::eq(d, *f)))
        .collect();
    if !others.is_empty() {
        writeln!(out, "\nOther findings:\n")?;
        for f in others {
            writeln!(
                out,
                "- {} {} ({}): expected {}; observed {}",
                marker(f.grade),
                code(f.clause.as_str()),
                f.level(),
                inline(&f.expected),
                inline(&f.observed)
            )?;
        }
    }
    transcript(out, &case.transcript)
}

/// The failing cases a `--known-failing` line acknowledged: not failures of this run, and
/// listed so that nobody forgets them.
fn known_failures(out: &mut String, report: &RunReport) -> fmt::Result {
    let known = &report.known_failing.known;
    if known.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## Known failures\n\nAcknowledged by `--known-failing`: reported, not counted as failures.\n\n\
         | Case | Server | Grade | Reason | Line |\n|---|---|---|---|---|"
    )?;
    for k in known {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            code_cell(&k.case),
            cell(&server_at_version(&k.server)),
            mark(k.grade),
            cell(&k.reason),
            code_cell(&k.at.to_string())
        )?;
    }
    // The evidence, as for a failure: a reviewer checks an acknowledgement against it.
    for t in &report.targets {
        for c in t.cases.iter().filter(|c| report.known(t, c).is_some()) {
            entry(out, t, c, &format!("KNOWN {}", marker(c.grade)))?;
        }
    }
    Ok(())
}

/// Lines that acknowledged nothing while their cases passed: each fails the run.
fn stale_lines(out: &mut String, report: &RunReport) -> fmt::Result {
    let stale = &report.known_failing.stale;
    if stale.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## Stale known-failing lines\n\nTheir cases pass now: remove the lines (each fails the run).\n\n\
         | Line | Entry | Reason | Passed |\n|---|---|---|---|"
    )?;
    for s in stale {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            code_cell(&s.at.to_string()),
            code_cell(&s.key),
            cell(&s.reason),
            cell(&s.passed.join(", "))
        )?;
    }
    Ok(())
}

/// "nbdkit 1.32.5" as `nbdkit@1.32.5`, the way a known-failing line names it.
fn server_at_version(server: &str) -> String {
    match super::known::server_name_and_version(server) {
        (name, "") => name.to_owned(),
        (name, version) => format!("{name}@{version}"),
    }
}

/// A numbered transcript in a fence no line can close, inside a collapsed block.
fn transcript(out: &mut String, lines: &[String]) -> fmt::Result {
    if lines.is_empty() {
        return writeln!(out, "\n_No transcript recorded._");
    }
    let fence = "`".repeat(fence_len(lines));
    let width = lines.len().to_string().len();
    writeln!(
        out,
        "\n<details><summary>transcript ({} lines)</summary>\n",
        lines.len()
    )?;
    writeln!(out, "{fence}")?;
    for (i, line) in lines.iter().enumerate() {
        // A transcript line holding a newline still gets one number.
        writeln!(out, "{:>width$} {}", i + 1, line.replace('\n', " "))?;
    }
    writeln!(out, "{fence}\n\n</details>")
}

/// Three backticks, or one more than the longest backtick run in any line.
fn fence_len(lines: &[String]) -> usize {
    let longest = lines.iter().map(|l| longest_run(l, '`')).max().unwrap_or(0);
    (longest + 1).max(3)
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == ch { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

fn by_section(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(out, "\n## By section")?;
    let several = report.targets.len() >= 2;
    // Sections in the order their first case ran; cases within a section likewise.
    let mut sections: Vec<(&'static str, Vec<(&TargetResult, &CaseResult)>)> = Vec::new();
    for t in &report.targets {
        for c in &t.cases {
            let name = c
                .clauses
                .first()
                .map_or("general", |id| clauses::section_of(id.as_str()));
            match sections.iter_mut().find(|(n, _)| *n == name) {
                Some((_, rows)) => rows.push((t, c)),
                None => sections.push((name, vec![(t, c)])),
            }
        }
    }
    if sections.is_empty() {
        return writeln!(out, "\nNo cases ran.");
    }
    for (name, rows) in sections {
        writeln!(out, "\n### {}\n", inline(name))?;
        if several {
            writeln!(
                out,
                "| Case | Target | Title | Grade | Clause | Observed | Side observations |\n\
                 |---|---|---|---|---|---|---|"
            )?;
        } else {
            writeln!(
                out,
                "| Case | Title | Grade | Clause | Observed | Side observations |\n\
                 |---|---|---|---|---|---|"
            )?;
        }
        for (t, c) in rows {
            let own = Own::of(c);
            let target = if several {
                format!(" {} |", cell(&t.name))
            } else {
                String::new()
            };
            let grade = match report.known(t, c) {
                Some(_) => grade_cell(report, t, c),
                None => mark(own.grade),
            };
            let side: Vec<String> = own
                .side
                .iter()
                .map(|f| {
                    format!(
                        "{} {}: {}",
                        mark(f.grade),
                        code_cell(f.clause.as_str()),
                        cell(&one_line_of(&f.observed, SIDE_MAX))
                    )
                })
                .collect();
            writeln!(
                out,
                "| {} |{target} {} | {grade} | {} | {} | {} |",
                code_cell(&c.id),
                cell(&c.title),
                own.clause.map_or_else(|| "—".to_string(), clause_cell),
                cell(&one_line(own.observed)),
                if side.is_empty() {
                    "—".to_owned()
                } else {
                    side.join("; ")
                }
            )?;
        }
    }
    Ok(())
}

/// The longest observation a side-observation cell quotes.
const SIDE_MAX: usize = 60;

/// A case's own result, over the clauses it declares, apart from its side observations
/// (findings other than passes under clauses it does not declare): a side INFO must not stand
/// in a row for the case's own check.
struct Own<'a> {
    grade: Grade,
    clause: Option<&'static str>,
    observed: &'a str,
    side: Vec<&'a Finding>,
}

impl<'a> Own<'a> {
    fn of(c: &'a CaseResult) -> Own<'a> {
        let declared = |f: &Finding| c.clauses.is_empty() || c.clauses.contains(&f.clause);
        let mut side: Vec<&Finding> = Vec::new();
        for f in c
            .findings
            .iter()
            .filter(|f| !declared(f) && f.grade != Grade::Pass)
        {
            if !side
                .iter()
                .any(|s| s.clause == f.clause && s.grade == f.grade)
            {
                side.push(f);
            }
        }
        let decided = Decided::of(c);
        if c.deciding().is_none_or(declared) {
            return Own {
                grade: c.grade,
                clause: decided.clause_or_first(c),
                observed: decided.observed,
                side,
            };
        }
        // A side finding decided the case's grade: the row says what its own clauses got.
        let own = c.findings.iter().filter(|f| declared(f));
        let grade = own.clone().map(|f| f.grade).max().unwrap_or(Grade::Pass);
        let first = own.clone().find(|f| f.grade == grade);
        Own {
            grade,
            clause: first
                .map(|f| f.clause.as_str())
                .or_else(|| c.clauses.first().map(|id| id.as_str())),
            observed: first.map_or("", |f| f.observed.as_str()),
            side,
        }
    }
}

fn coverage(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(out, "\n## Clause coverage")?;
    // Clause id → case ids naming it (in the case list or in a finding), deduplicated across
    // targets, in run order.
    let mut covered: BTreeMap<(usize, &str), Vec<&str>> = BTreeMap::new();
    for c in report.targets.iter().flat_map(|t| &t.cases) {
        let named = c
            .clauses
            .iter()
            .copied()
            .chain(c.findings.iter().map(|f| f.clause));
        for id in named {
            let cases = covered
                .entry((registry_position(id.as_str()), id.as_str()))
                .or_default();
            if !cases.contains(&c.id.as_str()) {
                cases.push(&c.id);
            }
        }
    }
    let named: HashSet<&str> = covered.keys().map(|(_, id)| *id).collect();
    let uncovered: Vec<_> = clauses::CLAUSES
        .iter()
        .filter(|c| !named.contains(c.id))
        .collect();
    writeln!(
        out,
        "\n{} clauses named by a case; {} of {} registry clauses are not covered.",
        covered.len(),
        uncovered.len(),
        clauses::CLAUSES.len()
    )?;

    if !covered.is_empty() {
        writeln!(
            out,
            "\n| Clause | Level | Section | Cases |\n|---|---|---|---|"
        )?;
        for ((_, id), cases) in &covered {
            let level = clauses::clause(id).map_or("not in registry", |c| c.level.as_str());
            let cases: Vec<String> = cases.iter().map(|c| code_cell(c)).collect();
            writeln!(
                out,
                "| {} | {level} | {} | {} |",
                code_cell(id),
                cell(clauses::section_of(id)),
                cases.join(", ")
            )?;
        }
    }

    if !uncovered.is_empty() {
        writeln!(
            out,
            "\n<details><summary>{} registry clauses no case covers</summary>\n",
            uncovered.len()
        )?;
        for c in uncovered {
            writeln!(
                out,
                "- {} ({}) — {}",
                code(c.id),
                c.level.as_str(),
                inline(clauses::section_of(c.id))
            )?;
        }
        writeln!(out, "\n</details>")?;
    }
    Ok(())
}

/// Registry order groups clauses by spec section; ids outside the registry sort last, by id.
fn registry_position(id: &str) -> usize {
    clauses::CLAUSES
        .iter()
        .position(|c| c.id == id)
        .unwrap_or(usize::MAX)
}

fn matrix(out: &mut String, report: &RunReport) -> fmt::Result {
    writeln!(out, "\n## Interop matrix\n")?;
    let names: Vec<String> = report.targets.iter().map(|t| cell(&t.name)).collect();
    writeln!(out, "| Case | {} |", names.join(" | "))?;
    writeln!(out, "|---|{}", "---|".repeat(names.len()))?;
    let mut ids: Vec<&str> = Vec::new();
    for c in report.targets.iter().flat_map(|t| &t.cases) {
        if !ids.contains(&c.id.as_str()) {
            ids.push(&c.id);
        }
    }
    for id in ids {
        let cells: Vec<String> = report
            .targets
            .iter()
            .map(|t| {
                t.cases
                    .iter()
                    .find(|c| c.id == id)
                    .map_or_else(|| "—".to_owned(), |c| grade_cell(report, t, c))
            })
            .collect();
        writeln!(out, "| {} | {} |", code_cell(id), cells.join(" | "))?;
    }
    Ok(())
}

/// A case's grade in a table: its marker, or `KNOWN FAIL` (`KNOWN WARN`) when a
/// `--known-failing` line acknowledged it.
fn grade_cell(report: &RunReport, t: &TargetResult, c: &CaseResult) -> String {
    match report.known(t, c) {
        Some(_) => format!("KNOWN {}", marker(c.grade)),
        None => mark(c.grade),
    }
}

fn dialect(d: Dialect) -> &'static str {
    match d {
        Dialect::Standard => "standard",
        Dialect::Draft => "draft (2016 GET_LBA_STATUS)",
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Text for one line of prose or a list item: newlines become `<br>`, and `<` can't open HTML
/// (only `<` before a letter, `/`, `!` or `?` can, so `<=` stays readable).
fn inline(s: &str) -> String {
    let s = s.replace("\r\n", "\n");
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' if chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || "/!?".contains(*n)) =>
            {
                out.push_str("&lt;")
            }
            '\n' => out.push_str("<br>"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a table cell: as [`inline`], and `|` can't end the cell.
fn cell(s: &str) -> String {
    inline(s).replace('|', "\\|")
}

/// An inline code span that holds `s` verbatim, whatever backticks it contains.
fn code(s: &str) -> String {
    let fence = "`".repeat(longest_run(s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A clause id in a table cell, linked to its spec section at the pinned revision when proto.md
/// has it.
fn clause_cell(id: &str) -> String {
    match clauses::clause(id).and_then(|c| spec::section_url(c.section)) {
        Some(url) => format!("[{}]({url})", code_cell(id)),
        None => code_cell(id),
    }
}

/// A code span in a table cell: GFM splits cells on `|` even inside code, and drops the
/// backslash of `\|` there.
fn code_cell(s: &str) -> String {
    code(&s.replace('\n', " ")).replace('|', "\\|")
}

/// The text up to its first newline, at most [`ONE_LINE_MAX`] characters.
fn one_line(s: &str) -> String {
    one_line_of(s, ONE_LINE_MAX)
}

/// The text up to its first newline, at most `max` characters.
fn one_line_of(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let more = first.len() < s.trim_end().len();
    let mut line: String = first.chars().take(max).collect();
    if more || line.len() < first.len() {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::super::tests::{case, sample, target};
    use super::*;
    use crate::clauses::id;

    fn pos(haystack: &str, needle: &str) -> usize {
        haystack
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in report:\n{haystack}"))
    }

    #[test]
    fn sections_come_in_design_order() {
        let md = sample().to_markdown();
        assert!(md.starts_with("# NBD block-status conformance report\n"));
        let order = [
            "| Target | Server | Verdict | Pass | Fail | Warn | Known | Info | Unsupported | Error |",
            "| alpha | reference@0.1.0 | ❌ **non-conformant** | 1 | ❌ **1** | ⚠️ **1** | 0 | 1 | 1 | ⛔ **1** |",
            "**Verdict: non-conformant** (1 fail, 1 warn, 0 known, 3 pass, 1 info, 1 unsupported, 1 error)",
            "Spec proto.md@89ba7b5 · nbd-conform ",
            "## Grades",
            "## Capabilities",
            "## Failures",
            "### FAIL `block-status/req-one` — `BS-REQ-ONE-2` (MUST)",
            "## Warnings",
            "### WARN `block-status/align` — `BS-REP-512-1` (SHOULD)",
            "## By section",
            "## Clause coverage",
            "## Interop matrix",
        ];
        let positions: Vec<usize> = order.iter().map(|n| pos(&md, n)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "out of order: {positions:?}"
        );
    }

    #[test]
    fn failure_entry_has_clause_expected_observed_and_other_findings() {
        let md = sample().to_markdown();
        let entry = &md[pos(&md, "### FAIL")..pos(&md, "## Warnings")];
        let paraphrase = id::BS_REQ_ONE_2.clause().unwrap().text;
        assert!(
            entry.contains(&format!("> {}", inline(paraphrase))),
            "{entry}"
        );
        assert!(
            entry.contains("- Expected: 1 descriptor, length <= 4096"),
            "{entry}"
        );
        assert!(
            entry.contains("- Observed: 2 descriptors | lengths 4096+512 <&\"'>"),
            "{entry}"
        );
        assert!(entry.contains(
            "- WARN `BS-REP-512-1` (SHOULD): expected multiples of 512; observed length 100"
        ));
        assert!(entry.contains("<details><summary>transcript (3 lines)</summary>"));
    }

    #[test]
    fn transcript_fence_outlasts_any_backticks_in_it() {
        let md = sample().to_markdown();
        // The longest run in the sample is four backticks, so the fence has five.
        let open = pos(&md, "\n`````\n1 TX REQUEST");
        let body = &md[open + 7..];
        let close = pos(body, "\n`````\n");
        let inside = &body[..close];
        assert_eq!(inside.lines().count(), 3, "{inside}");
        assert!(inside.contains("3 ```"));
        assert!(!inside.lines().any(|l| l.starts_with("```")));
        assert_eq!(fence_len(&["plain".to_string()]), 3);
        assert_eq!(fence_len(&["a ``` b".to_string()]), 4);
    }

    #[test]
    fn table_cells_escape_pipes_and_newlines() {
        let md = sample().to_markdown();
        assert!(
            md.contains("| REQ_ONE \\| one descriptor | ❌ **FAIL** |"),
            "{md}"
        );
        assert!(md.contains("2 descriptors \\| lengths"));
        // A multi-line observation stays on one table row.
        assert!(
            md.contains(&format!(
                "| ⚠️ **WARN** | {} | line one… |",
                clause_cell("BS-REP-512-1")
            )),
            "{md}"
        );
        assert_eq!(cell("a|b\nc\r\nd"), "a\\|b<br>c<br>d");
        assert_eq!(
            inline("<none> </x> <!-- <= <1"),
            "&lt;none> &lt;/x> &lt;!-- <= <1"
        );
        assert_eq!(code_cell("x|y"), "`x\\|y`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
    }

    #[test]
    fn by_section_groups_by_first_clause() {
        let md = sample().to_markdown();
        let section = &md[pos(&md, "## By section")..pos(&md, "## Clause coverage")];
        let block = pos(section, "### block status");
        let negotiation = pos(section, "### negotiation");
        assert!(block < negotiation);
        assert!(section[negotiation..].contains("`negotiation/extended` | alpha |"));
        assert!(
            section[negotiation..].contains(
                "| UNSUPPORTED | `EH-GO-1` | server did not negotiate extended headers |"
            ),
            "an [EXT] section has no link"
        );
        assert!(section[negotiation..].contains(
            "| ⛔ **ERROR** | [`HS-GREET-1`](https://github.com/NetworkBlockDevice/nbd/blob/89ba7b5379548d6ebbfa36db15f2b8e3787a09ea/doc/proto.md#newstyle-negotiation) | connect refused <127.0.0.1:10809> & gave up |"
        ));
    }

    #[test]
    fn a_side_info_does_not_hide_the_cases_own_result() {
        use crate::engine::outcome::Finding;
        let mut c = case("bs/flags", Grade::Info, &[id::BS_REQ_FLAGS_1]);
        c.findings = vec![
            Finding::info(
                id::BS_REP_SUM_2,
                "lengths sum to the request",
                "one extent past it",
            ),
            Finding {
                clause: id::BS_REQ_FLAGS_1,
                grade: Grade::Pass,
                expected: "flags ignored".into(),
                observed: "a reply as without them".into(),
            },
        ];
        let r = RunReport {
            targets: vec![target("a", vec![c])],
            ..RunReport::default()
        };
        let md = r.to_markdown();
        assert!(
            md.contains(&format!(
                "| `bs/flags` | title of bs/flags | PASS | {} | a reply as without them \
                     | INFO `BS-REP-SUM-2`: one extent past it |",
                clause_cell("BS-REQ-FLAGS-1")
            )),
            "{md}"
        );
    }

    #[test]
    fn not_tested_groups_cases_by_why() {
        let why = |id: &str, grade: Grade, note: &str| {
            let mut c = case(id, grade, &[]);
            c.note = Some(note.into());
            c
        };
        let r = RunReport {
            targets: vec![target(
                "nbd-server",
                vec![
                    why("a", Grade::Unsupported, "no structured replies"),
                    case("b", Grade::Pass, &[]),
                    why("c", Grade::Error, "refused"),
                    why("d", Grade::Unsupported, "no structured replies"),
                ],
            )],
            ..RunReport::default()
        };
        let md = r.to_markdown();
        let section = &md[pos(&md, "## Not tested, and why")..pos(&md, "## By section")];
        assert!(
            section.contains("### nbd-server (3 not tested)"),
            "{section}"
        );
        let two = pos(
            section,
            "- **2** × UNSUPPORTED: no structured replies<br>`a`, `d`",
        );
        let one = pos(section, "- **1** × ⛔ **ERROR**: refused<br>`c`");
        assert!(two < one, "{section}");
        assert!(!sample_without_untested().contains("## Not tested"));
    }

    fn sample_without_untested() -> String {
        let r = RunReport {
            targets: vec![target("a", vec![case("x", Grade::Pass, &[])])],
            ..RunReport::default()
        };
        r.to_markdown()
    }

    #[test]
    fn coverage_lists_cases_per_clause_and_the_uncovered_rest() {
        let md = sample().to_markdown();
        let cov = &md[pos(&md, "## Clause coverage")..pos(&md, "## Interop matrix")];
        assert!(cov.contains("| `BS-REP-512-1` | SHOULD | block status | `block-status/req-one`, `block-status/align` |"), "{cov}");
        let uncovered = clauses::CLAUSES.len() - 7;
        assert!(cov.contains(&format!(
            "<details><summary>{uncovered} registry clauses no case covers</summary>"
        )));
    }

    #[test]
    fn matrix_only_with_several_targets() {
        let md = sample().to_markdown();
        let matrix = &md[pos(&md, "## Interop matrix")..];
        assert!(matrix.contains("| Case | alpha | beta |"));
        assert!(matrix.contains("| `block-status/basic` | PASS | PASS |"));
        assert!(matrix.contains("| `block-status/align` | ⚠️ **WARN** | PASS |"));
        assert!(matrix.contains("| `block-status/req-one` | ❌ **FAIL** | — |"));

        let mut one = sample();
        one.targets.truncate(1);
        let md = one.to_markdown();
        assert!(!md.contains("## Interop matrix"));
        assert!(md.contains("| Case | Title | Grade | Clause | Observed |"));
    }

    #[test]
    fn verdict_lines() {
        let pass = RunReport {
            targets: vec![target("a", vec![case("x", Grade::Pass, &[])])],
            ..RunReport::default()
        };
        assert!(pass
            .to_markdown()
            .contains("**Verdict: conformant** (0 fail, 0 warn, 0 known, 1 pass"));
        let down = RunReport {
            targets: vec![target("a", vec![case("x", Grade::Error, &[])])],
            strict: true,
            ..RunReport::default()
        };
        let md = down.to_markdown();
        assert!(md.contains("**Verdict: could not test** under `--strict` (0 fail"));
        assert!(md.contains("## Failures\n\nNone.\n"));
        assert!(md.contains("### general"));
        let cut = RunReport {
            targets: vec![target("a", vec![case("x", Grade::Pass, &[])])],
            interrupted: Some("SIGINT".into()),
            ..RunReport::default()
        };
        let md = cut.to_markdown();
        assert!(md.contains("**Verdict: interrupted** by SIGINT"), "{md}");
        assert!(md.contains("the cases that finished"), "{md}");
    }

    #[test]
    fn known_failures_and_stale_lines_have_their_sections() {
        let md = super::super::tests::sample_with_known().to_markdown();
        let failures = &md[pos(&md, "## Failures")..pos(&md, "## Warnings")];
        assert!(failures.contains("None."), "{failures}");
        let known = &md[pos(&md, "## Known failures")..pos(&md, "## Stale known-failing lines")];
        assert!(known.contains(
            "| `block-status/req-one` | reference@0.1.0 | ❌ **FAIL** | BS-REQ-ONE-2: two descriptors under REQ_ONE | `known-failing/x.txt:2` |"
        ), "{known}");
        assert!(md.contains(
            "| `known-failing/x.txt:3` | `block-status/basic@qemu-nbd=10.*` | fixed in 10.1 \\| gone | block-status/basic on beta |"
        ), "{md}");
        assert!(
            md.contains("| `block-status/req-one` | KNOWN FAIL | — |"),
            "{md}"
        );
        assert!(md.contains("**Verdict: non-conformant** (0 fail, 1 warn, 1 known, 3 pass"));
        assert!(md.contains("1 stale known-failing line(s) fail the run"));
        insta::assert_snapshot!("sample-run-known-failing", md);
    }

    /// The whole Markdown of the sample run (two targets, every grade, markup in messages),
    /// as a reviewer sees it: a change to the renderer shows as a snapshot diff.
    #[test]
    fn renders_the_sample_run() {
        insta::assert_snapshot!("sample-run", sample().to_markdown());
    }
}
