//! The kinds of step a case is written with; what each expects is an [`Expect`].

use serde::Deserialize;

use super::{CommandFlags, Expect, Expr, HexTemplate, OptionCode, PayloadContext};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Negotiate {
    #[serde(default = "yes")]
    pub structured: bool,
    #[serde(default)]
    pub extended: bool,
    #[serde(default)]
    pub contexts: Vec<String>,
    /// Export for SET_META_CONTEXT and GO; default: the target's.
    pub export: Option<String>,
    /// Export for GO only, when it should differ from the SET one.
    pub go_export: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connect {
    /// Client flags to send instead of the usual ones.
    pub client_flags: Option<u32>,
    /// `close = "required"`: the server must close right after the client flags.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OptionStep {
    /// Option name (`SET_META_CONTEXT`, …) or number.
    pub option: OptionCode,
    pub export: Option<String>,
    /// For LIST/SET_META_CONTEXT.
    #[serde(default)]
    pub queries: Vec<String>,
    /// Replaces the payload entirely (hex; blanks ignored). `{export-len}` stands for the
    /// 4-byte length of the export name and `{export}` for its bytes, so a hand-made payload
    /// names the export of whatever server runs the case.
    pub data_hex: Option<HexTemplate>,
    /// Announce this payload length instead of the real one.
    pub claimed_length: Option<u32>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Go {
    pub export: Option<String>,
    /// First NBD_OPT_INFO with GO's very parameters; GO must then say the same (GO-SAME-1).
    #[serde(default)]
    pub after_info: bool,
    pub expect: Option<Expect>,
}

/// `export-name`: end haggling with NBD_OPT_EXPORT_NAME, which has no option reply: the
/// export's size and flags (and 124 zeros unless NO_ZEROES was agreed), or, for an export the
/// server will not give, the end of the session (`close = "required"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExportName {
    /// Default: the target's export.
    pub export: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockStatus {
    pub offset: Expr,
    /// The area of interest: the header's length, or with a `payload` the payload's effect
    /// length (the header then carries the payload's length).
    pub length: Expr,
    #[serde(default)]
    pub flags: CommandFlags,
    /// The payload form (PAYLOAD_LEN is set with it).
    pub payload: Option<StatusPayloadSpec>,
    /// Off the advertised minimum block grid on purpose (a client MUST NOT send it): sent
    /// only where it is off the grid and inside the export, else the case is `unsupported`.
    #[serde(default)]
    pub unaligned: bool,
    #[serde(default)]
    pub expect: Expect,
}

/// A block-status payload: `{ contexts = ["base:allocation"] }` filters on contexts the case
/// negotiates (resolved to the ids the server handed out when the step runs; `"unknown"` is an
/// id none of them has); `raw-hex` sends bytes as given instead; `oversize` pads the payload
/// with zeros past the advertised (or default 2^25) maximum payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StatusPayloadSpec {
    #[serde(default)]
    pub contexts: Vec<PayloadContext>,
    pub raw_hex: Option<HexTemplate>,
    #[serde(default)]
    pub oversize: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DraftStatus {
    pub offset: Expr,
    pub length: Expr,
    /// 0 = allocation, 1 = dirtiness, anything else = an unknown query type.
    pub selector: u16,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRequest {
    pub magic: Option<u32>,
    pub command: u16,
    #[serde(default)]
    pub flags: CommandFlags,
    pub offset: Expr,
    pub length: Expr,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pipeline {
    pub count: usize,
    pub length: Expr,
    #[serde(default)]
    pub flags: CommandFlags,
    /// A READ of the same range goes out before each status request, both in flight: in the
    /// draft only the cookie tells a READ's simple reply (data) from a status one (P and
    /// descriptors).
    #[serde(default)]
    pub with_reads: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapStep {
    #[serde(default)]
    pub req_one: bool,
    /// Longest request (default: as long as the header allows).
    pub max_request: Option<Expr>,
    /// Draft dialect: the selectors to walk (default `[0]`).
    #[serde(default)]
    pub selectors: Vec<u16>,
}

/// The byte a `write` step fills its range with unless it names one: not zero, so that the
/// data cannot be mistaken for a hole, and not a byte any fixture is built from.
pub const WRITE_BYTE: u8 = 0xC3;

fn write_byte() -> u8 {
    WRITE_BYTE
}

/// `write`: `length` bytes of `byte` at `offset` (NBD_CMD_WRITE).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Write {
    pub offset: Expr,
    pub length: Expr,
    #[serde(default = "write_byte")]
    pub byte: u8,
    #[serde(default)]
    pub flags: CommandFlags,
    #[serde(default)]
    pub expect: Expect,
}

/// `write-zeroes`, `trim` and `cache`: a writing (or caching) command without a payload.
/// `flags` may carry NO_HOLE and FAST_ZERO on `write-zeroes` (FAST_ZERO only goes out when
/// the server advertises it; else the case is `unsupported`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RangeCommand {
    pub offset: Expr,
    pub length: Expr,
    #[serde(default)]
    pub flags: CommandFlags,
    #[serde(default)]
    pub expect: Expect,
}

/// `verify`: block status over `[offset, offset+length)` for every selected context, then a
/// READ of it, graded against what the case's own writes put there.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Verify {
    pub offset: Expr,
    pub length: Expr,
}
