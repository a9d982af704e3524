//! Reading the suite's own source for the clauses its code can raise, and for which steps reach
//! which checks. The source is compiled in (`include_str!`), so an installed binary measures
//! the code it was built from; a unit test makes sure no file that raises clauses is missing
//! from [`SOURCES`].

use std::collections::{BTreeMap, BTreeSet};

use crate::clauses::{ClauseId, CLAUSES};

/// What the scan looks at: the checks, the steps that call them, and the decoders whose
/// violations become findings (`checks::from_violation`), each under its module path.
pub(super) const SOURCES: &[(&str, &str)] = &[
    (
        "checks::block_status",
        include_str!("../checks/block_status.rs"),
    ),
    ("checks::disc", include_str!("../checks/disc.rs")),
    ("checks::draft", include_str!("../checks/draft.rs")),
    (
        "checks::export_name",
        include_str!("../checks/export_name.rs"),
    ),
    ("checks::mod", include_str!("../checks/mod.rs")),
    (
        "checks::max_payload",
        include_str!("../checks/max_payload.rs"),
    ),
    ("checks::options", include_str!("../checks/options.rs")),
    ("checks::payload", include_str!("../checks/payload.rs")),
    ("checks::read_back", include_str!("../checks/read_back.rs")),
    ("checks::request", include_str!("../checks/request.rs")),
    ("checks::session", include_str!("../checks/session.rs")),
    ("checks::stability", include_str!("../checks/stability.rs")),
    ("checks::truth", include_str!("../checks/truth.rs")),
    ("checks::walk", include_str!("../checks/walk.rs")),
    ("checks::writes", include_str!("../checks/writes.rs")),
    ("steps::connect", include_str!("../engine/steps/connect.rs")),
    ("steps::disc", include_str!("../engine/steps/disc.rs")),
    (
        "steps::export_name",
        include_str!("../engine/steps/export_name.rs"),
    ),
    ("steps::go", include_str!("../engine/steps/go.rs")),
    ("steps::map", include_str!("../engine/steps/map.rs")),
    ("steps::mod", include_str!("../engine/steps/mod.rs")),
    (
        "steps::negotiate",
        include_str!("../engine/steps/negotiate.rs"),
    ),
    ("steps::option", include_str!("../engine/steps/option.rs")),
    (
        "steps::pipeline",
        include_str!("../engine/steps/pipeline.rs"),
    ),
    (
        "steps::read_back",
        include_str!("../engine/steps/read_back.rs"),
    ),
    ("steps::request", include_str!("../engine/steps/request.rs")),
    (
        "steps::stability",
        include_str!("../engine/steps/stability.rs"),
    ),
    (
        "steps::status_payload",
        include_str!("../engine/steps/status_payload.rs"),
    ),
    ("steps::verify", include_str!("../engine/steps/verify.rs")),
    ("steps::write", include_str!("../engine/steps/write.rs")),
    ("wire::draft", include_str!("../wire/draft.rs")),
    ("wire::handshake", include_str!("../wire/handshake.rs")),
    ("wire::mod", include_str!("../wire/mod.rs")),
    ("wire::reply", include_str!("../wire/reply.rs")),
    ("client::budget", include_str!("../client/budget.rs")),
    ("client::mod", include_str!("../client/mod.rs")),
    ("client::negotiate", include_str!("../client/negotiate.rs")),
];

/// A source file's code: up to its unit-test module (which sits at the end of a file), without
/// comment lines (examples in docs are no code).
pub fn code_of(text: &str) -> String {
    let end = text
        .match_indices("#[cfg(test)]\n")
        .map(|(at, m)| at + m.len())
        .find(|&at| {
            text[at..].starts_with("mod tests") || text[at..].starts_with("pub(crate) mod tests")
        })
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifier characters following each occurrence of `prefix` in `code`.
fn words_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    code.match_indices(prefix).map(move |(at, _)| {
        let rest = &code[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// The clause ids `code` names through the generated constants (`id::BS_REP_LEN_1`).
pub fn clause_refs(code: &str) -> BTreeSet<ClauseId> {
    let by_const: BTreeMap<String, &'static str> = CLAUSES
        .iter()
        .map(|c| (c.id.replace('-', "_"), c.id))
        .collect();
    words_after(code, "id::")
        .filter_map(|name| by_const.get(name))
        .filter_map(|id| ClauseId::try_from(id.to_string()).ok())
        .collect()
}

/// The modules of `code`'s source, keyed by path, with their code.
fn modules() -> BTreeMap<&'static str, String> {
    SOURCES
        .iter()
        .map(|(path, text)| (*path, code_of(text)))
        .collect()
}

/// Which modules each module reaches directly: a check calls its siblings as `super::NAME::`,
/// a step calls checks as `checks::NAME::` and other steps' methods as `self.METHOD(`, defined
/// as `fn METHOD(` in the step that owns them.
fn edges(
    modules: &BTreeMap<&'static str, String>,
) -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut methods: BTreeMap<&str, &'static str> = BTreeMap::new();
    for (path, code) in modules.iter().filter(|(p, _)| p.starts_with("steps::")) {
        for name in words_after(code, "fn ") {
            methods.entry(name).or_insert(path);
        }
    }
    let known = |path: String| modules.get_key_value(path.as_str()).map(|(k, _)| *k);
    let mut out = BTreeMap::new();
    for (path, code) in modules {
        let mut to = BTreeSet::new();
        if path.starts_with("checks::") {
            to.extend(words_after(code, "super::").filter_map(|m| known(format!("checks::{m}"))));
        }
        if path.starts_with("steps::") {
            // The dispatch lines of `steps::mod` are where each kind of step starts, not calls
            // that every step makes.
            let code: String = code
                .lines()
                .filter(|l| !(l.contains("Step::") && l.contains("=> self.")))
                .collect::<Vec<_>>()
                .join("\n");
            to.extend(words_after(&code, "checks::").filter_map(|m| known(format!("checks::{m}"))));
            to.extend(words_after(&code, "self.").filter_map(|m| methods.get(m).copied()));
        }
        to.remove(path);
        out.insert(*path, to);
    }
    out
}

/// What the scan found: the clauses each module names, and what each kind of step reaches.
pub struct Scan {
    /// Module path → the clause ids its code names.
    pub raises: BTreeMap<&'static str, BTreeSet<ClauseId>>,
    /// Kind of step (`BlockStatus`, `Map`, …) → every module it reaches, its own included.
    reach: BTreeMap<String, BTreeSet<&'static str>>,
}

impl Scan {
    pub fn new() -> Scan {
        let modules = modules();
        let edges = edges(&modules);
        let raises = modules
            .iter()
            .map(|(path, code)| (*path, clause_refs(code)))
            .collect();
        // Each kind of step is the method `steps::mod` dispatches it to, on one line:
        // `Step::Map(m) => self.map(m).await`.
        let mut reach = BTreeMap::new();
        for line in modules["steps::mod"].lines() {
            let Some(kind) = words_after(line, "Step::").next() else {
                continue;
            };
            let Some(method) = words_after(line, "=> self.").next() else {
                continue;
            };
            let owner = modules
                .iter()
                .find(|(p, code)| {
                    p.starts_with("steps::") && code.contains(&format!("fn {method}("))
                })
                .map(|(p, _)| *p);
            if let Some(owner) = owner {
                reach.insert(kind.to_string(), closure(&edges, owner));
            }
        }
        Scan { raises, reach }
    }

    /// The modules a kind of step (`BlockStatus`, `Map`: a variant of
    /// [`crate::engine::case::Step`]) reaches, or none for a kind `steps::mod` does not
    /// dispatch.
    pub fn reached_by(&self, kind: &str) -> Option<&BTreeSet<&'static str>> {
        self.reach.get(kind)
    }

    /// Every clause some module's code names, with the modules that name it.
    pub fn raisers(&self) -> BTreeMap<ClauseId, Vec<&'static str>> {
        let mut out: BTreeMap<ClauseId, Vec<&'static str>> = BTreeMap::new();
        for (module, ids) in &self.raises {
            for id in ids {
                out.entry(*id).or_default().push(module);
            }
        }
        out
    }
}

impl Default for Scan {
    fn default() -> Scan {
        Scan::new()
    }
}

/// `from` and every module reachable from it.
fn closure(
    edges: &BTreeMap<&'static str, BTreeSet<&'static str>>,
    from: &'static str,
) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::from([from, "steps::mod"]);
    let mut todo = vec![from, "steps::mod"];
    while let Some(at) = todo.pop() {
        for next in edges.get(at).into_iter().flatten() {
            if seen.insert(next) {
                todo.push(next);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every file of the scanned folders is scanned: a new check or step that names clauses
    /// would otherwise go uncounted.
    #[test]
    fn every_file_that_raises_clauses_is_scanned() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        for (dir, prefix) in [
            ("checks", "checks"),
            ("engine/steps", "steps"),
            ("wire", "wire"),
            ("client", "client"),
        ] {
            for entry in std::fs::read_dir(src.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                // A module's own folder holds its unit tests (`writes/tests.rs`).
                if path.is_dir() {
                    continue;
                }
                let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).unwrap();
                let relevant =
                    dir != "wire" && dir != "client" || !clause_refs(&code_of(&text)).is_empty();
                let module = format!("{prefix}::{stem}");
                if relevant && !SOURCES.iter().any(|(p, _)| *p == module) {
                    missing.push(module);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "add to coverage::scan::SOURCES: {missing:?}"
        );
    }

    #[test]
    fn a_step_reaches_the_checks_it_calls_and_those_they_call() {
        let scan = Scan::new();
        let reach = scan.reached_by("BlockStatus").expect("a dispatched step");
        assert!(reach.contains("steps::request"), "{reach:?}");
        assert!(reach.contains("checks::request"), "{reach:?}");
        // checks::request hands a reply's structure to checks::block_status.
        assert!(reach.contains("checks::block_status"), "{reach:?}");
        assert!(!reach.contains("checks::truth"), "{reach:?}");
        let map = scan.reached_by("Map").expect("a dispatched step");
        assert!(map.contains("checks::truth") && map.contains("checks::read_back"));
        assert!(scan.reached_by("NoSuchStep").is_none());
    }

    #[test]
    fn clause_refs_reads_the_generated_constants_only() {
        let code = "Finding::broken(id::BS_REP_LEN_1, ..); id::NOT_A_CLAUSE; x.id::BS_REQ_ONE_2";
        let ids: Vec<_> = clause_refs(code).into_iter().map(|c| c.as_str()).collect();
        assert_eq!(ids, ["BS-REP-LEN-1", "BS-REQ-ONE-2"]);
    }
}
