//! Where clients connect: a TCP port or a Unix socket, plus the housekeeping of socket files
//! (refusing to steal a live socket, clearing a stale one, removing ours on drop).

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{Listen, ServeError};

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
        _guard: SocketGuard,
    },
}

/// One accepted client.
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    pub async fn bind(listen: &Listen) -> Result<Listener, ServeError> {
        match listen {
            Listen::Tcp(addr) => TcpListener::bind(addr)
                .await
                .map(Listener::Tcp)
                .map_err(|e| listen_error(addr.to_string(), describe_socket_error(&e))),
            Listen::Unix(path) => bind_unix(path),
        }
    }

    /// "127.0.0.1:PORT" (the real port when 0 was asked for) or the socket path.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown TCP address".into()),
            Listener::Unix { path, .. } => path.display().to_string(),
        }
    }

    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix { listener, .. } => {
                listener.accept().await.map(|(s, _)| Accepted::Unix(s))
            }
        }
    }
}

fn bind_unix(path: &Path) -> Result<Listener, ServeError> {
    let addr = path.display().to_string();
    clear_stale_socket(path).map_err(|reason| listen_error(addr.clone(), reason))?;
    let listener = UnixListener::bind(path)
        .map_err(|e| listen_error(addr.clone(), describe_socket_error(&e)))?;
    let guard =
        SocketGuard::new(path).map_err(|e| listen_error(addr, describe_socket_error(&e)))?;
    Ok(Listener::Unix {
        listener,
        path: path.to_owned(),
        _guard: guard,
    })
}

/// Leaves `path` free for binding: absent is fine, a socket nobody answers on is removed,
/// anything else is refused with the reason.
fn clear_stale_socket(path: &Path) -> Result<(), String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(describe_socket_error(&e)),
    };
    if !meta.file_type().is_socket() {
        return Err("the path exists and is not a socket".into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err("another server is already listening there".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|e| {
                format!(
                    "cannot remove the stale socket: {}",
                    describe_socket_error(&e)
                )
            })
        }
        Err(e) => Err(format!(
            "an existing socket is in the way: {}",
            describe_socket_error(&e)
        )),
    }
}

/// Removes the socket file the server created when dropped, unless someone replaced it since.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketGuard {
    fn new(path: &Path) -> io::Result<SocketGuard> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketGuard {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn listen_error(addr: String, reason: String) -> ServeError {
    ServeError::Listen { addr, reason }
}

/// Short lower-case reasons for the usual socket errors, the OS text otherwise.
fn describe_socket_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}
