//! The cases and fixture layouts built into the crate (by `build.rs`, from `cases/` and
//! `fixtures/`), so that the suite needs no source checkout at run time: an installed binary
//! or a crate that depends on this one finds them wherever it runs.
//!
//! `NBD_CONFORM_CASES` and `NBD_CONFORM_FIXTURES` point the suite at directories instead
//! ([`crate::engine::case::load_suite_cases`], [`crate::fixtures::find`]).

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// A file built into the crate: its path under `cases/` or `fixtures/`, and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippedFile {
    pub path: &'static str,
    pub text: &'static str,
}

/// Every shipped case file (`cases/**/*.toml`), sorted by path.
pub fn case_files() -> impl Iterator<Item = ShippedFile> {
    CASES.iter().map(|&(path, text)| ShippedFile { path, text })
}

/// Every shipped fixture layout (`fixtures/*.toml`), sorted by path.
pub fn fixture_files() -> impl Iterator<Item = ShippedFile> {
    FIXTURES
        .iter()
        .map(|&(path, text)| ShippedFile { path, text })
}

/// The text of shipped fixture `name` (`fixtures/NAME.toml`).
pub fn fixture_text(name: &str) -> Option<&'static str> {
    let file = format!("{name}.toml");
    FIXTURES
        .iter()
        .find(|(path, _)| *path == file)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_source_tree_is_shipped_as_it_is() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in case_files() {
            let on_disk = std::fs::read_to_string(root.join("cases").join(file.path)).unwrap();
            assert_eq!(on_disk, file.text, "cases/{}", file.path);
        }
        let on_disk = std::fs::read_dir(root.join("fixtures"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count();
        assert_eq!(fixture_files().count(), on_disk);
        assert!(fixture_text("mixed-4m").is_some_and(|t| t.contains("size")));
        assert_eq!(fixture_text("no-such-fixture"), None);
        assert!(case_files().any(|f| f.path == "bs/range/last-byte.toml"));
    }
}
