//! Parsing of the addresses a user types: where to listen and where to relay to.
//!
//! A listen address must be an IP literal with a port (`0.0.0.0:443`, `[::]:443`). An upstream
//! is either an IP literal or a host name with a port (`s3-ap-northeast-1.amazonaws.com:443`);
//! host names are kept as names and resolved per connection, because the addresses behind
//! names such as S3 endpoints change.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::error::AddressError;

/// Parses a listen address: an IP literal and a port.
///
/// # Errors
///
/// An [`AddressError`] that says what is wrong, for example a missing port or a host name
/// where an IP address is needed.
///
/// ```
/// let addr = spliceway::parse_listen_addr("[::]:443").unwrap();
/// assert_eq!(addr.port(), 443);
/// assert!(spliceway::parse_listen_addr("localhost:443").is_err());
/// ```
pub fn parse_listen_addr(input: &str) -> Result<SocketAddr, AddressError> {
    let text = input.trim();
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Ok(addr);
    }
    if text.is_empty() {
        return Err(AddressError::new("listen", input, "it is empty"));
    }
    if text.parse::<u16>().is_ok() {
        return Err(AddressError::new(
            "listen",
            input,
            format!("give an IP address with the port, e.g. 0.0.0.0:{text} or [::]:{text}"),
        ));
    }
    if text.parse::<IpAddr>().is_ok() {
        return Err(AddressError::new(
            "listen",
            input,
            "the port is missing (IPv6 addresses go in brackets: [::1]:443)",
        ));
    }
    match split_host_port(text) {
        Ok((host, _)) if host.parse::<IpAddr>().is_err() => Err(AddressError::new(
            "listen",
            input,
            format!("{host:?} is not an IP address; listen on an address such as 0.0.0.0"),
        )),
        Ok(_) => Err(AddressError::new("listen", input, "not an ip:port address")),
        Err(reason) => Err(AddressError::new("listen", input, reason)),
    }
}

/// Where a route relays to: a fixed socket address, or a host name resolved per connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamAddr {
    /// An IP literal and port; never resolved.
    Ip(SocketAddr),
    /// A host name and port, resolved for each new connection (with a short cache).
    Name {
        /// The host name, as given (lower-cased).
        host: String,
        /// The TCP port.
        port: u16,
    },
}

impl UpstreamAddr {
    /// Parses `host:port`, `ip:port` or `[v6]:port`.
    ///
    /// # Errors
    ///
    /// An [`AddressError`] naming the problem: no port, a port out of range, a host name with
    /// characters a DNS name cannot hold.
    ///
    /// ```
    /// use spliceway::UpstreamAddr;
    /// let up = UpstreamAddr::parse("s3-ap-northeast-1.amazonaws.com:443").unwrap();
    /// assert_eq!(up.port(), 443);
    /// assert!(UpstreamAddr::parse("s3.amazonaws.com").is_err()); // no port
    /// ```
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let text = input.trim();
        if let Ok(addr) = SocketAddr::from_str(text) {
            return Ok(UpstreamAddr::Ip(addr));
        }
        if text.is_empty() {
            return Err(AddressError::new("upstream", input, "it is empty"));
        }
        if text.parse::<IpAddr>().is_ok() {
            return Err(AddressError::new(
                "upstream",
                input,
                "the port is missing (IPv6 addresses go in brackets: [2001:db8::1]:443)",
            ));
        }
        let (host, port) =
            split_host_port(text).map_err(|reason| AddressError::new("upstream", input, reason))?;
        validate_host_name(host).map_err(|reason| AddressError::new("upstream", input, reason))?;
        Ok(UpstreamAddr::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        match self {
            UpstreamAddr::Ip(addr) => addr.port(),
            UpstreamAddr::Name { port, .. } => *port,
        }
    }
}

impl FromStr for UpstreamAddr {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UpstreamAddr::parse(s)
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Ip(addr) => write!(f, "{addr}"),
            UpstreamAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Splits `host:port` at the last colon and parses the port.
fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("the port is missing (expected host:port)".to_string());
    };
    if host.contains(':') {
        return Err("IPv6 addresses go in brackets, e.g. [2001:db8::1]:443".to_string());
    }
    if host.is_empty() {
        return Err("the host is missing (expected host:port)".to_string());
    }
    if port.is_empty() {
        return Err("the port is missing after ':'".to_string());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0 is not a port one can connect to".to_string());
    }
    Ok((host, port))
}

/// Checks that a host name is made of DNS labels (letters, digits, `-`, `_`), so that typos such
/// as `s3.amazonaws.com/bucket` fail at start-up with a clear message.
fn validate_host_name(host: &str) -> Result<(), String> {
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("host name {host:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "host name {host:?} has a label longer than 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("host name {host:?} contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host name {host:?} has a label that starts or ends with '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_ipv4_and_ipv6() {
        assert_eq!(
            parse_listen_addr("0.0.0.0:443").unwrap(),
            "0.0.0.0:443".parse().unwrap()
        );
        assert_eq!(parse_listen_addr("[::]:8443").unwrap().port(), 8443);
    }

    #[test]
    fn listen_rejects_with_reason() {
        let e = parse_listen_addr("443").unwrap_err();
        assert!(e.reason.contains("0.0.0.0:443"), "{e}");
        let e = parse_listen_addr("example.com:443").unwrap_err();
        assert!(e.reason.contains("not an IP address"), "{e}");
        let e = parse_listen_addr("127.0.0.1").unwrap_err();
        assert!(e.reason.contains("port is missing"), "{e}");
        let e = parse_listen_addr("127.0.0.1:99999").unwrap_err();
        assert!(e.reason.contains("99999"), "{e}");
        assert!(e.to_string().contains("listen"));
    }

    #[test]
    fn upstream_name_and_ip() {
        assert_eq!(
            UpstreamAddr::parse("S3-ap-northeast-1.amazonaws.com:443").unwrap(),
            UpstreamAddr::Name {
                host: "s3-ap-northeast-1.amazonaws.com".into(),
                port: 443
            }
        );
        assert_eq!(
            UpstreamAddr::parse("[::1]:80").unwrap(),
            UpstreamAddr::Ip("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn upstream_rejects_with_reason() {
        for (input, needle) in [
            ("example.com", "port is missing"),
            ("example.com:", "port is missing"),
            ("example.com:http", "not a number"),
            ("example.com:0", "port 0"),
            (":443", "host is missing"),
            ("exa mple.com:443", "contains ' '"),
            ("s3.amazonaws.com/bucket:443", "contains '/'"),
            ("a..b:443", "empty label"),
            ("2001:db8::1:443", "brackets"),
            ("::1", "port is missing"),
        ] {
            let e = UpstreamAddr::parse(input).unwrap_err();
            assert!(e.reason.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["example.com:443", "10.0.0.1:80", "[::1]:8080"] {
            assert_eq!(UpstreamAddr::parse(text).unwrap().to_string(), text);
        }
    }
}
