//! The CONNECT request: a sans-I/O parser of the bytes a client sent so far (peeked, not
//! consumed), on `httparse`. It answers how many bytes the request takes, so that exactly those
//! are read off the socket and what the client sent after them stays queued for the upstream.

use std::fmt;
use std::net::IpAddr;

use crate::address::UpstreamAddr;
use crate::sni::host_name::normalize_host_name;

/// The longest request accepted, request line and headers: 8 KiB (nginx's and HAProxy's
/// defaults are of this order). A client that has sent this much without ending its headers
/// is answered `400`.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Most header lines accepted; a CONNECT request of a real client has a handful.
pub(crate) const MAX_HEADERS: usize = 64;

/// Where a CONNECT request asks to go: the authority of `CONNECT host:port HTTP/1.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// A host name (lower-cased, without a trailing dot) or an IP literal (an IPv6 one without
    /// its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ConnectTarget {
    /// The target as an upstream address: an IP literal as itself, a name to resolve.
    #[must_use]
    pub fn upstream(&self) -> UpstreamAddr {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => UpstreamAddr::Ip(std::net::SocketAddr::new(ip, self.port)),
            Err(_) => UpstreamAddr::Name {
                host: self.host.clone(),
                port: self.port,
            },
        }
    }
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The request's end (the empty line) has not arrived yet.
    Incomplete,
    /// A whole CONNECT request of `length` bytes, for `target`.
    Complete {
        /// Where the client asks to go.
        target: ConnectTarget,
        /// The request's bytes, up to and including its empty line; anything after it is the
        /// client's payload.
        length: usize,
    },
}

/// Why a request is refused with `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No end of headers within [`MAX_REQUEST_BYTES`].
    #[error("request longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    /// Not HTTP/1.x as `httparse` reads it, or too many headers.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A method other than `CONNECT`.
    #[error("method {0:?} (only CONNECT is served)")]
    NotConnect(String),
    /// The request target is not `host:port`.
    #[error("bad target {target:?}: {problem}")]
    Target {
        /// The target as sent (at most 64 bytes of it).
        target: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Parses the bytes a client sent so far. Never looks past the request's end; never panics.
///
/// # Errors
///
/// What makes the request one to answer `400`.
pub fn parse_request(bytes: &[u8]) -> Result<Parsed, RequestError> {
    let window = &bytes[..bytes.len().min(MAX_REQUEST_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(window) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_REQUEST_BYTES => {
            return Err(RequestError::TooLong);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Incomplete),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::Malformed("too many header lines"));
        }
        Err(e) => return Err(RequestError::Malformed(error_phrase(e))),
    };
    let method = request.method.unwrap_or_default();
    if method != "CONNECT" {
        let shown: String = method.chars().take(16).collect();
        return Err(RequestError::NotConnect(shown));
    }
    let raw_target = request.path.unwrap_or_default();
    let target = parse_target(raw_target).map_err(|problem| RequestError::Target {
        target: raw_target.chars().take(64).collect(),
        problem,
    })?;
    Ok(Parsed::Complete { target, length })
}

fn error_phrase(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
        httparse::Error::TooManyHeaders => "too many header lines",
    }
}

/// The authority form of RFC 9110 section 9.3.6: `host:port`, `[v6]:port`.
fn parse_target(target: &str) -> Result<ConnectTarget, &'static str> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or("an IPv6 address must be written [address]:port")?;
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| "invalid IPv6 address")?;
        (ip.to_string(), port)
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or("no port (CONNECT needs host:port)")?;
        if host.contains(':') {
            return Err("an IPv6 address must be written [address]:port");
        }
        let host = match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => normalize_host_name(host.as_bytes())?,
        };
        (host, port)
    };
    let port = parse_port(port).ok_or("the port must be a number from 1 to 65535")?;
    Ok(ConnectTarget { host, port })
}

/// Digits only, no sign or leading zero, 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok()
}
