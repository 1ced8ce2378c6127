//! Where a route's connections go: a fixed upstream, a table of TLS server names (SNI), the
//! address the client originally dialled (interception), or the target of an HTTP CONNECT.

use std::fmt;
use std::time::Duration;

use crate::address::UpstreamAddr;
use crate::http_connect::ConnectPattern;
use crate::sni::NamePattern;

use super::address_policy::NameOrigin;
use super::group::UpstreamGroup;
use super::options::{DEFAULT_HELLO_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

/// Where a route's connections go.
///
/// Non-exhaustive: other ways of choosing an upstream may come.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upstream {
    /// Always this upstream.
    Fixed(UpstreamAddr),
    /// Chosen per connection from the server name in the client's TLS ClientHello.
    Sni(SniTable),
    /// Chosen per connection among several, balanced, by their health (see [`UpstreamGroup`]).
    Group(UpstreamGroup),
    /// The address the client originally dialled, before the network sent its connection to
    /// the relay: `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST`) after an nftables/iptables
    /// `REDIRECT` or `DNAT`, or the accepted socket's local address on a
    /// [transparent](crate::ConnectionOptions::transparent) listener that `TPROXY` delivers to.
    /// The route must list the ranges it may reach ([`Route::upstream_allow`](crate::Route::upstream_allow)):
    /// the relay refuses to build one without.
    OriginalDestination,
    /// The target of the client's HTTP `CONNECT host:port` request, when the table allows it.
    /// The route must also list the ranges it may reach (`upstream_allow`).
    HttpConnect(ConnectTable),
}

impl Upstream {
    /// Whether the client chooses where its connection goes (original destination, CONNECT):
    /// such a route relays only to its `upstream_allow` ranges.
    #[must_use]
    pub fn client_chooses(&self) -> bool {
        matches!(
            self,
            Upstream::OriginalDestination | Upstream::HttpConnect(_)
        )
    }
}

/// The names a CONNECT route relays to, and how long a client has to send its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTable {
    pub(crate) allow: Vec<ConnectPattern>,
    pub(crate) request_timeout: Duration,
}

impl ConnectTable {
    /// Requests whose `host:port` matches one of `allow` are relayed (after the address policy
    /// admits what the host resolves to); any other is answered `403`.
    #[must_use]
    pub fn new(allow: Vec<ConnectPattern>) -> Self {
        ConnectTable {
            allow,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// How long a client may take to send its whole request (answered `400` after that).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The allowed targets.
    #[must_use]
    pub fn allowed(&self) -> &[ConnectPattern] {
        &self.allow
    }

    /// How long a client may take to send its whole request.
    #[must_use]
    pub fn client_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether a request for `host:port` is allowed.
    #[must_use]
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|p| p.matches(host, port))
    }
}

/// One allowed server name (or wildcard) and where it goes. Built with [`SniEntry::new`]; the
/// fields are public to read, and non-exhaustive so that an entry can gain options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SniEntry {
    /// The names this entry accepts.
    pub pattern: NamePattern,
    /// Where to relay; `None` relays to the name the client asked for, on the port the client
    /// connected to.
    pub upstream: Option<UpstreamAddr>,
}

impl SniEntry {
    /// Names matching `pattern` go to `upstream`; `None` relays to the name the client asked
    /// for, on the port the client connected to.
    #[must_use]
    pub fn new(pattern: NamePattern, upstream: Option<UpstreamAddr>) -> Self {
        SniEntry { pattern, upstream }
    }
}

/// The SNI table of a route: allowed names, in order (the first match wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniTable {
    pub(crate) entries: Vec<SniEntry>,
    pub(crate) hello_timeout: Duration,
}

impl SniTable {
    /// A table of entries, tried in order.
    #[must_use]
    pub fn new(entries: Vec<SniEntry>) -> Self {
        SniTable {
            entries,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }

    /// How long a client may take to send its whole ClientHello (it may arrive in pieces).
    #[must_use]
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// The entries.
    #[must_use]
    pub fn entries(&self) -> &[SniEntry] {
        &self.entries
    }

    /// How long a client may take to send its whole ClientHello (set with
    /// [`SniTable::hello_timeout`]).
    #[must_use]
    pub fn client_hello_timeout(&self) -> Duration {
        self.hello_timeout
    }

    /// Where a connection for `server_name`, received on `listen_port`, goes; `None` if the
    /// name is not allowed.
    #[must_use]
    pub fn choose(&self, server_name: &str, listen_port: u16) -> Option<UpstreamAddr> {
        self.choose_with_origin(server_name, listen_port)
            .map(|(upstream, _)| upstream)
    }

    /// As [`SniTable::choose`], with where the upstream's name came from: the entry, or the
    /// client (an entry without an upstream relays to the name the client asked for).
    pub(crate) fn choose_with_origin(
        &self,
        server_name: &str,
        listen_port: u16,
    ) -> Option<(UpstreamAddr, NameOrigin)> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.pattern.matches(server_name))?;
        match &entry.upstream {
            Some(upstream) => Some((upstream.clone(), NameOrigin::Configured)),
            None => UpstreamAddr::parse(&format!(
                "{}:{listen_port}",
                server_name.trim_end_matches('.')
            ))
            .ok()
            .map(|upstream| (upstream, NameOrigin::Client)),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Fixed(addr) => write!(f, "{addr}"),
            Upstream::Group(group) => write!(f, "{group}"),
            Upstream::Sni(table) => {
                f.write_str("by SNI: ")?;
                for (i, e) in table.entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &e.upstream {
                        Some(up) => write!(f, "{} -> {up}", e.pattern)?,
                        None => write!(f, "{} -> (the name)", e.pattern)?,
                    }
                }
                Ok(())
            }
            Upstream::OriginalDestination => f.write_str("the original destination"),
            Upstream::HttpConnect(table) => {
                f.write_str("by HTTP CONNECT: ")?;
                for (i, p) in table.allow.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_table_chooses_in_order_and_defaults_to_the_name() {
        let table = SniTable::new(vec![
            SniEntry {
                pattern: "*.s3.ap-northeast-1.amazonaws.com".parse().unwrap(),
                upstream: Some(UpstreamAddr::parse("s3-ap-northeast-1.amazonaws.com:443").unwrap()),
            },
            SniEntry {
                pattern: "example.com".parse().unwrap(),
                upstream: None,
            },
        ]);
        assert_eq!(
            table
                .choose("bucket.s3.ap-northeast-1.amazonaws.com", 443)
                .unwrap()
                .to_string(),
            "s3-ap-northeast-1.amazonaws.com:443"
        );
        assert_eq!(
            table.choose("Example.com.", 8443).unwrap().to_string(),
            "example.com:8443"
        );
        assert!(table.choose("evil.com", 443).is_none());
    }
}
