//! What a relay does: routes (listen addresses, an upstream) and the options of their connections.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::address::UpstreamAddr;
use crate::sni::NamePattern;

/// Default pipe size per direction. Chosen by measurement (`cargo bench -p spliceway-benches
/// --bench engine` and `spliceway bench --peer`, see `docs/benchmarks.md`): 512 KiB cost
/// 15-20% less relay CPU per GiB than 256 KiB, and 1 MiB no less than 512 KiB; 512 KiB also
/// leaves room for 128 busy pipes under the kernel's default per-user pipe allowance
/// (`pipe-user-pages-soft`, 64 MiB) when the relay does not run as root.
pub const DEFAULT_PIPE_SIZE_BYTES: usize = 512 * 1024;
/// Default user-space buffer per direction in copy mode.
pub const DEFAULT_COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Default time allowed to resolve the upstream and establish the TCP connection to it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent in both directions before it is reset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time one direction may stay silent after the other has ended.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default low-water mark for bulk transfers (see `ConnectionOptions::bulk_low_water`): off.
/// Measured on shaped veth links it saved no CPU (data already arrives in bursts of ~45 KiB
/// per wake-up) and cost some on loopback; see `docs/benchmarks.md`.
pub const DEFAULT_BULK_LOW_WATER_BYTES: usize = 0;
/// Default number of upstream addresses tried before the client is closed.
pub const DEFAULT_CONNECT_ATTEMPTS: usize = 3;

/// Default time a client of an SNI route has to send its TLS ClientHello.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How bytes are moved between the two sockets of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Kernel to kernel with splice(2) through a pipe per direction (the default).
    #[default]
    Splice,
    /// Through a user-space buffer with `recv`/`send`: what copying relays (stone, socat) do.
    Copy,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Splice => "splice",
            Mode::Copy => "copy",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "splice" => Ok(Mode::Splice),
            "copy" => Ok(Mode::Copy),
            other => Err(format!("unknown mode {other:?} (expected splice or copy)")),
        }
    }
}

/// Options of every connection of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Splice (default) or copy.
    pub mode: Mode,
    /// Requested pipe size per direction in splice mode, in bytes (rounded up by the kernel to a
    /// power-of-two number of pages).
    pub pipe_size: usize,
    /// User-space buffer per direction in copy mode, in bytes.
    pub copy_buffer_size: usize,
    /// If splice turns out to be unsupported for a connection's sockets, reset the connection
    /// instead of falling back to copying.
    pub require_splice: bool,
    /// Time allowed to resolve the upstream and connect to it (per address tried).
    pub connect_timeout: Duration,
    /// Upstream addresses tried (in turn, starting from a rotating one) before giving up.
    pub connect_attempts: usize,
    /// A connection with no byte moving in either direction for this long is reset.
    pub idle_timeout: Duration,
    /// After one direction has ended, the other may stay silent this long before the
    /// connection is reset.
    pub half_close_timeout: Duration,
    /// `TCP_NODELAY` on both sockets (default on: a relay must not add Nagle delays).
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets (off by default).
    pub keepalive: Option<Duration>,
    /// TCP congestion control (`TCP_CONGESTION`, e.g. `"cubic"`) on both sockets; `None`
    /// keeps the system's default (`net.ipv4.tcp_congestion_control`). The relay sends on both
    /// sockets, so this is the algorithm of both of its hops' sending sides. On a host whose
    /// default is BBR, `"cubic"` halved the relay's CPU per GiB over loopback, where BBR's
    /// pacing timers cost more than they help (measured in `docs/benchmarks.md`).
    pub congestion: Option<String>,
    /// How long resolved upstream addresses are reused before resolving again.
    pub resolve_cache_ttl: Duration,
    /// `SO_RCVLOWAT` set on a direction's source once it carries a bulk transfer, in bytes
    /// (0 or 1: off). Fewer, larger wake-ups at link speed; see `low_water.rs`.
    pub bulk_low_water: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            mode: Mode::Splice,
            pipe_size: DEFAULT_PIPE_SIZE_BYTES,
            copy_buffer_size: DEFAULT_COPY_BUFFER_BYTES,
            require_splice: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            half_close_timeout: DEFAULT_HALF_CLOSE_TIMEOUT,
            nodelay: true,
            keepalive: None,
            congestion: None,
            resolve_cache_ttl: Duration::from_secs(10),
            bulk_low_water: DEFAULT_BULK_LOW_WATER_BYTES,
        }
    }
}

impl ConnectionOptions {
    /// Checks the options as [`RelayBuilder::build`](crate::RelayBuilder::build) does for
    /// route `route`: the error, in words meant for the user, names the route.
    ///
    /// # Errors
    ///
    /// A size or time out of range, or a congestion control this process cannot set.
    pub fn validate(&self, route: &str) -> Result<(), String> {
        let fail = |what: &str| Err(format!("route {route:?}: {what}"));
        if self.pipe_size == 0 || self.pipe_size > (1 << 30) {
            return fail("pipe size must be between 1 byte and 1 GiB");
        }
        if self.copy_buffer_size == 0 || self.copy_buffer_size > (1 << 30) {
            return fail("copy buffer size must be between 1 byte and 1 GiB");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect timeout must be more than zero");
        }
        if self.idle_timeout.is_zero() {
            return fail("idle timeout must be more than zero");
        }
        if self.half_close_timeout.is_zero() {
            return fail("half-close timeout must be more than zero");
        }
        if self.connect_attempts == 0 {
            return fail("connect attempts must be at least 1");
        }
        if let Some(name) = &self.congestion {
            crate::upstream::check_congestion(name).map_err(|e| format!("route {route:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Where a route's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Always this upstream.
    Fixed(UpstreamAddr),
    /// Chosen per connection from the server name in the client's TLS ClientHello.
    Sni(SniTable),
}

/// One allowed server name (or wildcard) and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniEntry {
    /// The names this entry accepts.
    pub pattern: NamePattern,
    /// Where to relay; `None` relays to the name the client asked for, on the port the client
    /// connected to.
    pub upstream: Option<UpstreamAddr>,
}

/// The SNI table of a route: allowed names, in order (the first match wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniTable {
    pub(crate) entries: Vec<SniEntry>,
    pub(crate) hello_timeout: Duration,
}

impl SniTable {
    /// A table of entries, tried in order.
    pub fn new(entries: Vec<SniEntry>) -> Self {
        SniTable {
            entries,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }

    /// How long a client may take to send its whole ClientHello (it may arrive in pieces).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// The entries.
    pub fn entries(&self) -> &[SniEntry] {
        &self.entries
    }

    /// How long a client may take to send its whole ClientHello (set with
    /// [`SniTable::hello_timeout`]).
    pub fn client_hello_timeout(&self) -> Duration {
        self.hello_timeout
    }

    /// Where a connection for `server_name`, received on `listen_port`, goes; `None` if the
    /// name is not allowed.
    pub fn choose(&self, server_name: &str, listen_port: u16) -> Option<UpstreamAddr> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.pattern.matches(server_name))?;
        match &entry.upstream {
            Some(upstream) => Some(upstream.clone()),
            None => UpstreamAddr::parse(&format!(
                "{}:{listen_port}",
                server_name.trim_end_matches('.')
            ))
            .ok(),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Fixed(addr) => write!(f, "{addr}"),
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
        }
    }
}

/// Allow and deny lists of client networks.
///
/// A client is refused if a deny entry contains its address, or if there are allow entries
/// and none contains it. IPv4-mapped IPv6 addresses are matched as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Networks allowed (empty: everyone not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused (checked first).
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may connect; `Err` says which rule refused it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(format!("{ip} is in deny {net}"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(format!("{ip} is not in the allow list"));
        }
        Ok(())
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// A lookup that also reports how long its answer may be cached.
pub type LookupWithTtl =
    dyn Fn(&str, u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)> + Send + Sync;

/// How a route resolves upstream host names.
#[derive(Clone)]
pub struct Resolution {
    pub(crate) lookup: Arc<LookupWithTtl>,
    pub(crate) label: String,
}

impl Resolution {
    /// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS as nsswitch says). Answers
    /// are cached for the route's `resolve_cache_ttl`.
    pub fn system() -> Self {
        Resolution {
            lookup: Arc::new(|host: &str, port| {
                Ok((crate::resolver::system_lookup(host, port)?, None))
            }),
            label: "system".into(),
        }
    }

    /// A custom lookup; answers are cached for the route's `resolve_cache_ttl`.
    pub fn custom(
        label: impl Into<String>,
        lookup: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        Resolution {
            lookup: Arc::new(move |host: &str, port| Ok((lookup(host, port)?, None))),
            label: label.into(),
        }
    }

    /// A lookup that reports record lifetimes (a DNS client honouring TTLs): answers are
    /// cached for that long instead of the route's `resolve_cache_ttl`.
    pub fn with_ttl(
        label: impl Into<String>,
        lookup: impl Fn(&str, u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Resolution {
            lookup: Arc::new(lookup),
            label: label.into(),
        }
    }

    /// A short name for logs (`system`, or the label given).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Looks `host` up once, bypassing the relay's cache: the addresses (with `port`), and how
    /// long the answer may be cached if the lookup reports it.
    ///
    /// # Errors
    ///
    /// Whatever the lookup reports.
    pub fn lookup(&self, host: &str, port: u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)> {
        (self.lookup)(host, port)
    }

    /// Identity of the lookup, for keying caches (two routes sharing a `Resolution` share
    /// cached answers).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.lookup) as *const () as usize
    }
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Resolution {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Resolution {}

/// A route: where to listen, where to relay to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) upstream: Upstream,
    pub(crate) options: ConnectionOptions,
    pub(crate) max_connections: Option<usize>,
    pub(crate) access: AccessList,
    pub(crate) resolution: Option<Resolution>,
}

impl Route {
    /// A route named `name` relaying to `upstream`; add listen addresses with
    /// [`Route::listen`].
    pub fn new(name: impl Into<String>, upstream: UpstreamAddr) -> Self {
        Route::with_upstream(name, Upstream::Fixed(upstream))
    }

    /// A route that picks the upstream per connection from the TLS server name (SNI).
    pub fn sni(name: impl Into<String>, table: SniTable) -> Self {
        Route::with_upstream(name, Upstream::Sni(table))
    }

    /// A route with the given upstream choice.
    pub fn with_upstream(name: impl Into<String>, upstream: Upstream) -> Self {
        Route {
            name: name.into(),
            listen: Vec::new(),
            upstream,
            options: ConnectionOptions::default(),
            max_connections: None,
            access: AccessList::default(),
            resolution: None,
        }
    }

    /// Sets the allow and deny lists.
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Resolves this route's upstream names with `resolution` (default: the relay's, see
    /// [`RelayBuilder::resolver`](crate::RelayBuilder::resolver), else the system resolver).
    pub fn resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = Some(resolution);
        self
    }

    /// Adds a listen address (port 0 picks a free port; see
    /// [`Relay::local_addrs`](crate::Relay::local_addrs)).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Replaces the connection options.
    pub fn options(mut self, options: ConnectionOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the mode (splice or copy).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Sets the pipe size per direction, in bytes.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.options.pipe_size = bytes;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.idle_timeout = timeout;
        self
    }

    /// Sets the half-close timeout.
    pub fn half_close_timeout(mut self, timeout: Duration) -> Self {
        self.options.half_close_timeout = timeout;
        self
    }

    /// Limits the connections this route holds at once; at the limit it stops accepting and
    /// new clients wait in the kernel's backlog.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured listen addresses.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Where connections go.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The allow and deny lists.
    pub fn access_list(&self) -> &AccessList {
        &self.access
    }

    /// The connection limit, if any.
    pub fn connection_limit(&self) -> Option<usize> {
        self.max_connections
    }

    /// The connection options.
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let acl = AccessList {
            allow: vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            deny: vec![net("10.9.0.0/16")],
        };
        assert!(acl.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(
            acl.check("10.9.2.3".parse().unwrap())
                .unwrap_err()
                .contains("deny")
        );
        assert!(
            acl.check("192.168.1.1".parse().unwrap())
                .unwrap_err()
                .contains("allow")
        );
        assert!(acl.check("2001:db8::5".parse().unwrap()).is_ok());
        // An IPv4 client seen through an IPv6 socket is matched as IPv4.
        assert!(acl.check("::ffff:10.1.2.3".parse().unwrap()).is_ok());
        assert!(
            AccessList::default()
                .check("1.2.3.4".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn congestion_control_is_checked_when_the_route_is_built() {
        let with = |name: &str| ConnectionOptions {
            congestion: Some(name.to_string()),
            ..ConnectionOptions::default()
        };
        // reno is built into every kernel and allowed to every user.
        assert_eq!(with("reno").validate("r"), Ok(()));
        let err = with("no-such-cc").validate("r").unwrap_err();
        assert!(
            err.contains("route \"r\"") && err.contains("not available"),
            "{err}"
        );
        let err = with("").validate("r").unwrap_err();
        assert!(err.contains("not a valid name"), "{err}");
        let err = with("sixteen-chars-xx").validate("r").unwrap_err();
        assert!(err.contains("not a valid name"), "{err}");
    }

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
