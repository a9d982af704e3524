//! Embeds the shipped cases (`cases/**/*.toml`) and fixture layouts (`fixtures/*.toml`) in the
//! crate, so that an installed binary or a crate that depends on this one runs the suite from
//! any directory (`src/embedded.rs` reads what this writes).
//!
//! Writes `$OUT_DIR/shipped.rs`: two sorted tables of (path under its directory, the file's
//! text through `include_str!`), so that cargo rebuilds when a file's text changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    // A directory here makes cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed=cases");
    println!("cargo:rerun-if-changed=fixtures");
    let mut cases = Vec::new();
    toml_files(&root.join("cases"), true, &mut cases);
    let mut fixtures = Vec::new();
    toml_files(&root.join("fixtures"), false, &mut fixtures);
    let mut out = String::new();
    table(&mut out, "CASES", &root.join("cases"), &cases);
    table(&mut out, "FIXTURES", &root.join("fixtures"), &fixtures);
    let dest = Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets it")).join("shipped.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}

fn toml_files(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            if recurse {
                toml_files(&path, recurse, out);
            }
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

fn table(out: &mut String, name: &str, dir: &Path, files: &[PathBuf]) {
    let mut rows: Vec<(String, &PathBuf)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).expect("found under dir");
            let rel = rel
                .to_str()
                .unwrap_or_else(|| panic!("{}: not UTF-8", p.display()));
            (rel.to_owned(), p)
        })
        .collect();
    rows.sort();
    let _ = writeln!(out, "pub(crate) static {name}: &[(&str, &str)] = &[");
    for (rel, path) in rows {
        let path = path
            .to_str()
            .unwrap_or_else(|| panic!("{}: not UTF-8", path.display()));
        let _ = writeln!(out, "    ({rel:?}, include_str!({path:?})),");
    }
    let _ = writeln!(out, "];");
}
