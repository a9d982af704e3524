#!/usr/bin/env python3
"""Generate src/clauses/catalogue.rs, the clause registry, from the spec notes.

Usage (from the crate root):

    python3 scripts/gen-clauses.py [--spec-dir DIR] [--out FILE]
    rustfmt --edition 2021 src/clauses/catalogue.rs   # optional; the output is already tidy

Defaults: --spec-dir spec (this repository's copy of the spec notes), --out
src/clauses/catalogue.rs. The generated file is
committed; rerun this script whenever the spec notes change, then `cargo test --lib clauses`.

Sources and rules (see the doc comment of src/clauses.rs for the API):

* `clauses.md` section 2: every table whose header row starts `| ID |` has the columns
  ID | Section | Str | Who | Clause (paraphrase) | Test observation. A row is kept when its Who
  column contains `S` (S, S/C, C/S), plus the few D/C rows whose ids the codec reports
  (`EXTRA_IDS`). Aliases stay separate entries.
* `draft-get-lba-status.md`: the two `| Id | Rule |` tables. "Normative points" are MUST unless
  the rule says SHOULD; "points the draft leaves open" are DERIVED unless the rule carries an
  explicit "(MUST" / "(SHOULD" marker.
* `SUITE_DEFINED`: clauses the project defines itself, appended last.

Level from the Str column: a cell starting with DERIVED is Derived; DEF / "(unspecified)" alone
is Def; otherwise the strongest RFC 2119 keyword (MUST > SHOULD > MAY, NOT-forms included).
Mixed cells on S/C or C/S rows use `SERVER_PART` (the keyword of the server's half, chosen by
hand from the paraphrase); the script refuses to run if a new mixed S/C row has no decision.
`LEVEL_OVERRIDES` holds the remaining hand decisions, each with its reason.

Cells are unescaped (`\\|` -> `|`), markdown emphasis (backticks, `**`) is dropped, and the
strings are escaped for Rust string literals.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

# D and C rows that the codec or client already reports by id (they describe what a server is
# observed to break, even though the catalogue files them under data/client rules).
EXTRA_IDS = {
    "GEN-STR-1",  # D: string rules, checked on every name/message received
    "GEN-STR-2",  # D: 256-byte string advice
    "CHUNK-INCONS-1",  # C: inconsistent chunk (bad lengths) forces a disconnect; a server fault
    "CHUNK-UNKTYPE-1",  # C: a chunk type the protocol lacks forces a disconnect; a server fault
}

# Mixed Str cells on S/C or C/S rows: the keyword of the server's part.
SERVER_PART = {
    "HS-REPEAT-1": "MAY",  # server may answer a repeat with ERR_INVALID
    "ABORT-DATA-1": "SHOULD",  # server should ignore data on ABORT
    "SR-NODATA-1": "SHOULD",  # server should refuse data with ERR_INVALID
    "SR-DEPEND-1": "SHOULD NOT",  # server should not advertise before SR
    "SR-TLS-1": "MUST NOT",  # server must not keep state across STARTTLS
    "EH-NODATA-1": "SHOULD",  # server should refuse data with ERR_INVALID
    "EH-NOSR-1": "SHOULD",  # server should accept EH without SR
    "EH-PL-1": "DEF",  # server side: the flag earns EINVAL (definition)
    "EH-REP-3": "DEF",  # server side: lengths stay below 2^32 in practice; MAY is the client's
    "LMC-PRE-1": "MAY",  # server may answer ERR_INVALID
    "LMC-ID-1": "SHOULD",  # server should send id 0 in LIST replies
    "SMC-PRE-1": "SHOULD",  # server should answer ERR_INVALID
    "ALLOC-HOLENZ-1": "MAY",  # HOLE without ZERO is legal
    "ALLOC-RSV-1": "SHOULD",  # server should send 0 in reserved bits
    "TX-ESHUT-1": "SHOULD",  # server should answer with ESHUTDOWN
    "CHUNK-FLAGS-1": "MUST NOT",  # server must not set unnegotiated reply flags
    "BS-REQ-ZERO-1": "SHOULD NOT",  # server should not disconnect on length 0
    "BS-REQ-OOB-1": "SHOULD",  # server should answer EINVAL
    "BS-REQ-ALIGN-1": "SHOULD",  # server should EINVAL unaligned requests
    "BS-REQ-DOS-1": "SHOULD NOT",  # both parts bind both sides: strongest
    "BS-REQ-FLAGS-1": "SHOULD",  # server should answer EINVAL
    "BS-REQ-FUA-1": "MUST",  # server must accept FUA when SEND_FUA is advertised
    "BS-REP-DIFF-1": "SHOULD",  # server should merge equal neighbours
    "SIZE-ALIGNREQ-1": "SHOULD",  # server should EINVAL; MUST / MUST NOT are the client's
    "TLS-RESET-1": "MUST NOT",  # server must not keep state across STARTTLS
}

# Clauses no wire exchange this suite can make will show broken, id -> why. The coverage
# report (`nbd-conform list --coverage`) leaves them out of its totals and says why.
NOT_OBSERVABLE = {
    "HS-PORT-1": "the port a server listens on is its operator's choice; the suite goes where it is told",
    "HS-SHUT-1": "needs a server being shut down mid-session, which the harness cannot cause on a server it does not run",
    "TX-ESHUT-1": "needs a server being shut down mid-session, which the harness cannot cause on a server it does not run",
    "SR-TLS-1": "after STARTTLS: TLS is out of scope (nbds:// is refused)",
    "EH-TLS-1": "after STARTTLS: TLS is out of scope (nbds:// is refused)",
    "TLS-FORCED-1": "needs a server that forces TLS: TLS is out of scope (nbds:// is refused)",
    "TLS-NEEDFIXED-1": "needs a TLS server and a client without fixed newstyle: TLS is out of scope",
    "TLS-RESET-1": "after STARTTLS: TLS is out of scope (nbds:// is refused)",
    "TX-NAGLE-1": "TCP_NODELAY is a socket option, invisible on the wire (and the suite uses Unix sockets)",
    "ALLOC-ENOSPC-1": "needs a backing store that is full",
    "ERRNO-NOMEM-1": "needs a server out of memory",
    "MC-DOC-1": "about a server's documentation, not its answers",
    "MC-NS-2": "advice on naming widely deployed contexts; no answer shows it broken",
    "CHUNK-MIN-1": "'low' has no threshold: no chunk count breaks it",
    "CHUNK-EARLYDONE-1": "about when the server knows of an error; the wire shows only the DONE it sent",
    "MC-REPR-1": "a rule for whoever defines a context; the wire shows a status, not what did not fit in it",
    "GO-BLKSZ-2": "needs to know which constraints a server enforces; a refusal does not say why",
    "SIZE-ADVERTISE-1": "needs to know which constraints a server enforces; a refusal does not say why",
    "ALLOC-SAFE0-1": "whether reporting more than status 0 was cheap is the server's to know",
    "SMC-EXPORT-1": "the spec leaves SET for an unknown export open: every answer is allowed, so none shows it broken",
    "LMC-EXPORT-1": "the spec leaves LIST for an unknown export open: every answer is allowed, so none shows it broken",
}

# Clauses whose every observation is one another clause already reports, id -> the id that
# reports it and why. One observation is one finding, so the suite reports it once, under that
# id; the coverage report shows these rows with the id, outside its totals.
REPORTED_AS = {
    "BS-EXT-ALWAYS-1": ("BS-REP-NOEXT-1", "both are broken by a 32-bit status chunk under extended headers"),
    "ALLOC-NO64-1": ("BS-EXT-HI-1", "both are broken by high status bits set for base:allocation in an extended chunk"),
    "BS-REQ-ONE-3": ("BS-REQ-ONE-1", "one descriptor per chunk, with one chunk per context (BS-REP-PERCTX-1), is one extent per context"),
    "BS-REQ-ONE-5": ("BS-REQ-ONE-1", "its two halves are BS-REQ-ONE-1 (one extent) and BS-REQ-ONE-2 (within the length)"),
    "ERRNO-UNKCMD-1": ("BS-REQ-UNKCMD-1", "the same rule, stated twice in the spec"),
    "BS-NEG-2": ("MC-NOCTX-1", "the same rule, stated twice in the spec"),
    "LMC-PREFIX-1": ("MC-NAME-1", "a name without its namespace and colon breaks the name syntax; its string rules are GEN-STR-1"),
    "EXPNAME-ONLY-1": ("HS-FIXED-1", "a server that negotiates options without FIXED_NEWSTYLE breaks both"),
    "GO-NAME-1": ("GEN-STR-1", "an INFO name or description is a protocol string, checked as every string is"),
    "SIZE-ALIGNREQ-1": ("BS-REQ-ALIGN-1", "for block status, the alignment half is BS-REQ-ALIGN-1 and the end half BS-REQ-OOB-1"),
    "EH-PL-2": ("BS-PAYLOAD-BIG-1", "the suite sends a payload only with block status, where the rule is BS-PAYLOAD-BIG-1"),
    "SR-SIMPLEOK-1": ("BS-ERR-CHUNK-1", "the only payload-free replies the suite grades are block-status errors, where the rule is BS-ERR-CHUNK-1"),
    "SR-DEPEND-1": ("TX-DF-1", "the one such extension a client sees advertised before structured replies is SEND_DF"),
    "BASELINE-4": ("EH-REQD-1", "both are broken by a GO without extended headers answered ERR_EXT_HEADER_REQD"),
}

# Other hand decisions, id -> (level, reason).
LEVEL_OVERRIDES = {
    "DRAFT-STATE-1": ("Must", "the draft table says a status outside the query's values is a failure"),
    "DRAFT-BOUND-1": ("Must", "the draft table says a parameter length beyond the request's need is a failure"),
    "ERRNO-SET-1": ("Should", "a definition, but the catalogue grades undefined error values as a warning"),
    "BS-REP-MINBLK-1": (
        "Should",
        "master (the normative text since 2025-05-31) says SHOULD; the MUST is the older "
        "EXT-branch wording, which the catalogue itself grades as warn by default",
    ),
    # From the 2026-12 audit of every server-graded level against the sentence it paraphrases
    # (proto.md 89ba7b5 and the extension-ext-header branch):
    "SMC-REPLACE-1": (
        "Derived",
        "no keyword; the block-status request after a failed SET breaks a client MUST, and the "
        "server's answer to it is bound only by a SHOULD (EINVAL, 'Metadata querying')",
    ),
    "SR-EHREQD-1": (
        "Should",
        "no keyword, and the EXT text lets the server answer 'or with an error permitted "
        "elsewhere'; a different error is no MUST broken",
    ),
    "LMC-EXPORT-1": ("May", "the spec says nothing of LIST for an unknown export: recorded only"),
    "SMC-EXPORT-1": ("May", "the spec says nothing of SET for an unknown export: recorded only"),
    "QEMU-DB-1": (
        "Derived",
        "qemu's nbd.rst defines bit 0 only, with no keyword and no reserved-bits rule",
    ),
}

SUITE_GROUP = [
    (
        "BS-STABLE-1",
        "Derived",
        "NBD_CMD_BLOCK_STATUS (suite-defined)",
        "The same query, asked again on an unchanged export (in another order or with other "
        "contexts selected alongside), gets the same descriptors.",
    ),
    (
        "BS-COMPLETE-1",
        "Must",
        "Transmission (suite-defined)",
        "Every request the server accepted gets a complete reply (a simple reply, or chunks "
        "ending with DONE) within the suite's timeout; no reply, no DONE, or a length never "
        "filled is a failure.",
    ),
    (
        "ALLOC-TRUTH-1",
        "Must",
        "base:allocation metadata context (suite-defined)",
        "On a fixture the suite built, no range holding non-zero data is reported with the "
        "ZERO bit (nor as ZEROED in the draft).",
    ),
    (
        "QEMU-DB-COVER-1",
        "Must",
        "qemu namespace (suite-defined)",
        "A dirty bitmap reports every byte written since it was created as dirty (a superset "
        "at its granularity).",
    ),
    (
        "DRAFT-DIRTY-COVER-1",
        "Must",
        "GET_LBA_STATUS draft (suite-defined)",
        "The draft's dirtiness query (selector 1) reports every byte written since tracking "
        "began as DIRTY (= 0), a superset at its granularity.",
    ),
    (
        "QEMU-DB-PREC-1",
        "May",
        "qemu namespace (suite-defined)",
        "A dirty bitmap reports dirty only the granules written since it was created: data "
        "written before it existed stays clean. More (a coarser granularity, older data) is "
        "safe for a backup, but imprecise: recorded.",
    ),
    (
        "DRAFT-DIRTY-DEALLOC-1",
        "Must",
        "GET_LBA_STATUS draft (suite-defined)",
        "Where the dirtiness query says DIRTY_DEALLOCATED (2, the follow-up's hint), the "
        "allocation query on the same unchanged export says DEALLOCATED (2).",
    ),
]

DRAFT_SECTIONS = {
    "normative": "GET_LBA_STATUS draft",
    "open": "GET_LBA_STATUS draft (open point, fixed by this project)",
}

ID_RE = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)*-[0-9]+$")
KEYWORD_RE = re.compile(r"\b(MUST|SHOULD|MAY)\b")


def split_row(line: str) -> list[str]:
    """Split a markdown table row on unescaped pipes that are outside code spans."""
    body = line.strip()
    assert body.startswith("|") and body.endswith("|") and not body.endswith("\\|"), line
    body = body[1:-1]
    cells, cur, in_code, i = [], [], False, 0
    while i < len(body):
        c = body[i]
        if c == "\\" and body[i + 1 : i + 2] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            cells.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur))
    return [clean(c) for c in cells]


def clean(cell: str) -> str:
    cell = cell.replace("**", "").replace("`", "")
    return re.sub(r"\s+", " ", cell).strip()


def strongest(s: str) -> str | None:
    kws = set(KEYWORD_RE.findall(s))
    for k, lvl in (("MUST", "Must"), ("SHOULD", "Should"), ("MAY", "May")):
        if k in kws:
            return lvl
    return None


def level_of(cid: str, strength: str, who: str) -> str:
    if cid in LEVEL_OVERRIDES:
        return LEVEL_OVERRIDES[cid][0]
    if strength.startswith("DERIVED"):
        return "Derived"
    mixed = "/" in strength
    if mixed and who in ("S/C", "C/S"):
        if cid not in SERVER_PART:
            sys.exit(f"{cid}: mixed Str {strength!r} on a {who} row; add it to SERVER_PART")
        part = SERVER_PART[cid]
        if part not in strength:
            sys.exit(f"{cid}: SERVER_PART {part!r} is not in {strength!r}")
        return strongest(part) or "Def"
    lvl = strongest(strength)
    if lvl:
        return lvl
    if strength.startswith("DEF") or strength == "(unspecified)":
        return "Def"
    sys.exit(f"{cid}: cannot grade Str {strength!r}")


def parse_clauses_md(path: pathlib.Path) -> tuple[list[tuple[str, str, str, str]], int]:
    text = path.read_text(encoding="utf-8")
    m = re.search(r"^## 2\. .*?(?=^## 3\. )", text, re.S | re.M)
    assert m, "clauses.md: section 2 not found"
    out, total, in_table = [], 0, False
    for line in m.group(0).splitlines():
        if line.startswith("| ID |"):
            header = split_row(line)
            assert header[:5] == ["ID", "Section", "Str", "Who", "Clause (paraphrase)"], header
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if set(line.replace("|", "").strip()) <= {"-", " ", ":"}:
            continue
        cells = split_row(line)
        if len(cells) != 6:
            sys.exit(f"clauses.md: expected 6 cells, got {len(cells)}: {line}")
        cid, section, strength, who, para, _obs = cells
        total += 1
        if "S" not in who.split("/") and cid not in EXTRA_IDS:
            continue
        out.append((cid, level_of(cid, strength, who), section, para))
    cm = re.search(r"Count: (\d+) clauses", clean(text))
    if cm and int(cm.group(1)) != total:
        print(f"warning: clauses.md says {cm.group(1)} clauses, parsed {total}", file=sys.stderr)
    return out, total


def parse_draft_md(path: pathlib.Path) -> list[tuple[str, str, str, str]]:
    out, kind = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            h = line.lower()
            kind = "normative" if "normative" in h else "open" if "leaves open" in h else None
            continue
        if kind is None or not line.startswith("|"):
            continue
        cells = split_row(line)
        if cells[0] == "Id" or set("".join(cells)) <= {"-", ":"}:
            continue
        if len(cells) != 2:
            sys.exit(f"draft: expected 2 cells, got {len(cells)}: {line}")
        cid, rule = cells
        if kind == "normative":
            level = "Should" if re.search(r"\bSHOULD\b", rule) else "Must"
        elif re.search(r"\(MUST\b", rule):
            level = "Must"
        elif re.search(r"\(SHOULD\b", rule):
            level = "Should"
        else:
            level = "Derived"
        if cid in LEVEL_OVERRIDES:
            level = LEVEL_OVERRIDES[cid][0]
        out.append((cid, level, DRAFT_SECTIONS[kind], rule))
    return out


def rust_str(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render(groups: list[tuple[str, list[tuple[str, str, str, str]]]]) -> str:
    lines = [
        "// @generated by scripts/gen-clauses.py from spec/clauses.md (section 2) and",
        "// spec/draft-get-lba-status.md. Do not edit by hand: change the",
        "// script (or the notes) and regenerate.",
        "",
        "use super::{Clause, Level};",
        "",
        "/// Every clause a server can be observed breaking, in catalogue order.",
        "pub static CLAUSES: &[Clause] = &[",
    ]
    for title, rows in groups:
        lines.append(f"    // --- {title} ---")
        for cid, level, section, text in rows:
            lines.append("    Clause {")
            lines.append(f"        id: {rust_str(cid)},")
            lines.append(f"        level: Level::{level},")
            lines.append(f"        section: {rust_str(section)},")
            lines.append(f"        text: {rust_str(text)},")
            why = NOT_OBSERVABLE.get(cid)
            lines.append(f"        unobservable: {'Some(' + rust_str(why) + ')' if why else 'None'},")
            alias = REPORTED_AS.get(cid)
            if alias:
                lines.append(
                    f"        reported_as: Some(({rust_str(alias[0])}, {rust_str(alias[1])})),"
                )
            else:
                lines.append("        reported_as: None,")
            lines.append("    },")
    lines.append("];")
    lines.append("")
    lines.append("/// Every clause id as a constant: code names a clause through these, so that a misspelt")
    lines.append("/// or retired id does not compile.")
    lines.append("pub mod id {")
    lines.append("    use crate::clauses::ClauseId;")
    lines.append("")
    for title, rows in groups:
        for cid, level, section, text in rows:
            const = cid.replace("-", "_")
            lines.append(f"    pub const {const}: ClauseId = ClauseId({rust_str(cid)});")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    ap.add_argument("--spec-dir", default=root / "spec", type=pathlib.Path)
    ap.add_argument("--out", default=root / "src/clauses/catalogue.rs", type=pathlib.Path)
    args = ap.parse_args()

    spec, total = parse_clauses_md(args.spec_dir / "clauses.md")
    draft = parse_draft_md(args.spec_dir / "draft-get-lba-status.md")
    suite = list(SUITE_GROUP)
    groups = [
        ("clauses.md section 2 (server-observable rows)", spec),
        ("2016 GET_LBA_STATUS draft (draft-get-lba-status.md)", draft),
        ("suite-defined", suite),
    ]

    all_rows = spec + draft + suite
    ids = [r[0] for r in all_rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    bad = [i for i in ids if not ID_RE.match(i)]
    if dup or bad:
        sys.exit(f"duplicate ids {dup}, malformed ids {bad}")
    aliases = set(REPORTED_AS) | {target for target, _ in REPORTED_AS.values()}
    missing = sorted(
        (set(SERVER_PART) | set(LEVEL_OVERRIDES) | set(NOT_OBSERVABLE) | aliases | EXTRA_IDS) - set(ids)
    )
    if missing:
        sys.exit(f"hand decisions for ids not in the catalogue: {missing}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(groups), encoding="utf-8")
    counts: dict[str, int] = {}
    for r in all_rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    print(
        f"wrote {args.out}: {len(all_rows)} clauses "
        f"({len(spec)} of {total} clauses.md rows, {len(draft)} draft, {len(suite)} suite); "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
