//! Which block-status protocol a connection speaks.

/// Today's `NBD_CMD_BLOCK_STATUS` with metadata contexts, or the 2016 `GET_LBA_STATUS` draft.
/// The draft is never auto-detected: its transmission flag bit 7 is today's `SEND_DF`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Standard,
    Draft,
}
