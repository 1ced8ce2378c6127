//! Seeing the live connections and closing some: what
//! [`RelayHandle::connections`](crate::RelayHandle::connections) and
//! [`RelayHandle::close_connections`](crate::RelayHandle::close_connections) return and take.
//!
//! A listing is gathered through the workers' mailboxes: each worker, between two turns of its
//! loop, looks at its own connections (state it already keeps: phase, bytes each direction has
//! written), filters them and keeps at most the `limit` the caller asked for, so that nothing
//! on the per-byte path changes and nothing is locked while bytes move.
//!
//! Rates come from a sample each connection keeps of its own byte counts: when a listing finds
//! the sample at least [`RATE_WINDOW`] old, the rate is the difference over that time and the
//! sample moves on; a younger sample gives the rate computed last time. So a connection costs
//! nothing for rates unless it is listed, and an observer looking every second (`spliceway
//! top`) sees rates over the last second. Why not a periodic tick in the worker: the workers
//! sleep in `epoll_wait` when nothing happens, and waking 10,000 connections' worth of samples
//! every second for nobody would be work on an idle relay. Why not diff two listings on the
//! control side: a single `spliceway connections` would then have to wait a whole window.
//! The first listing of a connection gives its average over its life.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::route::Mode;

/// The shortest time a rate is measured over: a listing sooner than this after the previous
/// one repeats the previous rate rather than dividing by a few milliseconds.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How long [`RelayHandle::connections`](crate::RelayHandle::connections) waits for the
/// workers' answers (a worker answers between two turns of its loop: at once unless it is
/// stuck).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a live connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ConnectionPhase {
    /// Waiting for the client's PROXY protocol header.
    AwaitingHeader,
    /// Waiting for the client's TLS ClientHello (SNI routes).
    AwaitingHello,
    /// Waiting for the client's HTTP CONNECT request (`http-connect` routes).
    AwaitingRequest,
    /// Looking up the upstream's addresses.
    Resolving,
    /// Connecting to the upstream.
    Connecting,
    /// Relaying both ways.
    Relaying,
    /// Relaying; one direction has passed end of stream.
    HalfClosed,
}

impl ConnectionPhase {
    /// The phase's name as `spliceway connections` prints it (and its JSON carries).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionPhase::AwaitingHeader => "awaiting-header",
            ConnectionPhase::AwaitingHello => "awaiting-hello",
            ConnectionPhase::AwaitingRequest => "awaiting-request",
            ConnectionPhase::Resolving => "resolving",
            ConnectionPhase::Connecting => "connecting",
            ConnectionPhase::Relaying => "relaying",
            ConnectionPhase::HalfClosed => "half-closed",
        }
    }
}

impl std::fmt::Display for ConnectionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live connection, as a worker saw it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id (the `id` of its log lines).
    pub id: u64,
    /// Its route's name.
    pub route: String,
    /// The client: the socket's peer, or the address its PROXY header gave.
    pub client: SocketAddr,
    /// The load balancer the client came through, when a PROXY header gave the client.
    pub via: Option<SocketAddr>,
    /// The upstream address it is connected (or connecting) to; `None` before that.
    pub upstream: Option<SocketAddr>,
    /// Where it is.
    pub phase: ConnectionPhase,
    /// Time since it was accepted.
    pub age: Duration,
    /// Bytes written to the upstream (client -> upstream).
    pub bytes_up: u64,
    /// Bytes written to the client (upstream -> client).
    pub bytes_down: u64,
    /// Bytes a second client -> upstream, over the last [`RATE_WINDOW`] or more (see the module).
    pub rate_up: f64,
    /// Bytes a second upstream -> client.
    pub rate_down: f64,
    /// How its bytes move (a splice connection that fell back to copying says copy).
    pub mode: Mode,
}

/// What a listing is ordered by (largest first, oldest first for age).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SortBy {
    /// Oldest first.
    #[default]
    Age,
    /// Most bytes (both ways together) first.
    Bytes,
    /// Fastest (both ways together) first.
    Rate,
}

/// Which connections a listing or a close is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionFilter {
    /// Only this route's.
    pub route: Option<String>,
    /// Only clients in this network (the client address, PROXY-given when there is one).
    pub client: Option<IpNet>,
    /// Only these ids (empty: any).
    pub ids: Vec<u64>,
}

impl ConnectionFilter {
    /// Every connection.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Only connection `id`s.
    #[must_use]
    pub fn ids(ids: Vec<u64>) -> Self {
        ConnectionFilter {
            ids,
            ..Self::default()
        }
    }

    /// Only `route`'s connections.
    #[must_use]
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Only clients in `net`.
    #[must_use]
    pub fn client(mut self, net: IpNet) -> Self {
        self.client = Some(net);
        self
    }

    /// Whether it selects nothing in particular (a close refuses that: it would reset all).
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.route.is_none() && self.client.is_none() && self.ids.is_empty()
    }

    /// Whether it selects a UDP session of `route` from `client` (sessions have no ids: a
    /// filter of ids is about TCP connections only).
    pub(crate) fn matches_session(&self, route: &str, client: SocketAddr) -> bool {
        self.ids.is_empty()
            && self.route.as_deref().is_none_or(|r| r == route)
            && self
                .client
                .is_none_or(|net| net.contains(&canonical(client.ip())))
    }

    pub(crate) fn matches(&self, id: u64, route: &str, client: SocketAddr) -> bool {
        (self.ids.is_empty() || self.ids.contains(&id))
            && self.route.as_deref().is_none_or(|r| r == route)
            && self
                .client
                .is_none_or(|net| net.contains(&canonical(client.ip())))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (dual-stack listeners).
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// A listing's question: which connections, in what order, how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionQuery {
    /// Which connections.
    pub filter: ConnectionFilter,
    /// In what order.
    pub sort: SortBy,
    /// At most this many (`None`: all). Each worker keeps only this many, so a listing
    /// allocates in proportion to it.
    pub limit: Option<usize>,
}

impl ConnectionQuery {
    /// A query for `filter`'s connections, ordered by `sort`, at most `limit`.
    #[must_use]
    pub fn new(filter: ConnectionFilter, sort: SortBy, limit: Option<usize>) -> Self {
        ConnectionQuery {
            filter,
            sort,
            limit,
        }
    }
}

/// A route's live connections, summed (every open connection, whatever the filter).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RouteActivity {
    /// The route's name.
    pub route: String,
    /// Its connections open now.
    pub open: usize,
    /// Their bytes each way so far.
    pub bytes_up: u64,
    /// Bytes upstream -> client.
    pub bytes_down: u64,
    /// Their rates summed, bytes a second.
    pub rate_up: f64,
    /// Upstream -> client.
    pub rate_down: f64,
}

/// One open UDP session (a client address of a UDP route, with its own upstream socket), as
/// the UDP worker saw it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UdpSessionInfo {
    /// Its route's name.
    pub route: String,
    /// The client's address (the source of its datagrams).
    pub client: SocketAddr,
    /// The upstream address its socket is connected to.
    pub upstream: SocketAddr,
    /// Time since its first datagram.
    pub age: Duration,
    /// Time since its last datagram either way (it ends at the route's `udp_idle_timeout`).
    pub idle: Duration,
    /// Datagrams sent to the upstream (client -> upstream).
    pub datagrams_up: u64,
    /// Payload bytes sent to the upstream.
    pub bytes_up: u64,
    /// Datagrams sent to the client (upstream -> client).
    pub datagrams_down: u64,
    /// Payload bytes sent to the client.
    pub bytes_down: u64,
}

/// What [`RelayHandle::connections`](crate::RelayHandle::connections) returns.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ConnectionList {
    /// The connections asked for, in the order asked, at most the limit.
    pub connections: Vec<ConnectionInfo>,
    /// How many matched the filter (before the limit).
    pub matched: usize,
    /// Every route with live connections, summed.
    pub routes: Vec<RouteActivity>,
    /// The UDP sessions the filter selects (by route and client; a filter of connection ids
    /// selects none), oldest first for [`SortBy::Age`], else most bytes first (sessions have
    /// no rates), at most the limit.
    pub udp_sessions: Vec<UdpSessionInfo>,
    /// How many UDP sessions matched the filter (before the limit).
    pub udp_matched: usize,
}

/// A listing or close could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserveError {
    /// A worker did not answer within [`ANSWER_TIMEOUT`].
    NoAnswer,
    /// A close named no connection at all ([`ConnectionFilter::is_everything`]): refused, it
    /// would reset every connection.
    Unselective,
}

impl std::fmt::Display for ObserveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObserveError::NoAnswer => write!(
                f,
                "a worker did not answer within {ANSWER_TIMEOUT:?} (is the relay stopping?)"
            ),
            ObserveError::Unselective => {
                f.write_str("a close must name connections (ids, a route or a client network)")
            }
        }
    }
}

impl std::error::Error for ObserveError {}

/// A connection's byte counts when last sampled, and the rate measured then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSample {
    at: Instant,
    up: u64,
    down: u64,
    rate: (f64, f64),
    sampled: bool,
}

impl RateSample {
    pub(crate) fn new(now: Instant) -> Self {
        RateSample {
            at: now,
            up: 0,
            down: 0,
            rate: (0.0, 0.0),
            sampled: false,
        }
    }

    /// The rate each way at `now`, given the byte counts then (see the module for the window).
    pub(crate) fn rate(&mut self, now: Instant, up: u64, down: u64) -> (f64, f64) {
        let elapsed = now.saturating_duration_since(self.at);
        if elapsed >= RATE_WINDOW || !self.sampled {
            let seconds = elapsed.as_secs_f64().max(1e-3);
            self.rate = (
                up.saturating_sub(self.up) as f64 / seconds,
                down.saturating_sub(self.down) as f64 / seconds,
            );
            if elapsed >= RATE_WINDOW {
                *self = RateSample {
                    at: now,
                    up,
                    down,
                    rate: self.rate,
                    sampled: true,
                };
            }
        }
        self.rate
    }
}

/// The key a listing is sorted by, largest first.
pub(crate) fn sort_key(sort: SortBy, age: Duration, bytes: u64, rate: f64) -> u64 {
    match sort {
        SortBy::Age => age.as_micros().min(u128::from(u64::MAX)) as u64,
        SortBy::Bytes => bytes,
        SortBy::Rate => rate as u64,
    }
}

/// Orders `list`'s connections by `sort` (largest key first, id to break ties) and applies the
/// limit (what the control side does with the workers' answers, which each applied it too).
/// Orders UDP sessions for a listing (oldest first for [`SortBy::Age`], else most bytes
/// first) and keeps at most `limit`.
pub(crate) fn order_sessions(
    sessions: &mut Vec<UdpSessionInfo>,
    sort: SortBy,
    limit: Option<usize>,
) {
    match sort {
        SortBy::Age => sessions.sort_by_key(|s| std::cmp::Reverse(s.age)),
        SortBy::Bytes | SortBy::Rate => {
            sessions.sort_by_key(|s| std::cmp::Reverse(s.bytes_up + s.bytes_down));
        }
    }
    if let Some(limit) = limit {
        sessions.truncate(limit);
    }
}

pub(crate) fn order(connections: &mut Vec<ConnectionInfo>, sort: SortBy, limit: Option<usize>) {
    let key = |c: &ConnectionInfo| {
        sort_key(
            sort,
            c.age,
            c.bytes_up.saturating_add(c.bytes_down),
            c.rate_up + c.rate_down,
        )
    };
    connections.sort_by(|a, b| key(b).cmp(&key(a)).then(a.id.cmp(&b.id)));
    if let Some(limit) = limit {
        connections.truncate(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_measured_over_a_window_and_kept_within_it() {
        let start = Instant::now();
        let mut sample = RateSample::new(start);
        // First look: the average over the connection's life.
        let first = sample.rate(start + Duration::from_secs(2), 2_000, 4_000);
        assert_eq!(first, (1_000.0, 2_000.0));
        // Within the window: the same rate, whatever moved.
        let again = sample.rate(start + Duration::from_millis(2_500), 9_000, 9_000);
        assert_eq!(again, first);
        // A window later: the difference over it.
        let later = sample.rate(start + Duration::from_secs(4), 4_000, 4_000);
        assert_eq!(later, (1_000.0, 0.0));
    }

    #[test]
    fn filters_match_ids_routes_and_networks() {
        let client: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(ConnectionFilter::all().matches(1, "a", client));
        assert!(ConnectionFilter::all().is_everything());
        assert!(ConnectionFilter::ids(vec![1, 2]).matches(2, "a", client));
        assert!(!ConnectionFilter::ids(vec![1, 2]).matches(3, "a", client));
        assert!(!ConnectionFilter::all().route("b").matches(1, "a", client));
        assert!(ConnectionFilter::all().client(net).matches(1, "a", client));
        assert!(ConnectionFilter::all().client(net).matches(1, "a", mapped));
        let other: SocketAddr = "10.2.0.1:1".parse().unwrap();
        assert!(!ConnectionFilter::all().client(net).matches(1, "a", other));
    }

    #[test]
    fn ordering_puts_the_largest_first_and_limits() {
        let info = |id, age, bytes, rate| ConnectionInfo {
            id,
            route: "r".into(),
            client: "127.0.0.1:1".parse().unwrap(),
            via: None,
            upstream: None,
            phase: ConnectionPhase::Relaying,
            age: Duration::from_secs(age),
            bytes_up: bytes,
            bytes_down: 0,
            rate_up: rate,
            rate_down: 0.0,
            mode: Mode::Splice,
        };
        let all = vec![info(1, 5, 10, 3.0), info(2, 9, 1, 1.0), info(3, 1, 99, 2.0)];
        let ids = |sort, limit| {
            let mut list = all.clone();
            order(&mut list, sort, limit);
            list.iter().map(|c| c.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(SortBy::Age, None), [2, 1, 3]);
        assert_eq!(ids(SortBy::Bytes, Some(2)), [3, 1]);
        assert_eq!(ids(SortBy::Rate, Some(1)), [1]);
    }
}
