//! Where a server is: `host:port`, `nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`.
//!
//! Follows the NBD URI document (URI-PORT-1, URI-EXPORT-1, URI-SOCKET-1). TLS schemes are
//! refused with a clear message because this suite speaks plain text only (URI-NOTLS-1).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::wire::consts::magic::DEFAULT_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A server endpoint plus the export to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub export: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{0:?}: TLS URIs (nbds://, nbds+unix://) are not supported; use nbd:// or nbd+unix://"
    )]
    Tls(String),
    #[error("{0:?}: unsupported scheme (expected nbd://, nbd+unix:// or host:port)")]
    Scheme(String),
    #[error("{0:?}: nbd+unix:// needs a ?socket=PATH parameter")]
    NoSocket(String),
    #[error("{0:?}: invalid port")]
    Port(String),
    #[error("{0:?}: missing host")]
    Host(String),
    #[error("{0:?}: bad percent-encoding")]
    Encoding(String),
}

/// `host:port` (brackets around an IPv6 host) or the socket path.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{}", self.export)
            }
            Endpoint::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{}", self.export),
            Endpoint::Unix(path) => {
                write!(f, "nbd+unix:///{}?socket={}", self.export, path.display())
            }
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        if s.starts_with("nbds://") || s.starts_with("nbds+unix://") {
            return Err(TargetError::Tls(s.into()));
        }
        if let Some(rest) = s.strip_prefix("nbd+unix://") {
            return parse_unix(s, rest);
        }
        if let Some(rest) = s.strip_prefix("nbd://") {
            let (authority, path_query) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let path = path_query.split(['?', '#']).next().unwrap_or("");
            let export = percent_decode(path.strip_prefix('/').unwrap_or(path))
                .ok_or_else(|| TargetError::Encoding(s.into()))?;
            let (host, port) = split_host_port(s, authority)?;
            return Ok(Target {
                endpoint: Endpoint::Tcp { host, port },
                export,
            });
        }
        if s.contains("://") {
            return Err(TargetError::Scheme(s.into()));
        }
        let (host, port) = split_host_port(s, s)?;
        Ok(Target {
            endpoint: Endpoint::Tcp { host, port },
            export: String::new(),
        })
    }
}

fn parse_unix(whole: &str, rest: &str) -> Result<Target, TargetError> {
    // The authority must be empty: nbd+unix:///export?socket=PATH
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let export = percent_decode(path).ok_or_else(|| TargetError::Encoding(whole.into()))?;
    let socket = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("socket="))
        .ok_or_else(|| TargetError::NoSocket(whole.into()))?;
    let socket = percent_decode(socket).ok_or_else(|| TargetError::Encoding(whole.into()))?;
    if socket.is_empty() {
        return Err(TargetError::NoSocket(whole.into()));
    }
    Ok(Target {
        endpoint: Endpoint::Unix(PathBuf::from(socket)),
        export,
    })
}

fn split_host_port(whole: &str, authority: &str) -> Result<(String, u16), TargetError> {
    // Drop any userinfo; NBD has no use for it.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| TargetError::Host(whole.into()))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::Host(whole.into()));
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| TargetError::Port(whole.into()))?,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn tcp(host: &str, port: u16, export: &str) -> Target {
        Target {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[rstest]
    #[case("nbd://h", tcp("h", 10809, ""))]
    #[case("nbd://h/", tcp("h", 10809, ""))]
    #[case("nbd://h//disk", tcp("h", 10809, "/disk"))]
    #[case("nbd://127.0.0.1:10900/img", tcp("127.0.0.1", 10900, "img"))]
    #[case("nbd://[::1]:99/a%20b", tcp("::1", 99, "a b"))]
    #[case("127.0.0.1:4000", tcp("127.0.0.1", 4000, ""))]
    #[case(
        "nbd+unix:///img?socket=/tmp/s.sock",
        Target { endpoint: Endpoint::Unix("/tmp/s.sock".into()), export: "img".into() }
    )]
    fn parses_the_uri_document_examples(#[case] text: &str, #[case] target: Target) {
        assert_eq!(text.parse(), Ok(target));
    }

    #[rstest]
    #[case("nbds://h/x", "TLS")]
    #[case("nbd+unix:///x", "socket")]
    #[case("http://h", "scheme")]
    #[case("h:notaport", "port")]
    #[case("nbd://:10/x", "host")]
    #[case("nbd://h/%zz", "encoding")]
    fn rejects_what_it_cannot_serve(#[case] text: &str, #[case] why: &str) {
        let e = text.parse::<Target>().unwrap_err();
        let kind = match e {
            TargetError::Tls(_) => "TLS",
            TargetError::NoSocket(_) => "socket",
            TargetError::Scheme(_) => "scheme",
            TargetError::Port(_) => "port",
            TargetError::Host(_) => "host",
            TargetError::Encoding(_) => "encoding",
        };
        assert_eq!(kind, why, "{text}: {e}");
    }
}
