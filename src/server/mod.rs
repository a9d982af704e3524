//! The reference server behind `nbd-conform serve`: one image file as one export, in either
//! dialect (today's BLOCK_STATUS with metadata contexts, or the 2016 GET_LBA_STATUS draft).
//!
//! This module holds the public face ([`Server`], [`ServeOptions`], [`ServeError`]) and the
//! accept loop. The work is split by job:
//! - [`image`]: the image file (positional I/O, hole punching, the allocation scan);
//! - [`bitmap`]: `--bitmap` specs and the shared in-memory dirty bitmaps;
//! - [`contexts`]: the context catalogue and LIST/SET query matching;
//! - [`extents`]: shaping extents into legal descriptors, and each dialect's status numbers;
//! - [`export`]: the shared export state and its transmission flags;
//! - [`negotiate`]: option haggling, sans IO;
//! - [`replies`]: reply framing for the negotiated header form;
//! - [`plan`]: request checking, sans IO;
//! - [`status`]: what the answer to a status query says, built stage by stage;
//! - [`transmit`]: the transmission loop: running checked requests and replying;
//! - [`fault`]: the clauses `--fault` breaks on purpose: a tamper layer the clean server hands
//!   its answers to at a few points;
//! - [`variant`]: the legal choices `--variant` takes, hooked just before the faults;
//! - `catalogue`: the one-table definition of the fault and variant lists;
//! - [`connection`] (one client) and `listener` (TCP or Unix socket files): sockets;
//! - [`client_limits`]: what clients may hold of the server (connections, deadlines, bytes),
//!   kept by [`admission`] (connection slots, the accept loop's shortages) and [`budget`]
//!   (payload and reply bytes in memory).
//!
//! The pure pieces are public so that integration tests can exercise them directly.

pub mod admission;
pub mod bitmap;
pub mod budget;
mod catalogue;
pub mod client_limits;
pub mod connection;
pub mod contexts;
pub mod export;
pub mod extents;
pub mod fault;
pub mod image;
pub mod limits;
mod listener;
pub mod negotiate;
pub mod plan;
pub mod replies;
pub mod status;
pub mod transmit;
pub mod variant;

#[cfg(test)]
mod e2e_tests;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use bitmap::BitmapSpec;
pub use client_limits::ClientLimits;
pub use fault::{Fault, FaultDialect, Faults};
pub use variant::{Variant, Variants};

use admission::Admission;
use export::Export;
use image::Image;
use listener::{Accepted, Listener};

use crate::wire::consts::limit;
use crate::wire::handshake::BlockSizes;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Everything `nbd-conform serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub image: PathBuf,
    pub listen: Listen,
    pub export_name: String,
    pub dialect: crate::Dialect,
    pub bitmaps: Vec<BitmapSpec>,
    pub writable: bool,
    /// Clauses to break on purpose (design §7); empty for the conformant server.
    pub faults: Vec<Fault>,
    /// Legal unusual choices to take on purpose; empty for the plain server.
    pub variants: Vec<Variant>,
    /// The block sizes to advertise and keep (`--min-block`, `--max-payload`; see
    /// [`limits::block_sizes`]); `negotiate::BLOCK_SIZES` for the plain server.
    pub block_sizes: BlockSizes,
    /// `--fail-block-status`: every block status fails as if the backend had (an EIO
    /// ERROR_OFFSET chunk inside the request), for the cases about backend failures.
    pub failing_status: bool,
    /// What clients may hold of the server: connections, deadlines, bytes in memory.
    pub client_limits: ClientLimits,
}

/// How a launched reference server departs from its plain answers: clauses it breaks on
/// purpose (faults, which the suite must catch) and legal choices it takes on purpose
/// (variants, which the suite must grade conformant). Both lists sorted, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Behaviour {
    pub faults: Vec<Fault>,
    pub variants: Vec<Variant>,
}

impl Behaviour {
    pub fn new(faults: &[Fault], variants: &[Variant]) -> Behaviour {
        let mut faults = faults.to_vec();
        faults.sort_unstable();
        faults.dedup();
        let mut variants = variants.to_vec();
        variants.sort_unstable();
        variants.dedup();
        Behaviour { faults, variants }
    }

    pub fn faults(faults: &[Fault]) -> Behaviour {
        Behaviour::new(faults, &[])
    }

    pub fn variants(variants: &[Variant]) -> Behaviour {
        Behaviour::new(&[], variants)
    }

    /// The plain, conformant server.
    pub fn is_plain(&self) -> bool {
        self.faults.is_empty() && self.variants.is_empty()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("bad bitmap spec: {0}")]
    Bitmap(String),
    #[error("bad export name {name:?}: {reason}")]
    ExportName { name: String, reason: String },
}

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    admission: Arc<Admission>,
    export: Arc<Export>,
}

impl Server {
    /// Checks the options, opens the image (read-only unless `writable`) and binds the
    /// listener, so that every startup problem is reported here rather than per client.
    pub async fn bind(options: ServeOptions) -> Result<Server, ServeError> {
        check_export_name(&options.export_name)?;
        check_bitmaps(&options.bitmaps)?;
        let image =
            Image::open(&options.image, options.writable).map_err(|e| ServeError::Image {
                path: options.image.clone(),
                reason: describe_image_error(&e),
            })?;
        let listener = Listener::bind(&options.listen).await?;
        let export = Export::new(
            options.export_name,
            options.dialect,
            image,
            &options.bitmaps,
        )
        .with_faults(Faults::new(options.faults))
        .with_variants(Variants::new(options.variants))
        .with_limits(options.block_sizes)
        .with_failing_status(options.failing_status)
        .with_client_limits(options.client_limits);
        Ok(Server {
            listener,
            admission: Admission::new(options.client_limits.max_connections),
            export: Arc::new(export),
        })
    }

    /// "127.0.0.1:PORT" or the Unix socket path.
    pub fn local_addr(&self) -> String {
        self.listener.local_addr()
    }

    /// Accepts clients forever, one task each, each holding a connection slot. A Unix socket
    /// file is removed when this future (or an unused `Server`) is dropped.
    pub async fn run(self) -> Result<(), ServeError> {
        // `one-connection`: the next client is accepted only once the last one has gone.
        let one_at_a_time = self.export.variants.has(Variant::OneConnection);
        let mut failures = 0;
        loop {
            let accepted = match self.listener.accept().await {
                Ok(accepted) => {
                    failures = 0;
                    accepted
                }
                Err(e) => {
                    failures += 1;
                    let pause = self.admission.after_accept_error(&e, failures);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let ticket = self.admission.admit().await;
            let export = self.export.clone();
            let task = match accepted {
                Accepted::Tcp(stream, peer) => {
                    // Replies are written whole; don't let Nagle delay them (TX-NAGLE-1).
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection::serve_connection(
                        stream,
                        export,
                        ticket,
                        peer.to_string(),
                    ))
                }
                Accepted::Unix(stream) => tokio::spawn(connection::serve_connection(
                    stream,
                    export,
                    ticket,
                    "a Unix socket client".to_owned(),
                )),
            };
            if one_at_a_time {
                let _ = task.await;
            }
        }
    }
}

fn check_export_name(name: &str) -> Result<(), ServeError> {
    let reason = if name.len() > limit::MAX_STRING {
        format!("longer than {} bytes", limit::MAX_STRING)
    } else if name.contains('\0') {
        "contains a NUL byte".to_owned()
    } else {
        return Ok(());
    };
    Err(ServeError::ExportName {
        name: name.to_owned(),
        reason,
    })
}

fn check_bitmaps(bitmaps: &[BitmapSpec]) -> Result<(), ServeError> {
    let mut seen = HashSet::new();
    for spec in bitmaps {
        spec.validate().map_err(ServeError::Bitmap)?;
        if !seen.insert(spec.name.as_str()) {
            return Err(ServeError::Bitmap(format!(
                "bitmap {:?} is given twice",
                spec.name
            )));
        }
    }
    Ok(())
}

fn describe_image_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "No such file".into(),
        io::ErrorKind::PermissionDenied => "Permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory, not an image file".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(image: PathBuf, listen: Listen) -> ServeOptions {
        ServeOptions {
            image,
            listen,
            export_name: "disk".into(),
            dialect: crate::Dialect::Standard,
            bitmaps: vec![],
            writable: false,
            faults: vec![],
            variants: vec![],
            block_sizes: negotiate::BLOCK_SIZES,
            failing_status: false,
            client_limits: ClientLimits::default(),
        }
    }

    fn tcp_any() -> Listen {
        Listen::Tcp("127.0.0.1:0".parse().unwrap())
    }

    #[tokio::test]
    async fn missing_image_is_reported_at_bind() {
        let err = Server::bind(options("/nonexistent/x.img".into(), tcp_any()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "image /nonexistent/x.img: No such file");
    }

    #[tokio::test]
    async fn busy_port_is_reported_at_bind() {
        let img = tempfile::NamedTempFile::new().unwrap();
        let first = Server::bind(options(img.path().into(), tcp_any()))
            .await
            .unwrap();
        let taken = Listen::Tcp(first.local_addr().parse().unwrap());
        let err = Server::bind(options(img.path().into(), taken))
            .await
            .unwrap_err();
        assert!(
            err.to_string().ends_with(": address already in use"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn duplicate_bitmaps_are_refused() {
        let img = tempfile::NamedTempFile::new().unwrap();
        let mut o = options(img.path().into(), tcp_any());
        o.bitmaps = vec!["a".parse().unwrap(), "a:4K".parse().unwrap()];
        let err = Server::bind(o).await.unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }

    #[tokio::test]
    async fn unix_socket_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let img = tempfile::NamedTempFile::new().unwrap();
        let sock = dir.path().join("nbd.sock");
        let server = Server::bind(options(img.path().into(), Listen::Unix(sock.clone())))
            .await
            .unwrap();
        assert_eq!(server.local_addr(), sock.display().to_string());
        // A live socket is not stolen.
        let err = Server::bind(options(img.path().into(), Listen::Unix(sock.clone())))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already listening"), "{err}");
        drop(server);
        assert!(!sock.exists(), "socket file removed on drop");

        // A stale socket (bound, never listened on) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(stale);
        assert!(sock.exists());
        let server = Server::bind(options(img.path().into(), Listen::Unix(sock.clone())))
            .await
            .unwrap();
        drop(server);

        // A regular file is never removed.
        std::fs::write(&sock, b"not a socket").unwrap();
        let err = Server::bind(options(img.path().into(), Listen::Unix(sock.clone())))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(sock.exists());
    }
}
