//! Parsing of the addresses a user types: where to listen and where to relay to.
//!
//! A listen address must be an IP literal with a port (`0.0.0.0:443`, `[::]:443`). An upstream
//! is either an IP literal or a host name with a port (`s3-ap-northeast-1.amazonaws.com:443`);
//! host names are kept as names and resolved per connection, because the addresses behind
//! names such as S3 endpoints change.
//!
//! An IPv6 literal may carry a zone (`[fe80::1%eth0]:443`, or the interface's index, `%2`):
//! a link-local address means nothing without the interface it is on, so one without a zone is
//! refused, and the zone becomes the address's scope id. An interface name is turned into its
//! index when the address is parsed (`if_nametoindex`); addresses are then shown with the index
//! (`[fe80::1%2]:443`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use crate::error::AddressError;

/// Parses a listen address: an IP literal and a port.
///
/// An IPv4 address in IPv6 form (`[::ffff:127.0.0.1]:443`) is refused: the relay's IPv6
/// listeners are IPv6-only (`IPV6_V6ONLY`), and the kernel refuses to bind one to it (`EINVAL`);
/// write the IPv4 address (`127.0.0.1:443`).
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
/// assert!(spliceway::parse_listen_addr("[::ffff:127.0.0.1]:443").is_err());
/// ```
pub fn parse_listen_addr(input: &str) -> Result<SocketAddr, AddressError> {
    let text = input.trim();
    if let Some(parsed) = parse_ip_port(text) {
        let fail = |reason| AddressError::new("listen", input, reason);
        let addr = parsed.map_err(fail)?;
        if let SocketAddr::V6(v6) = addr
            && let Some(v4) = v6.ip().to_ipv4_mapped()
        {
            return Err(fail(format!(
                "{} is an IPv4 address written as IPv6, which an IPv6-only listener cannot \
                 bind: listen on {v4}:{}",
                v6.ip(),
                v6.port()
            )));
        }
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
///
/// Non-exhaustive: other kinds of address (a unix socket) may come.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Parses `host:port`, `ip:port` or `[v6]:port` (`[v6%zone]:port` for a link-local
    /// address).
    ///
    /// # Errors
    ///
    /// An [`AddressError`] naming the problem: no port, port 0 (nothing can be connected to
    /// it), a port out of range, a host name with characters a DNS name cannot hold.
    ///
    /// ```
    /// use spliceway::UpstreamAddr;
    /// let up = UpstreamAddr::parse("s3-ap-northeast-1.amazonaws.com:443").unwrap();
    /// assert_eq!(up.port(), 443);
    /// assert!(UpstreamAddr::parse("s3.amazonaws.com").is_err()); // no port
    /// ```
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let text = input.trim();
        if let Some(parsed) = parse_ip_port(text) {
            let addr = parsed.map_err(|reason| AddressError::new("upstream", input, reason))?;
            if addr.port() == 0 {
                return Err(AddressError::new("upstream", input, PORT_ZERO));
            }
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
    #[must_use]
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

const PORT_ZERO: &str = "port 0 is not a port one can connect to";

/// Parses an IP literal with a port, zones included (`[fe80::1%eth0]:443`, `[fe80::1%2]:443`),
/// and refuses a link-local IPv6 address without one. `None` if `text` is not an IP literal
/// with a port (the callers then say what else is wrong).
fn parse_ip_port(text: &str) -> Option<Result<SocketAddr, String>> {
    let addr = match SocketAddr::from_str(text) {
        Ok(addr) => addr,
        Err(_) => match parse_named_zone(text)? {
            Ok(addr) => addr,
            Err(reason) => return Some(Err(reason)),
        },
    };
    if let SocketAddr::V6(v6) = addr
        && is_link_local(v6.ip())
        && v6.scope_id() == 0
    {
        return Some(Err(format!(
            "{} is a link-local address: give the interface it is on as its zone, e.g. \
             [{}%eth0]:{}",
            v6.ip(),
            v6.ip(),
            v6.port()
        )));
    }
    Some(Ok(addr))
}

/// `[v6%name]:port` with an interface name as the zone (the standard library parses only a
/// numeric zone). `None` if `text` does not have that shape.
fn parse_named_zone(text: &str) -> Option<Result<SocketAddr, String>> {
    let (inside, port) = text.strip_prefix('[')?.split_once("]:")?;
    let (ip, zone) = inside.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let Ok(port) = port.parse::<u16>() else {
        return Some(Err(format!(
            "port {port:?} is not a number from 0 to 65535"
        )));
    };
    if zone.is_empty() {
        return Some(Err(format!(
            "the zone after '%' is empty: name an interface, e.g. [{ip}%eth0]:{port}"
        )));
    }
    Some(match nix::net::if_::if_nametoindex(zone) {
        Ok(index) => Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, index))),
        Err(_) => Err(format!(
            "zone {zone:?}: this host has no network interface of that name"
        )),
    })
}

/// Whether `ip` is in fe80::/10, which needs a zone to mean anything.
fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
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
        return Err(PORT_ZERO.to_string());
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

/// Whom a client address counts as wherever the relay counts per client (pending lookups,
/// connections, shared rate limits): an IPv4 address (also written IPv4-mapped) as itself, an
/// IPv6 address by its /64 (a host is usually given a whole /64, so per address would be no
/// bound at all).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
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

    /// Hostile input 11: `127.0.0.1:0` was accepted as an upstream, and every connection then
    /// failed; `[::ffff:127.0.0.1]:P` was accepted as a listen address, and the bind failed
    /// with EINVAL.
    #[test]
    fn an_upstream_on_port_0_and_a_mapped_listen_address_are_refused() {
        for input in ["127.0.0.1:0", "[::1]:0"] {
            let e = UpstreamAddr::parse(input).unwrap_err();
            assert!(e.reason.contains("port 0"), "{input}: {e}");
        }
        let e = parse_listen_addr("[::ffff:127.0.0.1]:8443").unwrap_err();
        assert!(e.reason.contains("listen on 127.0.0.1:8443"), "{e}");
        // As an upstream it is an ordinary IPv4 destination.
        assert!(UpstreamAddr::parse("[::ffff:127.0.0.1]:8443").is_ok());
    }

    /// Hostile input 12: `[fe80::1%lo]:P` was refused with "IPv6 addresses go in brackets".
    #[test]
    fn zones_name_an_interface_or_give_its_index() {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let SocketAddr::V6(addr) = parse_listen_addr("[fe80::1%lo]:8443").unwrap() else {
            panic!("an IPv6 address")
        };
        assert_eq!((addr.scope_id(), addr.port()), (lo, 8443));
        let numeric = parse_listen_addr(&format!("[fe80::1%{lo}]:8443")).unwrap();
        assert_eq!(numeric, SocketAddr::V6(addr));
        assert_eq!(
            UpstreamAddr::parse("[fe80::2%lo]:443").unwrap(),
            UpstreamAddr::Ip(SocketAddr::V6(SocketAddrV6::new(
                "fe80::2".parse().unwrap(),
                443,
                0,
                lo
            )))
        );
        for (input, needle) in [
            ("[fe80::1%no-such-if0]:443", "no network interface"),
            ("[fe80::1%]:443", "zone after '%' is empty"),
            ("[fe80::1]:443", "link-local address: give the interface"),
            ("[fe80::1%lo]:http", "not a number"),
        ] {
            let e = parse_listen_addr(input).unwrap_err();
            assert!(e.reason.contains(needle), "{input}: {e}");
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
