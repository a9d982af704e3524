//! The metadata contexts the server offers, and how LIST and SET queries pick among them.
//!
//! Context ids are positions in one fixed catalogue (`base:allocation` is 0, bitmaps follow in
//! command-line order), so an id means the same context for the whole life of the server.
//! LIST accepts the wildcards `base:`, `qemu:` and `qemu:dirty-bitmap:` (BASE-LISTWILD-1,
//! QEMU-LIST-1); SET selects exact names only (BASE-SETWILD-1, QEMU-SETWILD-1). Unknown names and
//! namespaces match nothing rather than failing (LMC-UNKNS-1, SMC-IGNORE-1).

use super::bitmap::BitmapSpec;
use crate::wire::consts::context;

/// What a context id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// `base:allocation`.
    Allocation,
    /// `qemu:dirty-bitmap:NAME`, by position in the server's bitmap list.
    DirtyBitmap(usize),
}

/// Every context of the export, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextCatalogue {
    names: Vec<String>,
}

const BASE_WILDCARD: &str = "base:";
const QEMU_WILDCARD: &str = "qemu:";

impl ContextCatalogue {
    pub fn new(bitmaps: &[BitmapSpec]) -> Self {
        let mut names = vec![context::BASE_ALLOCATION.to_owned()];
        names.extend(bitmaps.iter().map(BitmapSpec::context_name));
        ContextCatalogue { names }
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    pub fn kind(&self, id: u32) -> Option<ContextKind> {
        match id {
            0 => Some(ContextKind::Allocation),
            n if (n as usize) < self.names.len() => Some(ContextKind::DirtyBitmap(n as usize - 1)),
            _ => None,
        }
    }

    /// Ids a LIST with these queries reports, in id order. No queries means everything
    /// (LMC-ALL-1).
    pub fn list(&self, queries: &[String]) -> Vec<u32> {
        self.ids_where(|name| queries.is_empty() || queries.iter().any(|q| list_matches(q, name)))
    }

    /// Ids a SET with these queries selects, in id order and without duplicates.
    pub fn select(&self, queries: &[String]) -> Vec<u32> {
        self.ids_where(|name| queries.iter().any(|q| q == name))
    }

    fn ids_where(&self, keep: impl Fn(&str) -> bool) -> Vec<u32> {
        (0u32..)
            .zip(&self.names)
            .filter(|(_, name)| keep(name))
            .map(|(id, _)| id)
            .collect()
    }
}

/// Whether a LIST query names `context_name`, exactly or through one of the wildcards.
fn list_matches(query: &str, context_name: &str) -> bool {
    match query {
        BASE_WILDCARD => context_name.starts_with(BASE_WILDCARD),
        QEMU_WILDCARD | context::QEMU_DIRTY_BITMAP_PREFIX => {
            context_name.starts_with(context::QEMU_DIRTY_BITMAP_PREFIX)
        }
        exact => exact == context_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> ContextCatalogue {
        ContextCatalogue::new(&[
            BitmapSpec {
                name: "a".into(),
                granularity: 65536,
            },
            BitmapSpec {
                name: "b".into(),
                granularity: 512,
            },
        ])
    }

    fn q(queries: &[&str]) -> Vec<String> {
        queries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_are_stable_positions() {
        let c = catalogue();
        assert_eq!(c.name(0), Some("base:allocation"));
        assert_eq!(c.name(1), Some("qemu:dirty-bitmap:a"));
        assert_eq!(c.name(2), Some("qemu:dirty-bitmap:b"));
        assert_eq!(c.name(3), None);
        assert_eq!(c.kind(0), Some(ContextKind::Allocation));
        assert_eq!(c.kind(2), Some(ContextKind::DirtyBitmap(1)));
        assert_eq!(c.kind(3), None);
    }

    #[test]
    fn list_without_queries_reports_everything() {
        assert_eq!(catalogue().list(&[]), vec![0, 1, 2]);
    }

    #[test]
    fn list_wildcards() {
        let c = catalogue();
        assert_eq!(c.list(&q(&["base:"])), vec![0]);
        assert_eq!(c.list(&q(&["qemu:"])), vec![1, 2]);
        assert_eq!(c.list(&q(&["qemu:dirty-bitmap:"])), vec![1, 2]);
        assert_eq!(
            c.list(&q(&["qemu:dirty-bitmap:b", "base:allocation"])),
            vec![0, 2]
        );
    }

    #[test]
    fn list_ignores_unknown_names_and_reports_each_context_once() {
        let c = catalogue();
        assert!(c
            .list(&q(&["x-nonexistent:foo", "base:no-such-leaf", "nocolon"]))
            .is_empty());
        assert_eq!(c.list(&q(&["base:", "base:allocation"])), vec![0]);
    }

    #[test]
    fn set_selects_exact_names_only() {
        let c = catalogue();
        assert!(c
            .select(&q(&["base:", "qemu:", "qemu:dirty-bitmap:"]))
            .is_empty());
        assert!(c.select(&[]).is_empty());
        assert_eq!(
            c.select(&q(&["qemu:dirty-bitmap:a", "base:allocation"])),
            vec![0, 1]
        );
        assert_eq!(
            c.select(&q(&["base:allocation", "base:allocation"])),
            vec![0]
        );
    }
}
