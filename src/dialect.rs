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

impl Dialect {
    /// The dialect as case files, the command line and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Standard => "standard",
            Dialect::Draft => "draft",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
