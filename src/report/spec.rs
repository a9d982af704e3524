//! Links from a clause's spec section to its heading in proto.md at the revision the clause
//! registry was read at (spec/clauses.md records it), so that a reader checks our paraphrase
//! against the sentence it paraphrases, not against whatever the spec says today.

/// The NetworkBlockDevice/nbd commit whose `doc/proto.md` the registry paraphrases.
pub const SPEC_COMMIT: &str = "89ba7b5379548d6ebbfa36db15f2b8e3787a09ea";

/// proto.md's headings at [`SPEC_COMMIT`] (`grep '^#' doc/proto.md`) that a section may name,
/// as written there (backticks included). "Flag fields" is left out: it is there twice.
const HEADINGS: &[&str] = &[
    "Conventions",
    "Protocol phases",
    "Handshake",
    "Oldstyle negotiation",
    "Newstyle negotiation",
    "Fixed newstyle negotiation",
    "Termination of the session during option haggling",
    "Transmission",
    "Ordering of messages and writes",
    "Request message",
    "Simple reply message",
    "Structured reply chunk message",
    "Terminating the transmission phase",
    "Reserved Magic values",
    "TLS support",
    "Server-side requirements",
    "Client-side requirements",
    "Size constraints",
    "Metadata querying",
    "The `base:` metadata namespace",
    "`base:allocation` metadata context",
    "Values",
    "Handshake phase",
    "Handshake flags",
    "Client flags",
    "Transmission flags",
    "Option types",
    "Option reply types",
    "Transmission phase",
    "Command flags",
    "Structured reply flags",
    "Structured reply types",
    "Request types",
    "Error values",
    "Experimental extensions",
    "Compatibility and interoperability",
    "Baseline",
    "Maximum interoperability",
];

/// The address of the proto.md heading `section` (a registry clause's section, such as
/// "Request types: NBD_CMD_BLOCK_STATUS" or "NBD_OPT_INFO/GO; Size constraints") names first,
/// at [`SPEC_COMMIT`]; none for what proto.md at that revision does not hold (the extension
/// branch's `[EXT]` text, the 2016 draft, qemu's documents).
pub fn section_url(section: &str) -> Option<String> {
    let first = section.split(';').next().unwrap_or("").trim();
    if first.starts_with("[EXT]") {
        return None;
    }
    let heading = heading_for(first)?;
    Some(format!(
        "https://github.com/NetworkBlockDevice/nbd/blob/{SPEC_COMMIT}/doc/proto.md#{}",
        slug(heading)
    ))
}

fn heading_for(text: &str) -> Option<&'static str> {
    let plain = |s: &str| s.replace('`', "").to_lowercase();
    let text = plain(text);
    // "Request types: NBD_CMD_BLOCK_STATUS" is an item under "Request types"; so are the
    // options, replies and info types under theirs.
    let by_item = [
        ("nbd_opt_", "Option types"),
        ("nbd_cmd_", "Request types"),
        ("nbd_reply_type_", "Structured reply types"),
        ("nbd_rep_", "Option reply types"),
        ("nbd_info_", "Option reply types"),
    ];
    if let Some((_, heading)) = by_item.iter().find(|(p, _)| text.starts_with(p)) {
        return Some(heading);
    }
    // The longest heading the text is, or starts with ("Transmission flags bit 7").
    HEADINGS
        .iter()
        .filter(|h| {
            let h = plain(h);
            text == h || text.starts_with(&format!("{h}:")) || text.starts_with(&format!("{h} "))
        })
        .max_by_key(|h| h.len())
        .copied()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(section: &str) -> Option<String> {
        section_url(section).map(|u| u.rsplit('#').next().unwrap().to_owned())
    }

    #[test]
    fn sections_link_to_their_heading() {
        for (section, want) in [
            ("Request types: NBD_CMD_BLOCK_STATUS", Some("request-types")),
            ("NBD_OPT_INFO/GO", Some("option-types")),
            (
                "NBD_REPLY_TYPE_BLOCK_STATUS; Request types",
                Some("structured-reply-types"),
            ),
            (
                "base:allocation metadata context",
                Some("baseallocation-metadata-context"),
            ),
            (
                "The base: metadata namespace",
                Some("the-base-metadata-namespace"),
            ),
            ("Transmission flags bit 7", Some("transmission-flags")),
            (
                "Transmission; Ordering of messages and writes",
                Some("transmission"),
            ),
            (
                "Termination of the session during option haggling",
                Some("termination-of-the-session-during-option-haggling"),
            ),
            ("[EXT] NBD_CMD_BLOCK_STATUS", None),
            ("GET_LBA_STATUS draft", None),
            ("qemu nbd.rst", None),
        ] {
            assert_eq!(anchor(section).as_deref(), want, "{section}");
        }
        assert!(section_url("Size constraints").unwrap().starts_with(
            "https://github.com/NetworkBlockDevice/nbd/blob/89ba7b5379548d6ebbfa36db15f2b8e3787a09ea/doc/proto.md#"
        ));
    }

    #[test]
    fn the_commit_is_the_one_the_registry_records() {
        let recorded = include_str!("../../spec/clauses.md");
        assert!(recorded.contains(&format!("HEAD `{SPEC_COMMIT}`")));
        assert_eq!(
            super::super::SPEC_REVISION,
            format!("proto.md@{}", &SPEC_COMMIT[..7])
        );
    }

    #[test]
    fn most_registry_sections_outside_ext_link() {
        let (mut linked, mut proto) = (0, 0);
        for c in crate::clauses::CLAUSES {
            if c.section.starts_with("[EXT]")
                || c.section.contains("draft")
                || c.section.contains("qemu")
            {
                continue;
            }
            proto += 1;
            linked += usize::from(section_url(c.section).is_some());
        }
        assert!(
            linked * 10 >= proto * 9,
            "{linked} of {proto} proto.md sections link"
        );
    }
}
