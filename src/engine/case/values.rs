//! The typed values case files are written with, each parsed when its file loads: needs,
//! command flags, option codes, hex payloads, offset and length expressions.

use serde::Deserialize;

use crate::size::parse_number;
use crate::wire::consts::{command_flag, option, transmission_flag};

/// A capability a case needs, spelled `structured-replies`, `extended-headers`,
/// `min-block>1`, `fixture-truth`, `draft-status`, `writable`, `flag:NAME`, `no-flag:NAME` or a context
/// name (`base:allocation`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Need {
    StructuredReplies,
    ExtendedHeaders,
    Context(String),
    Flag(u16),
    NoFlag(u16),
    MinBlockAbove1,
    FixtureTruth,
    DraftStatus,
    /// The case writes: the export must not be READ_ONLY, and a `--target` must have been
    /// given `--writable` (a server the harness launches writes on a private copy).
    Writable,
}

impl TryFrom<String> for Need {
    type Error = String;

    fn try_from(s: String) -> Result<Need, String> {
        Ok(match s.as_str() {
            "structured-replies" => Need::StructuredReplies,
            "extended-headers" => Need::ExtendedHeaders,
            "min-block>1" => Need::MinBlockAbove1,
            "fixture-truth" => Need::FixtureTruth,
            "draft-status" => Need::DraftStatus,
            "writable" => Need::Writable,
            _ if s.starts_with("flag:") => Need::Flag(transmission_flag_named(&s[5..])?),
            _ if s.starts_with("no-flag:") => Need::NoFlag(transmission_flag_named(&s[8..])?),
            _ if s.contains(':') => Need::Context(s),
            _ => return Err(format!("unknown need {s:?}")),
        })
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::StructuredReplies => f.write_str("structured replies"),
            Need::ExtendedHeaders => f.write_str("extended headers"),
            Need::Context(c) => write!(f, "metadata context {c}"),
            Need::Flag(flag) => write!(f, "transmission flag {flag:#06x}"),
            Need::NoFlag(flag) => write!(f, "transmission flag {flag:#06x} clear"),
            Need::MinBlockAbove1 => f.write_str("an advertised minimum block size above 1"),
            Need::FixtureTruth => f.write_str("a fixture the harness built"),
            Need::DraftStatus => {
                f.write_str("transmission flag bit 7 (NBD_FLAG_SEND_GET_LBA_STATUS)")
            }
            Need::Writable => f.write_str("a writable export (NBD_FLAG_READ_ONLY clear)"),
        }
    }
}

fn transmission_flag_named(name: &str) -> Result<u16, String> {
    transmission_flag::by_name(name).ok_or_else(|| format!("unknown transmission flag {name:?}"))
}

/// A context in a block-status payload: a name the case negotiates, or `unknown`, an id none
/// of the selected contexts has (chosen when the step runs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PayloadContext {
    Name(String),
    Unknown,
}

impl TryFrom<String> for PayloadContext {
    type Error = String;

    fn try_from(s: String) -> Result<PayloadContext, String> {
        match s.as_str() {
            "unknown" => Ok(PayloadContext::Unknown),
            _ if s.contains(':') => Ok(PayloadContext::Name(s)),
            _ => Err(format!("{s:?} is neither a context name nor \"unknown\"")),
        }
    }
}

/// Command flags by name (`REQ_ONE`, `FUA`, …) or number (`0x8000`), OR-ed together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct CommandFlags(pub u16);

impl TryFrom<Vec<String>> for CommandFlags {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<CommandFlags, String> {
        let mut flags = 0;
        for n in &names {
            flags |= command_flag::by_name(n)
                .or_else(|| parse_number(n).ok().and_then(|v| u16::try_from(v).ok()))
                .ok_or_else(|| format!("unknown command flag {n:?}"))?;
        }
        Ok(CommandFlags(flags))
    }
}

/// An option by name (`SET_META_CONTEXT`, `NBD_OPT_GO`) or by number (any `u32`, so that a
/// case can send an option no server knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OptionSpelling")]
pub struct OptionCode(pub u32);

#[derive(Deserialize)]
#[serde(untagged)]
enum OptionSpelling {
    Number(i64),
    Name(String),
}

impl TryFrom<OptionSpelling> for OptionCode {
    type Error = String;

    fn try_from(v: OptionSpelling) -> Result<OptionCode, String> {
        match v {
            OptionSpelling::Number(n) => u32::try_from(n)
                .map(OptionCode)
                .map_err(|_| format!("option number {n} out of range")),
            OptionSpelling::Name(s) => option::by_name(s.trim_start_matches("NBD_OPT_"))
                .map(OptionCode)
                .ok_or_else(|| format!("unknown option {s:?}")),
        }
    }
}

/// A raw option payload in hex (blanks ignored), decoded when the case loads. `{export-len}`
/// stands for the 4-byte length of the export name the case addresses and `{export}` for its
/// bytes, so that a hand-made payload names the export of whatever server runs the case
/// (`conform` on the servers the harness launches).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HexTemplate(Vec<HexPiece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum HexPiece {
    Bytes(Vec<u8>),
    ExportLength,
    Export,
}

impl TryFrom<String> for HexTemplate {
    type Error = String;

    fn try_from(s: String) -> Result<HexTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = s.as_str();
        loop {
            let next = [
                ("{export-len}", HexPiece::ExportLength),
                ("{export}", HexPiece::Export),
            ]
            .into_iter()
            .filter_map(|(token, piece)| rest.find(token).map(|at| (at, token, piece)))
            .min_by_key(|(at, _, _)| *at);
            let Some((at, token, piece)) = next else {
                pieces.push(HexPiece::Bytes(decode_hex(rest)?));
                return Ok(HexTemplate(pieces));
            };
            pieces.push(HexPiece::Bytes(decode_hex(&rest[..at])?));
            pieces.push(piece);
            rest = &rest[at + token.len()..];
        }
    }
}

impl HexTemplate {
    /// The payload for a server whose export is named `export`.
    pub fn bytes(&self, export: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in &self.0 {
            match piece {
                HexPiece::Bytes(b) => out.extend(b),
                HexPiece::ExportLength => {
                    let len = u32::try_from(export.len()).map_err(|_| "export name too long")?;
                    out.extend(len.to_be_bytes());
                }
                HexPiece::Export => out.extend(export.as_bytes()),
            }
        }
        Ok(out)
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

/// An offset or length, parsed when the case loads: a number with an optional K/M/G/T suffix
/// (or `0x` hex), `size` (the export size), `max` (2^64 − 1), `min-block` (the advertised
/// minimum block size, 1 when none), or one of those plus or minus a number (`size-512`,
/// `max-511`, `min-block+1`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Expr {
    text: String,
    base: Base,
    /// `Some((true, n))` for `+n`, `Some((false, n))` for `-n`.
    delta: Option<(bool, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Size,
    Max,
    MinBlock,
    Number(u64),
}

impl TryFrom<String> for Expr {
    type Error = String;

    fn try_from(text: String) -> Result<Expr, String> {
        let e = text.trim();
        // The one name with a '-' of its own.
        let skip = if e.starts_with("min-block") { 9 } else { 1 };
        let split = e
            .char_indices()
            .skip(skip)
            .find(|(_, c)| *c == '+' || *c == '-');
        let (base, rest) = match split {
            Some((i, _)) => (&e[..i], Some(&e[i..])),
            None => (e, None),
        };
        let base = match base.trim() {
            "size" => Base::Size,
            "max" => Base::Max,
            "min-block" => Base::MinBlock,
            n => Base::Number(parse_number(n).map_err(|e| format!("bad number in {text:?}: {e}"))?),
        };
        let delta = match rest {
            None => None,
            Some(r) => Some((
                r.starts_with('+'),
                parse_number(&r[1..]).map_err(|e| format!("bad number in {text:?}: {e}"))?,
            )),
        };
        Ok(Expr { text, base, delta })
    }
}

impl Expr {
    /// The value on an export of `size` bytes with a `minimum` block size. Arithmetic never
    /// wraps: a case that wants an overflowing range says so with `max` (`offset = "max-511"`);
    /// an expression that would leave 0..2^64 (`size-512` on a 0-byte export) has no value
    /// there, and the case does not fit that export.
    pub fn eval(&self, size: u64, minimum: u64) -> Result<u64, String> {
        let base = match self.base {
            Base::Size => size,
            Base::Max => u64::MAX,
            Base::MinBlock => minimum,
            Base::Number(n) => n,
        };
        let value = match self.delta {
            None => Some(base),
            Some((true, n)) => base.checked_add(n),
            Some((false, n)) => base.checked_sub(n),
        };
        value.ok_or_else(|| {
            format!(
                "{:?} is outside 0..2^64 on an export of {size} bytes",
                self.text
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, size: u64) -> Result<u64, String> {
        Expr::try_from(text.to_owned())?.eval(size, 4096)
    }

    #[test]
    fn expressions() {
        assert_eq!(eval("64K", 0), Ok(65536));
        assert_eq!(eval("size-512", 4096), Ok(3584));
        assert_eq!(eval("size+1", 4096), Ok(4097));
        assert_eq!(eval("max-511", 0), Ok(u64::MAX - 511));
        assert_eq!(eval("0x10", 0), Ok(16));
        assert_eq!(eval("4G", 0), Ok(1 << 32));
        assert_eq!(eval("min-block", 0), Ok(4096));
        assert_eq!(eval("min-block+1", 0), Ok(4097));
        assert_eq!(eval("min-block-1", 0), Ok(4095));
        assert!(Expr::try_from("lots".to_owned()).is_err());
        // Never wraps: on a 0-byte export `size-512` is no offset at all.
        assert!(eval("size-512", 0).is_err());
        assert!(eval("max+1", 0).is_err());
    }

    #[test]
    fn flags() {
        assert_eq!(
            CommandFlags::try_from(vec!["REQ_ONE".into(), "0x8000".into()]),
            Ok(CommandFlags(0x8008))
        );
        assert!(CommandFlags::try_from(vec!["NOPE".into()]).is_err());
    }

    #[test]
    fn payload_hex_spells_the_export_of_the_server_under_test() {
        let hex = |s: &str| HexTemplate::try_from(s.to_owned());
        assert_eq!(
            hex("{export-len} {export} 0002 7ffe")
                .unwrap()
                .bytes("disk")
                .unwrap(),
            [0, 0, 0, 4, b'd', b'i', b's', b'k', 0, 2, 0x7f, 0xfe]
        );
        assert_eq!(
            hex("000003e8{export}").unwrap().bytes("").unwrap(),
            [0, 0, 3, 0xe8]
        );
        assert_eq!(hex("").unwrap().bytes("x").unwrap(), Vec::<u8>::new());
        assert!(hex("{export} 0").is_err());
        assert!(hex("{exports}").is_err());
    }
}
