//! A route as the workers run it: its settings, the addresses actually bound, and the counters
//! that survive reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::log_limit::{LogLimit, UPSTREAM_REFUSAL_LOG_PERIOD};
use crate::balance::GroupState;
use crate::rate_limit::RouteLimits;
use crate::resolver::{Target, is_local};
use crate::route::{AccessList, AddressPolicy, ConnectionOptions, Resolution, Upstream};
use crate::stats::Stats;

/// What a route keeps across configuration reloads: its counters and its connection count.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    pub(crate) stats: Stats,
    pub(crate) active: AtomicUsize,
    /// The route's log of refused PROXY protocol headers (one line a second).
    pub(crate) proxy_error_log: LogLimit,
    /// The route's log of upstream addresses refused by the address policy or as a loop into
    /// the relay (one line a second): clients choose the names an SNI route resolves, so a
    /// client could otherwise write a line per connection.
    pub(crate) upstream_refusal_log: LogLimit,
    /// The route's bandwidth limits, shared buckets and client table: kept across reloads,
    /// which change the limits in place (`RouteState::apply_limits`).
    pub(crate) limits: Arc<RouteLimits>,
}

impl RouteCounters {
    /// Whether a refused upstream address may be logged now (with how many were held back),
    /// at most once every [`UPSTREAM_REFUSAL_LOG_PERIOD`].
    pub(crate) fn admit_upstream_refusal_log(&self, now: std::time::Instant) -> Option<u64> {
        self.upstream_refusal_log
            .admit(now, UPSTREAM_REFUSAL_LOG_PERIOD)
    }
}

/// A route as the workers run it. A reload makes a new `RouteState` (new connections use it);
/// connections already open keep the one they started with.
#[derive(Debug)]
pub(crate) struct RouteState {
    pub(crate) name: String,
    pub(crate) upstream: Upstream,
    pub(crate) options: ConnectionOptions,
    pub(crate) access: AccessList,
    /// The peers whose PROXY headers are believed (`Route::accept_proxy_from`); `None`
    /// believes no one.
    pub(crate) proxy_from: Option<AccessList>,
    pub(crate) resolution: Resolution,
    /// Which resolved addresses the route's names may lead to.
    pub(crate) address_policy: AddressPolicy,
    /// The addresses actually bound (port 0 replaced by the port the kernel chose).
    pub(crate) listen: Vec<SocketAddr>,
    /// The listen addresses as configured (port 0 kept), so that a reload of an unchanged
    /// route keeps the port the kernel chose instead of binding a new one.
    pub(crate) configured_listen: Vec<SocketAddr>,
    /// Every address the relay listens on, all routes together: an upstream connection to any
    /// of them would loop back into the relay.
    pub(crate) relay_listeners: Arc<[SocketAddr]>,
    /// For an IP-literal upstream, its one target (no resolution needed).
    pub(crate) literal_targets: Option<Arc<[Target]>>,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) max_connections: Option<usize>,
    /// `max_connections_per_client`.
    pub(crate) max_connections_per_client: Option<usize>,
    /// Rotates the first address tried, spreading connections over all resolved addresses.
    pub(crate) next_target: AtomicUsize,
    /// For a route with several upstreams, the group as it runs: its balance and the health
    /// shared by every worker and the health checker.
    pub(crate) group: Option<Arc<GroupState>>,
}

impl RouteState {
    pub(crate) fn stats(&self) -> &Stats {
        &self.counters.stats
    }

    pub(crate) fn active(&self) -> &AtomicUsize {
        &self.counters.active
    }

    /// Makes this state's rate limits and per-client connection limit the ones every
    /// connection of the route follows, open ones included (at build, and when a reload
    /// installs it).
    pub(crate) fn apply_limits(&self) {
        self.counters
            .limits
            .configure(&self.options, self.max_connections_per_client);
    }
}

/// The one of `listen` that a connection to `upstream` would reach, if any: the same address,
/// or the same port on a wildcard listener of the same family when `upstream` is an address
/// of this host (one of its interfaces', from `getifaddrs`). It is what the relay refuses as a
/// self-loop. An IPv4 address written as IPv6 (`[::ffff:127.0.0.1]:443`) is taken as the IPv4
/// address it reaches.
///
/// A configuration checker can use it to find routes that relay to their own listener, or to
/// each other's, before anything is bound.
///
/// ```
/// let listen = ["0.0.0.0:8443".parse().unwrap(), "10.9.9.9:9443".parse().unwrap()];
/// assert_eq!(
///     spliceway::check::reached_listener(&listen, "127.0.0.1:8443".parse().unwrap()),
///     Some(listen[0])
/// );
/// assert_eq!(spliceway::check::reached_listener(&listen, "127.0.0.1:9443".parse().unwrap()), None);
/// ```
#[must_use]
pub fn reached_listener(listen: &[SocketAddr], upstream: SocketAddr) -> Option<SocketAddr> {
    let addr = SocketAddr::new(upstream.ip().to_canonical(), upstream.port());
    let target = Target {
        addr,
        local: is_local(addr.ip()),
    };
    loops_back(listen, &target)
}

/// The listening address `target` would connect back to, if it is one of `listen`: the same
/// address, or the same port on a wildcard listener when the target is an address of this host.
pub(crate) fn loops_back(listen: &[SocketAddr], target: &Target) -> Option<SocketAddr> {
    listen.iter().copied().find(|listen| {
        listen.port() == target.addr.port()
            && listen.is_ipv4() == target.addr.is_ipv4()
            && (listen.ip() == target.addr.ip() || (listen.ip().is_unspecified() && target.local))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(listen: &[&str]) -> RouteState {
        RouteState {
            name: "r".into(),
            upstream: Upstream::Fixed(
                crate::address::UpstreamAddr::parse("example.com:443").unwrap(),
            ),
            options: ConnectionOptions::default(),
            access: AccessList::default(),
            proxy_from: None,
            resolution: Resolution::system(),
            address_policy: AddressPolicy::default(),
            listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
            configured_listen: Vec::new(),
            relay_listeners: Arc::from(Vec::new()),
            literal_targets: None,
            counters: Arc::default(),
            max_connections: None,
            max_connections_per_client: None,
            next_target: AtomicUsize::new(0),
            group: None,
        }
    }

    fn target(addr: &str, local: bool) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            local,
        }
    }

    #[test]
    fn detects_connecting_to_its_own_listener() {
        let r = route(&["0.0.0.0:443", "[::]:443"]);
        assert!(loops_back(&r.listen, &target("10.0.0.5:443", true)).is_some());
        assert!(loops_back(&r.listen, &target("[::1]:443", true)).is_some());
        assert!(loops_back(&r.listen, &target("52.219.0.1:443", false)).is_none());
        assert!(loops_back(&r.listen, &target("10.0.0.5:8443", true)).is_none());
        let r = route(&["127.0.0.1:8080"]);
        assert!(loops_back(&r.listen, &target("127.0.0.1:8080", true)).is_some());
        assert!(loops_back(&r.listen, &target("127.0.0.2:8080", true)).is_none());
    }
}
