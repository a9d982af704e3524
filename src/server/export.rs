//! The one export this server offers, shared by all connections: image, dirty bitmaps, context
//! catalogue, and the facts a client learns about it (name, size, transmission flags).

use std::io;
use std::sync::Arc;

use super::bitmap::{BitmapSpec, DirtyBitmap, MIN_GRANULARITY};
use super::budget::Budget;
use super::client_limits::ClientLimits;
use super::contexts::ContextCatalogue;
use super::fault::Faults;
use super::image::Image;
use super::negotiate::BLOCK_SIZES;
use super::variant::Variants;
use crate::wire::consts::{draft, transmission_flag as tf};
use crate::wire::handshake::BlockSizes;
use crate::Dialect;

/// Description sent in LIST and INFO_DESCRIPTION.
pub const DESCRIPTION: &str = "nbd-conform reference server";

#[derive(Debug)]
pub struct Export {
    pub name: String,
    pub dialect: Dialect,
    pub image: Arc<Image>,
    /// In the order given on the command line; bitmap `i` has context id `i + 1`.
    pub bitmaps: Vec<Arc<DirtyBitmap>>,
    pub contexts: ContextCatalogue,
    /// Clauses to break on purpose (none unless `--fault` asked for some).
    pub faults: Faults,
    /// Legal choices to take on purpose (none unless `--variant` asked for some).
    pub variants: Variants,
    /// Every range a client wrote, zeroed or trimmed since the server started, at the finest
    /// granularity: what the `zero-over-written` fault forgets.
    pub written: DirtyBitmap,
    /// The block sizes `--min-block` and `--max-payload` set (the defaults without them),
    /// before any variant or fault.
    pub limits: BlockSizes,
    /// Whether every block status fails in the backend (`--fail-block-status`).
    pub failing_status: bool,
    /// What clients may hold of the server (`serve --max-connections` and the rest).
    pub client_limits: ClientLimits,
    /// The bytes of payloads and READ replies in memory, shared by every connection.
    pub budget: Budget,
}

impl Export {
    pub fn new(name: String, dialect: Dialect, image: Image, bitmaps: &[BitmapSpec]) -> Self {
        Export {
            name,
            dialect,
            image: Arc::new(image),
            bitmaps: bitmaps
                .iter()
                .map(|spec| Arc::new(DirtyBitmap::new(spec.granularity)))
                .collect(),
            contexts: ContextCatalogue::new(bitmaps),
            faults: Faults::default(),
            variants: Variants::default(),
            written: DirtyBitmap::new(MIN_GRANULARITY),
            limits: BLOCK_SIZES,
            failing_status: false,
            client_limits: ClientLimits::default(),
            budget: Budget::new(ClientLimits::DEFAULT_MAX_BUFFERED),
        }
    }

    pub fn with_client_limits(self, client_limits: ClientLimits) -> Self {
        Export {
            budget: Budget::new(client_limits.max_buffered),
            client_limits,
            ..self
        }
    }

    pub fn with_faults(self, faults: Faults) -> Self {
        Export { faults, ..self }
    }

    pub fn with_variants(self, variants: Variants) -> Self {
        Export { variants, ..self }
    }

    pub fn with_limits(self, limits: BlockSizes) -> Self {
        Export { limits, ..self }
    }

    pub fn with_failing_status(self, failing_status: bool) -> Self {
        Export {
            failing_status,
            ..self
        }
    }

    /// The block sizes the clean server advertises and keeps: the limits, then the variants.
    pub fn block_sizes(&self) -> BlockSizes {
        self.variants.block_sizes(self.limits)
    }

    /// The advertised minimum block size (1 without one): requests and answers keep to it.
    pub fn minimum_block(&self) -> u64 {
        u64::from(self.block_sizes().minimum).max(1)
    }

    /// The size clients see: whole minimum blocks only (a server with a minimum block size
    /// should export a multiple of it, SIZE-MIN-2).
    pub fn size(&self) -> u64 {
        let minimum = self.minimum_block();
        self.image.size() / minimum * minimum
    }

    pub fn writable(&self) -> bool {
        self.image.writable()
    }

    pub fn is_draft(&self) -> bool {
        self.dialect == Dialect::Draft
    }

    /// The canonical name if `requested` names this export ("" is the default export).
    pub fn resolve(&self, requested: &str) -> Option<&str> {
        (requested.is_empty() || requested == self.name).then_some(self.name.as_str())
    }

    /// Transmission flags for a client that has (or has not) negotiated structured replies.
    /// Bit 7 is SEND_DF today but SEND_GET_LBA_STATUS in the draft (TX-DF-1, DRAFT-FLAG-1).
    /// BLOCK_STATUS_PAYLOAD (bit 12) goes with `status_payload`: extended headers and a
    /// selection to filter (the negotiation decides).
    pub fn transmission_flags(&self, structured: bool, status_payload: bool) -> u16 {
        let mut flags = tf::HAS_FLAGS
            | tf::SEND_FLUSH
            | tf::SEND_FUA
            | tf::SEND_TRIM
            | tf::SEND_WRITE_ZEROES
            | tf::CAN_MULTI_CONN;
        if !self.writable() {
            flags |= tf::READ_ONLY;
        }
        match self.dialect {
            Dialect::Draft => flags |= draft::SEND_GET_LBA_STATUS,
            Dialect::Standard if structured => flags |= tf::SEND_DF,
            Dialect::Standard => {}
        }
        if status_payload {
            flags |= tf::BLOCK_STATUS_PAYLOAD;
        }
        self.faults.transmission_flags(flags)
    }

    /// Runs blocking image I/O (`f`) off the async threads.
    pub async fn image_io<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce(&Image) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let image = self.image.clone();
        tokio::task::spawn_blocking(move || f(&image))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("I/O task failed: {e}"))))
    }

    /// Marks a modified range dirty in every bitmap.
    pub fn mark_dirty(&self, offset: u64, length: u64) {
        self.written.mark(offset, length);
        for bitmap in &self.bitmaps {
            bitmap.mark(offset, length);
        }
    }
}
