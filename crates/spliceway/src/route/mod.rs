//! What a relay does, described: routes (listen addresses, an upstream) and the options of
//! their connections. Plain data with builders; nothing here does I/O. The relay turns a
//! [`Route`] into running state when it is built or reloaded (`relay/setup.rs`).

mod access;
mod address_policy;
mod group;
mod options;
mod protocol;
mod rate_limit;
mod resolution;
mod upstream;

use std::net::SocketAddr;

pub use access::AccessList;
pub use address_policy::{AddressPolicy, NameOrigin};
pub use group::{
    Balance, DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS, GroupError, HealthCheck, MAX_PROBE_BYTES,
    MAX_RISE_FALL, MAX_UPSTREAMS_PER_GROUP, MAX_WEIGHT, PassiveHealth, Probe, UpstreamGroup,
    UpstreamServer,
};
pub use options::{
    ConnectionOptions, DEFAULT_BULK_LOW_WATER_BYTES, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_COPY_BUFFER_BYTES, DEFAULT_HALF_CLOSE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PIPE_SIZE_BYTES, DEFAULT_PROXY_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Mode, Source,
    check_keepalive,
};
pub use protocol::{DEFAULT_UDP_IDLE_TIMEOUT, Protocol, UdpOptions};
pub use rate_limit::ConnectionLimitBy;
pub use rate_limit::{DEFAULT_BURST_TIME, MIN_DEFAULT_BURST, Rate, RateLimit};
pub use resolution::{LookupWithTtl, NegativeAnswer, Resolution};
pub use upstream::{ConnectTable, SniEntry, SniTable, Upstream};

use crate::address::UpstreamAddr;

/// A route: where to listen, where to relay to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) upstream: Upstream,
    pub(crate) options: ConnectionOptions,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_client: Option<usize>,
    pub(crate) access: AccessList,
    pub(crate) resolution: Option<Resolution>,
    pub(crate) address_policy: AddressPolicy,
    pub(crate) proxy_from: Option<AccessList>,
    pub(crate) protocol: Protocol,
    pub(crate) udp: UdpOptions,
}

impl Route {
    /// A route named `name` relaying to `upstream`; add listen addresses with
    /// [`Route::listen`].
    pub fn new(name: impl Into<String>, upstream: UpstreamAddr) -> Self {
        Route::with_upstream(name, Upstream::Fixed(upstream))
    }

    /// A route that relays each connection to the address its client originally dialled
    /// (interception by nftables `REDIRECT`/`DNAT` or `TPROXY`); only to `ranges`.
    pub fn original_destination(name: impl Into<String>, ranges: Vec<ipnet::IpNet>) -> Self {
        Route::with_upstream(name, Upstream::OriginalDestination).upstream_allow(ranges)
    }

    /// A route that relays the target of each client's HTTP `CONNECT` request, when `table`
    /// allows its name and `ranges` what it resolves to.
    pub fn http_connect(
        name: impl Into<String>,
        table: ConnectTable,
        ranges: Vec<ipnet::IpNet>,
    ) -> Self {
        Route::with_upstream(name, Upstream::HttpConnect(table)).upstream_allow(ranges)
    }

    /// A route that picks the upstream per connection from the TLS server name (SNI).
    pub fn sni(name: impl Into<String>, table: SniTable) -> Self {
        Route::with_upstream(name, Upstream::Sni(table))
    }

    /// A route that balances its connections over a group of upstreams, by their health.
    pub fn group(name: impl Into<String>, group: UpstreamGroup) -> Self {
        Route::with_upstream(name, Upstream::Group(group))
    }

    /// A route with the given upstream choice.
    pub fn with_upstream(name: impl Into<String>, upstream: Upstream) -> Self {
        Route {
            name: name.into(),
            listen: Vec::new(),
            upstream,
            options: ConnectionOptions::default(),
            max_connections: None,
            max_connections_per_client: None,
            access: AccessList::default(),
            resolution: None,
            address_policy: AddressPolicy::default(),
            proxy_from: None,
            protocol: Protocol::Tcp,
            udp: UdpOptions::default(),
        }
    }

    /// Admits upstream addresses in `ranges` that the default address policy refuses (see
    /// [`AddressPolicy`]): for example `169.254.0.0/16` for a route that must reach a
    /// link-local service by name.
    ///
    /// On a route where the client chooses the destination
    /// ([`Upstream::OriginalDestination`], [`Upstream::HttpConnect`]) the ranges are the only
    /// ones it may reach, and they are required: see [`AddressPolicy`].
    #[must_use]
    pub fn upstream_allow(mut self, ranges: Vec<ipnet::IpNet>) -> Self {
        self.address_policy = if self.upstream.client_chooses() {
            AddressPolicy::strict(ranges)
        } else {
            AddressPolicy::new(ranges)
        };
        self
    }

    /// Which resolved addresses this route's names may lead to.
    #[must_use]
    pub fn address_policy(&self) -> &AddressPolicy {
        &self.address_policy
    }

    /// Sets the allow and deny lists.
    #[must_use]
    pub fn access(mut self, access: AccessList) -> Self {
        self.access = access;
        self
    }

    /// Resolves this route's upstream names with `resolution` (default: the relay's, see
    /// [`RelayBuilder::resolver`](crate::RelayBuilder::resolver), else the system resolver).
    #[must_use]
    pub fn resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = Some(resolution);
        self
    }

    /// Adds a listen address (port 0 picks a free port; see
    /// [`Relay::local_addrs`](crate::Relay::local_addrs)).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Sets the connection options (mode, pipe size, timeouts, PROXY protocol ...): the one way
    /// to set them. Start from [`ConnectionOptions::default`] or from
    /// [`connection_options`](Self::connection_options) and change fields.
    #[must_use]
    pub fn options(mut self, options: ConnectionOptions) -> Self {
        self.options = options;
        self
    }

    /// The peers allowed to send a PROXY protocol header: the load balancers in front of the
    /// relay. A header's address is believed only from these; a connection from any other peer
    /// on a route that [accepts PROXY headers](ConnectionOptions::accept_proxy) is refused as soon as it is
    /// accepted, before a byte is read (reset, counted as denied, logged in the refusal
    /// summary). A route that accepts PROXY headers must name them:
    /// [`RelayBuilder::build`](crate::RelayBuilder::build) refuses one without, and "anyone"
    /// must be written out (`0.0.0.0/0` and `::/0`). An empty list is refused too.
    #[must_use]
    pub fn accept_proxy_from(mut self, peers: Vec<ipnet::IpNet>) -> Self {
        self.proxy_from = Some(AccessList {
            allow: peers,
            deny: Vec::new(),
        });
        self
    }

    /// The peers allowed to send a PROXY protocol header, if set
    /// ([`accept_proxy_from`](Self::accept_proxy_from)).
    #[must_use]
    pub fn proxy_peers(&self) -> Option<&[ipnet::IpNet]> {
        self.proxy_from.as_ref().map(|list| list.allow.as_slice())
    }

    /// Limits the connections this route holds at once; at the limit it stops accepting and
    /// new clients wait in the kernel's backlog.
    #[must_use]
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// Limits the connections one client address holds at once on this route (an IPv6
    /// client by its /64; the address a trusted PROXY header gives when there is one): a
    /// client at its limit has a new connection reset as soon as it is accepted (counted as
    /// refused, logged in the refusal summary), so one host cannot take every slot.
    #[must_use]
    pub fn max_connections_per_client(mut self, limit: usize) -> Self {
        self.max_connections_per_client = Some(limit);
        self
    }

    /// The per-client connection limit, if any.
    #[must_use]
    pub fn client_connection_limit(&self) -> Option<usize> {
        self.max_connections_per_client
    }

    /// Relays this transport (default [`Protocol::Tcp`]). A UDP route relays datagrams: each
    /// client address is a session with its own connected upstream socket (see
    /// [`udp_options`](Self::udp_options)); it has a fixed upstream and no PROXY protocol.
    #[must_use]
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the session settings of a UDP route (ignored by TCP routes).
    #[must_use]
    pub fn udp_options(mut self, options: UdpOptions) -> Self {
        self.udp = options;
        self
    }

    /// The transport this route relays.
    #[must_use]
    pub fn transport(&self) -> Protocol {
        self.protocol
    }

    /// The session settings of a UDP route.
    #[must_use]
    pub fn session_options(&self) -> &UdpOptions {
        &self.udp
    }

    /// The route's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured listen addresses.
    #[must_use]
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Where connections go.
    #[must_use]
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The allow and deny lists.
    #[must_use]
    pub fn access_list(&self) -> &AccessList {
        &self.access
    }

    /// The resolver this route's names are looked up with, when it has its own
    /// ([`resolution`](Self::resolution)); `None`: the relay's.
    #[must_use]
    pub fn resolver(&self) -> Option<&Resolution> {
        self.resolution.as_ref()
    }

    /// The connection limit, if any.
    #[must_use]
    pub fn connection_limit(&self) -> Option<usize> {
        self.max_connections
    }

    /// The connection options.
    #[must_use]
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.options
    }
}
