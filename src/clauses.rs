//! The clause registry: every rule a server can be observed breaking, in one place.
//!
//! Each [`Clause`] has a stable id (as used in violations reported by [`crate::wire`],
//! [`crate::client`] and the checks), a [`Level`] that decides how a broken clause is graded, the
//! spec section heading it comes from, and our own paraphrase of the rule.
//!
//! Sources: `clauses.md` section 2 (rows whose "Who" column includes the server, plus the few
//! data/client rows the codec reports), `draft-get-lba-status.md` (the `DRAFT-*` rules) and a
//! handful of suite-defined clauses. The table itself lives in `clauses/catalogue.rs`, generated
//! by `scripts/gen-clauses.py`; edit the script (or the notes), not the generated file.

use std::collections::HashMap;
use std::sync::OnceLock;

mod catalogue;

pub use catalogue::{id, CLAUSES};

/// How strongly a clause binds the server, hence how a broken clause is graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// RFC 2119 MUST / MUST NOT: a broken clause is a failure.
    Must,
    /// SHOULD / SHOULD NOT: a warning.
    Should,
    /// MAY: informational (a server using the freedom is never at fault).
    May,
    /// Inferred from other clauses (not literal spec text): a warning.
    Derived,
    /// A definition or wire format without a keyword: binding by construction, so a broken
    /// one fails (`Grade::for_broken`).
    Def,
}

impl Level {
    /// The upper-case name, as used in reports ("MUST", "SHOULD", "MAY", "DERIVED", "DEF").
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
            Level::Derived => "DERIVED",
            Level::Def => "DEF",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of the catalogue.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Clause {
    /// Stable id, e.g. `BS-REP-LEN-1`.
    pub id: &'static str,
    /// How a broken clause is graded.
    pub level: Level,
    /// The spec section heading (proto.md, the EXT branch, qemu's nbd.rst or the draft notes).
    pub section: &'static str,
    /// Our own paraphrase of the rule.
    pub text: &'static str,
    /// Why no exchange the suite can make shows this clause broken, when that is so (TLS,
    /// a server being shut down, a full disk); the coverage totals leave such clauses out.
    #[serde(skip)]
    pub unobservable: Option<&'static str>,
    /// The clause that reports every observation of this one, and why, when one does (the
    /// spec says some rules twice): one observation is one finding, under that id.
    #[serde(skip)]
    pub reported_as: Option<(&'static str, &'static str)>,
}

/// Looks a clause up by id.
pub fn clause(id: &str) -> Option<&'static Clause> {
    static INDEX: OnceLock<HashMap<&'static str, &'static Clause>> = OnceLock::new();
    INDEX
        .get_or_init(|| CLAUSES.iter().map(|c| (c.id, c)).collect())
        .get(id)
        .copied()
}

/// A clause id known to the registry. Code names one through the generated constants of
/// [`id`] (a misspelt id does not compile); a case file's ids are resolved when it loads
/// (`TryFrom<String>`: an unknown id fails loading). So every `ClauseId` is in [`CLAUSES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClauseId(&'static str);

impl ClauseId {
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Its entry in the registry.
    pub fn clause(self) -> Option<&'static Clause> {
        clause(self.0)
    }
}

impl std::fmt::Display for ClauseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<&str> for ClauseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<str> for ClauseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl serde::Serialize for ClauseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ClauseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClauseId, D::Error> {
        let id = String::deserialize(d)?;
        ClauseId::try_from(id).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for ClauseId {
    type Error = String;

    fn try_from(id: String) -> Result<ClauseId, String> {
        ClauseId::try_from(id.as_str())
    }
}

impl TryFrom<&str> for ClauseId {
    type Error = String;

    fn try_from(id: &str) -> Result<ClauseId, String> {
        clause(id)
            .map(|c| ClauseId(c.id))
            .ok_or_else(|| format!("unknown clause {id:?}"))
    }
}

/// The report group of an id: its prefix (before the first `-`) mapped to a human name.
/// Works for any id string, whether or not it is in [`CLAUSES`].
pub fn section_of(id: &str) -> &'static str {
    let prefix = id.split('-').next().unwrap_or("");
    match prefix {
        "BS" => "block status",
        "SMC" | "LMC" | "MC" | "BASE" | "QEMU" => "metadata contexts",
        "HS" | "GO" | "ABORT" | "EXPNAME" | "SR" | "EH" => "negotiation",
        "TX" | "CHUNK" | "ERRCHUNK" | "ERRNO" => "transmission",
        "ALLOC" => "base:allocation",
        "DRAFT" => "2016 draft",
        "SIZE" => "size constraints",
        _ => "general",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    use std::path::{Path, PathBuf};

    /// `^[A-Z0-9]+(-[A-Z0-9]+)*-[0-9]+$`
    fn is_catalogue_id(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() >= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            })
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
    }

    /// The content of a string literal like `"BS-REP-LEN-1"`:
    /// `[A-Z][A-Z0-9]*(-[A-Z0-9]+)*-[0-9]+`.
    fn is_id_literal(s: &str) -> bool {
        s.as_bytes().first().is_some_and(u8::is_ascii_uppercase) && is_catalogue_id(s)
    }

    fn rust_files(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if skip.contains(&path) {
                continue;
            }
            if path.is_dir() {
                rust_files(&path, skip, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `"ID"` string literal in `src/` outside the registry itself, with the files using it.
    /// Each `"` is tried as an opening quote, so char literals or escapes can't desynchronise the
    /// scan; a false hit would need an id-shaped run between two unrelated quotes.
    fn ids_used_in_src() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let skip = [src.join("clauses"), src.join("clauses.rs")];
        let mut files = Vec::new();
        rust_files(&src, &skip, &mut files);
        assert!(
            !files.is_empty(),
            "no sources found under {}",
            src.display()
        );
        let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            for (i, _) in text.match_indices('"') {
                let rest = &text[i + 1..];
                let Some(end) = rest.find('"') else { break };
                let candidate = &rest[..end];
                if is_id_literal(candidate) {
                    let rel = file.strip_prefix(&src).unwrap_or(&file);
                    used.entry(candidate.to_owned())
                        .or_default()
                        .insert(rel.display().to_string());
                }
            }
        }
        used
    }

    /// One place builds findings: `src/checks`. Elsewhere (test code aside) nothing constructs
    /// a `Finding` (`wire` and `client` report what they cannot decode as `Violation`s, which
    /// `checks::from_violation` turns into findings), and the engine names no clause id: what
    /// a step's outcome means is the checks' to say.
    #[test]
    fn findings_are_built_only_in_checks() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let skip = [
            src.join("checks"),
            src.join("clauses"),
            src.join("clauses.rs"),
        ];
        let mut files = Vec::new();
        rust_files(&src, &skip, &mut files);
        let mut offences = Vec::new();
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap_or(&file)
                .display()
                .to_string();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "tests.rs" || name.ends_with("_tests.rs") || rel.contains("/tests/") {
                continue;
            }
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let code = crate::coverage::code_of(&text);
            if rel != "engine/outcome.rs" {
                for pattern in [
                    "Finding::broken(",
                    "Finding::info(",
                    "Finding {",
                    "Finding{",
                ] {
                    if code.contains(pattern) {
                        offences.push(format!("{rel} builds a finding ({pattern})"));
                    }
                }
            }
            if rel.starts_with("engine/") {
                if code.contains("Violation::new(") || code.contains("clauses::id") {
                    offences.push(format!("{rel} builds a violation or imports clause ids"));
                }
                for (i, _) in code.match_indices("id::") {
                    if code[i + 4..].starts_with(|c: char| c.is_ascii_uppercase()) {
                        let name: String = code[i..].chars().take_while(|c| *c != ',').collect();
                        offences.push(format!("{rel} names clause {name}"));
                    }
                }
                for (i, _) in code.match_indices('"') {
                    let rest = &code[i + 1..];
                    let Some(end) = rest.find('"') else { break };
                    if is_id_literal(&rest[..end]) {
                        offences.push(format!("{rel} names clause {}", &rest[..end]));
                    }
                }
            }
        }
        assert!(offences.is_empty(), "{offences:#?}");
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for c in CLAUSES {
            assert!(is_catalogue_id(c.id), "malformed id {:?}", c.id);
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            assert!(!c.section.is_empty(), "{}: empty section", c.id);
            assert!(!c.text.is_empty(), "{}: empty text", c.id);
            assert!(
                std::ptr::eq(clause(c.id).expect("lookup"), c),
                "{}: lookup returns another entry",
                c.id
            );
        }
        assert!(clause("BS-NO-SUCH-1").is_none());
        assert!(is_catalogue_id("BS-REP-LEN-1") && is_catalogue_id("BASELINE-1"));
        assert!(!is_catalogue_id("BS-REP-LEN") && !is_catalogue_id("BS--1"));
        assert!(!is_catalogue_id("bs-rep-1") && !is_catalogue_id("1"));
    }

    #[test]
    fn every_id_used_in_src_is_catalogued() {
        let used = ids_used_in_src();
        println!("{} distinct clause ids used in src/", used.len());
        let missing: Vec<String> = used
            .iter()
            .filter(|(id, _)| clause(id).is_none())
            .map(|(id, files)| {
                format!(
                    "{id} (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        assert!(
            missing.is_empty(),
            "ids used in src/ but not in the catalogue: {missing:?}"
        );
        // Ids the codec and server are known to report (some may not be wired up yet).
        for id in [
            "BS-REP-LEN-1",
            "EH-REP-1",
            "TX-SIMPLE-1",
            "HS-OPTREP-1",
            "SR-GATE-1",
            "EH-WIRE-1",
            "CHUNK-INCONS-1",
            "EH-REP-3",
            "DRAFT-BOUND-1",
            "DRAFT-REP-1",
            "DRAFT-ERR-1",
            "DRAFT-DESC-LEN-1",
            "GEN-STR-1",
            "GEN-STR-2",
            "MC-NAME-1",
            "GO-EXPORT-1",
            "GO-BLKSZ-1",
            "GO-ACK-1",
            "HS-GREET-1",
            "HS-HFLAGS-1",
            "HS-FIXED-1",
            "TX-HASFLAGS-1",
            "EXPNAME-REPLY-1",
            "SMC-REPLY-1",
            "TX-COOKIE-1",
            "CHUNK-DONE-1",
            "CHUNK-NONE-1",
            "BS-REP-NZ-1",
            "BS-EXT-NZ-1",
            "BS-EXT-LEN-1",
            "BS-EXT-COUNT-1",
            "BS-REP-CAP-1",
            "ERRCHUNK-ERR-1",
            "ERRCHUNK-OFF-1",
            "ERRCHUNK-NONZERO-1",
            "EH-REP-2",
            // suite-defined
            "BS-STABLE-1",
            "BS-COMPLETE-1",
            "ALLOC-TRUTH-1",
            "QEMU-DB-COVER-1",
            "DRAFT-DIRTY-COVER-1",
            "QEMU-DB-PREC-1",
            "DRAFT-DIRTY-DEALLOC-1",
        ] {
            assert!(clause(id).is_some(), "{id} missing from the catalogue");
        }
    }

    #[test]
    fn count_and_levels() {
        let mut per_level: BTreeMap<Level, usize> = BTreeMap::new();
        for c in CLAUSES {
            *per_level.entry(c.level).or_default() += 1;
        }
        let summary: Vec<String> = per_level.iter().map(|(l, n)| format!("{l} {n}")).collect();
        println!("{} clauses: {}", CLAUSES.len(), summary.join(", "));
        assert!(
            (200..=300).contains(&CLAUSES.len()),
            "implausible clause count {}",
            CLAUSES.len()
        );
        assert!(
            per_level.values().all(|&n| n > 0),
            "a level is unused: {per_level:?}"
        );

        let level = |id: &str| clause(id).unwrap_or_else(|| panic!("{id} missing")).level;
        assert_eq!(level("BS-REP-PERCTX-1"), Level::Must);
        assert_eq!(level("BS-REP-512-1"), Level::Should);
        assert_eq!(level("BS-REP-SUM-2"), Level::May);
        // The brief also named "BS-REP-OOB-2", which no source defines; BS-REP-EOF-1 is the
        // reply-side out-of-bounds clause (the last extent running past the export end).
        assert!(clause("BS-REP-OOB-2").is_none());
        assert_eq!(level("BS-REP-EOF-1"), Level::Derived);
        assert_eq!(level("BS-REQ-OOB-2"), Level::Derived);
        assert_eq!(level("DRAFT-DESC-COVER-1"), Level::Should);
        assert_eq!(level("DRAFT-UNK-1"), Level::Must);
        assert_eq!(level("TX-COOKIE-1"), Level::Must);
        // A few more: mixed cells, DEF, DERIVED (MUST), the draft's open points, suite-defined.
        assert_eq!(level("BS-REQ-OOB-1"), Level::Should);
        assert_eq!(level("BS-REQ-FUA-1"), Level::Must);
        assert_eq!(level("BS-REP-IDVALID-1"), Level::Derived);
        assert_eq!(level("HS-GREET-1"), Level::Def);
        // "(unspecified)" in the catalogue: recorded, never a failure (the level audit).
        assert_eq!(level("LMC-EXPORT-1"), Level::May);
        // The server MUST answer ABORT with ACK; the legacy SHOULD is about coping.
        assert_eq!(level("ABORT-ACK-1"), Level::Must);
        assert_eq!(level("SMC-REPLACE-1"), Level::Derived);
        assert_eq!(level("DRAFT-FLAG-1"), Level::Should);
        assert_eq!(level("DRAFT-DESC-LEN-1"), Level::Must);
        assert_eq!(level("DRAFT-DESC-ORDER-1"), Level::Must);
        assert_eq!(level("DRAFT-DESC-NZ-1"), Level::Derived);
        assert_eq!(level("BS-STABLE-1"), Level::Derived);
        assert_eq!(level("BS-COMPLETE-1"), Level::Must);

        // Catalogue order: the suite-defined group closes the table.
        let tail: Vec<&str> = CLAUSES[CLAUSES.len() - 7..].iter().map(|c| c.id).collect();
        assert_eq!(
            tail,
            [
                "BS-STABLE-1",
                "BS-COMPLETE-1",
                "ALLOC-TRUTH-1",
                "QEMU-DB-COVER-1",
                "DRAFT-DIRTY-COVER-1",
                "QEMU-DB-PREC-1",
                "DRAFT-DIRTY-DEALLOC-1",
            ]
        );
        assert_eq!(level("QEMU-DB-PREC-1"), Level::May);
        assert_eq!(level("DRAFT-DIRTY-DEALLOC-1"), Level::Must);
    }

    #[test]
    fn level_names_and_serde() {
        for (l, s) in [
            (Level::Must, "MUST"),
            (Level::Should, "SHOULD"),
            (Level::May, "MAY"),
            (Level::Derived, "DERIVED"),
            (Level::Def, "DEF"),
        ] {
            assert_eq!(l.as_str(), s);
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{s}\""));
        }
        let json = serde_json::to_value(clause("TX-COOKIE-1").unwrap()).unwrap();
        assert_eq!(json["id"], "TX-COOKIE-1");
        assert_eq!(json["level"], "MUST");
    }

    #[test]
    fn sections() {
        assert_eq!(section_of("BS-REP-LEN-1"), "block status");
        assert_eq!(section_of("BS-STABLE-1"), "block status");
        for id in [
            "SMC-REPLY-1",
            "LMC-ID-1",
            "MC-NAME-1",
            "BASE-SETWILD-1",
            "QEMU-DB-1",
        ] {
            assert_eq!(section_of(id), "metadata contexts", "{id}");
        }
        for id in [
            "HS-GREET-1",
            "GO-ACK-1",
            "ABORT-ACK-1",
            "EXPNAME-REPLY-1",
            "SR-GATE-1",
            "EH-REP-1",
        ] {
            assert_eq!(section_of(id), "negotiation", "{id}");
        }
        for id in [
            "TX-COOKIE-1",
            "CHUNK-DONE-1",
            "ERRCHUNK-ERR-1",
            "ERRNO-SET-1",
        ] {
            assert_eq!(section_of(id), "transmission", "{id}");
        }
        assert_eq!(section_of("ALLOC-TRUTH-1"), "base:allocation");
        assert_eq!(section_of("DRAFT-ERR-1"), "2016 draft");
        assert_eq!(section_of("SIZE-MIN-1"), "size constraints");
        assert_eq!(section_of("GEN-STR-1"), "general");
        assert_eq!(section_of("TLS-RESET-1"), "general");
        assert_eq!(section_of(""), "general");
        // The prefix must match exactly, not as a prefix of a longer one.
        assert_eq!(section_of("BSX-1"), "general");
    }
}
