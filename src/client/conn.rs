//! The byte transport under a client session: a TCP or Unix stream, a read buffer, and a
//! timeout on every read and write.
//!
//! It tells a clean end of stream apart from a peer that hung up in the middle of a message, and
//! never grows its buffer faster than bytes actually arrive, so a peer that claims a huge length
//! and sends nothing costs nothing.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::target::{Endpoint, Target};
use super::ClientError;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Bytes the buffer may grow by per read: bounds memory against peers that lie about lengths.
const READ_STEP: usize = 64 * 1024;

pub struct Conn {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    pub timeout: Duration,
}

/// A Unix socket connect, retried while the server's accept backlog is full: Linux answers
/// EAGAIN then, which is a busy server (nbd-server's backlog is short, and cases connect side
/// by side), not an unreachable one. The caller's deadline bounds the retries.
async fn connect_unix(path: &std::path::Path) -> std::io::Result<UnixStream> {
    loop {
        match UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

impl Conn {
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Conn, ClientError> {
        let connecting = async {
            let stream: Box<dyn Stream> = match &target.endpoint {
                Endpoint::Tcp { host, port } => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Endpoint::Unix(path) => Box::new(connect_unix(path).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(ClientError::Connect {
                    target: target.to_string(),
                    reason: format!("no connection within {timeout:?}"),
                })
            }
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    target: target.to_string(),
                    reason: e.to_string(),
                })
            }
            Ok(Ok(s)) => s,
        };
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_STEP),
            timeout,
        })
    }

    /// The buffered bytes not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf
    }

    /// Reads until at least `n` bytes are buffered. `what` names the message for errors.
    ///
    /// The timeout bounds the whole message, not each read: a peer that drips one byte at a
    /// time cannot stretch a reply forever.
    pub async fn fill(&mut self, n: usize, what: &str) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.rbuf.len() < n {
            // Keep a full step of spare room so that small messages cost one read between
            // them, while the buffer still grows by at most one step per read.
            if self.rbuf.capacity() - self.rbuf.len() < READ_STEP / 4 {
                self.rbuf.reserve(READ_STEP);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
            match read.await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        what: what.to_owned(),
                        after: self.timeout,
                    })
                }
                Ok(Err(e)) => return Err(ClientError::Io(e)),
                Ok(Ok(0)) => {
                    return Err(ClientError::Closed {
                        what: what.to_owned(),
                        had: self.rbuf.len(),
                    })
                }
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Reads exactly `n` bytes.
    pub async fn take(&mut self, n: usize, what: &str) -> Result<Bytes, ClientError> {
        self.fill(n, what).await?;
        Ok(self.rbuf.split_to(n).freeze())
    }

    /// Discards `n` buffered bytes.
    pub fn advance(&mut self, n: usize) {
        self.rbuf.advance(n.min(self.rbuf.len()));
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(ClientError::Timeout {
                what: "writing to the server".into(),
                after: self.timeout,
            }),
            Ok(r) => r.map_err(ClientError::Io),
        }
    }

    /// True when the peer has closed: waits up to the timeout for EOF, and reports false if any
    /// byte arrives instead (that byte stays buffered).
    pub async fn closed_by_peer(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        self.rbuf.reserve(1);
        let read = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf));
        matches!(read.await, Ok(Ok(0)) | Ok(Err(_)))
    }

    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}
