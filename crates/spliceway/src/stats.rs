//! Counters readable while the relay runs: what
//! [`RelayHandle::snapshot`](crate::RelayHandle::snapshot) returns.
//!
//! Workers update relaxed atomics (one cache line per route is contended only by that route's
//! workers); readers take a [`RelaySnapshot`]. There is one set of counters for the whole relay
//! and one per route; each event is counted in both.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the upstream connect-latency histogram's buckets, in seconds.
pub const CONNECT_LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fixed-bucket histogram of durations, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per-bucket counts (not cumulative); the last one counts values above every bound.
    buckets: [AtomicU64; CONNECT_LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a histogram of durations, in the Prometheus shape.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations <= bound)`, cumulative, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    pub(crate) fn observe(&self, value: std::time::Duration) {
        let seconds = value.as_secs_f64();
        let index = CONNECT_LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(CONNECT_LATENCY_BUCKETS_SECONDS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    /// Reads the histogram.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(CONNECT_LATENCY_BUCKETS_SECONDS.len());
        for (i, bound) in CONNECT_LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative
            + self.buckets[CONNECT_LATENCY_BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What [`RelayHandle::snapshot`](crate::RelayHandle::snapshot) returns: a relay's counters,
/// every route's, and its gauges, read at one moment (each read individually: a snapshot taken
/// while connections move may be off by the events of that instant).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RelaySnapshot {
    /// The relay's counters (all routes, adopted connections included).
    pub stats: StatsSnapshot,
    /// Every route's counters and connect-latency histogram, in the relay's route order.
    pub routes: Vec<RouteSnapshot>,
    /// Connections open now.
    pub active_connections: usize,
    /// UDP sessions open now.
    pub udp_sessions: usize,
    /// Pipes the workers hold (in use and pooled), as of each worker's last loop turn.
    pub pipes_open: usize,
    /// Total capacity of those pipes, in bytes (an upper bound on their kernel memory).
    pub pipe_bytes: usize,
}

impl RelaySnapshot {
    /// The route named `name`, if the relay has it.
    #[must_use]
    pub fn route(&self, name: &str) -> Option<&RouteSnapshot> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// One route's part of a [`RelaySnapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteSnapshot {
    /// The route's name.
    pub name: String,
    /// The route's counters.
    pub stats: StatsSnapshot,
    /// The route's upstream connect-latency histogram (accept to upstream connected).
    pub connect_latency: HistogramSnapshot,
    /// For a route with a group of upstreams, each upstream's health and counters, in the
    /// group's order; empty otherwise.
    pub upstreams: Vec<UpstreamSnapshot>,
}

/// One upstream of a group, in a [`RouteSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamSnapshot {
    /// The upstream as configured (`host:port` or `ip:port`).
    pub upstream: String,
    /// Its weight.
    pub weight: u32,
    /// Whether it is a backup.
    pub backup: bool,
    /// Whether it may receive new connections now: its health check (if any) passes and
    /// passive health does not hold it down.
    pub up: bool,
    /// Connections open to it now.
    pub open_connections: usize,
    /// Connections established to it (since the relay started; a reload that keeps the
    /// upstream keeps counting).
    pub connections: u64,
    /// Connect attempts to it that failed.
    pub connect_failures: u64,
}

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident, $snap:ident { $($(#[$fmeta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: AtomicU64,)*
            /// Time from accepting a client to its upstream connection being established.
            pub(crate) connect_latency: Histogram,
        }

        /// A point-in-time copy of the counters (each read individually: a snapshot taken while
        /// connections move may be off by the events of that instant).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $snap {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $name {
            /// Reads every counter.
            pub(crate) fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }

            /// The upstream connect-latency histogram (accept to upstream connected).
            pub(crate) fn connect_latency(&self) -> HistogramSnapshot {
                self.connect_latency.snapshot()
            }
        }
    };
}

counters!(
    /// Counters of a relay or of one route.
    Stats,
    StatsSnapshot {
        /// Client connections accepted, those handed over by the program included.
        accepted,
        /// Connections the program handed over ([`RelayHandle::adopt`](crate::RelayHandle::adopt));
        /// also counted in `accepted`.
        adopted,
        /// Connections finished (in any way).
        closed,
        /// Connections whose both directions ended cleanly (end of stream passed on both ways).
        completed,
        /// Connections refused by an access rule (allow/deny lists).
        denied,
        /// Connections refused by SNI routing (not TLS, no or a disallowed server name, or no
        /// complete ClientHello in time).
        sni_refused,
        /// Upstream connection attempts that failed (refused, unreachable, timed out).
        upstream_connect_failures,
        /// Client connections closed because no upstream address could be reached or resolved.
        upstream_unavailable,
        /// Connections refused because the upstream resolved to the relay's own listener.
        self_loops,
        /// Connections refused (reset) without their upstream name being looked up, because
        /// their route or their client address already had as many lookups pending as allowed
        /// (`MAX_PENDING_LOOKUPS_PER_ROUTE`, `MAX_PENDING_LOOKUPS_PER_CLIENT`).
        resolve_refused,
        /// Lookups taken off the resolver's queue before they ran, because every connection
        /// waiting for them had closed.
        resolve_cancelled,
        /// Connections reset because the client reset (or failed).
        client_resets,
        /// Connections reset because the upstream reset (or failed).
        upstream_resets,
        /// Connections the client reset after its own end of stream had been passed on (every
        /// byte it sent reached the upstream): not aborts; not in `client_resets`.
        client_resets_after_end,
        /// Connections the upstream reset after its own end of stream had been passed on; not
        /// in `upstream_resets`.
        upstream_resets_after_end,
        /// Connections closed by the idle timeout.
        idle_timeouts,
        /// Connections closed by the half-close timeout.
        half_close_timeouts,
        /// Connections reset when a drain (graceful shutdown) ran out of time.
        drain_resets,
        /// Bytes written to upstreams (client -> upstream).
        bytes_client_to_upstream,
        /// Bytes written to clients (upstream -> client).
        bytes_upstream_to_client,
        /// Bytes moved by splice (never entered user space).
        bytes_spliced,
        /// Bytes moved by copying through a user-space buffer.
        bytes_copied,
        /// Bytes that were buffered when their connection was aborted, and thrown away.
        bytes_discarded,
        /// Time directions of connections waited for a rate limit (`rate_limit`,
        /// `client_rate_limit`, `route_rate_limit`), in microseconds, summed over directions.
        throttled_micros,
        /// Bytes whose read had to wait for a rate limit.
        bytes_held_back,
        /// Directions of connections whose own `rate_limit` the kernel paces on the sending
        /// socket (`SO_MAX_PACING_RATE`) rather than the relay's bucket, counted when set: at
        /// the first read, or when a reload sets it on an open connection. Their waits are
        /// the kernel's, not in `throttled_micros` or `bytes_held_back`.
        kernel_paced,
        /// Connections refused (reset) because their client address already held
        /// `max_connections_per_client` connections of the route.
        client_limit_refused,
        /// Connections that fell back from splice to copy because splice was unsupported.
        splice_fallbacks,
        /// Transfers that got a smaller pipe or a user-space buffer because pipes were scarce.
        pipe_degradations,
        /// Sum of the time from accept to upstream connected, in microseconds (with
        /// `upstream_connects`, gives the mean).
        connect_micros_total,
        /// Upstream connections established.
        upstream_connects,
        /// Resolved upstream addresses refused by the route's address policy (each one tried
        /// is counted; the connection goes on to the next address).
        upstream_refused_address_policy,
        /// Connections reset because no descriptor could be had for their upstream socket
        /// (the open-file limit; not counted as `upstream_unavailable`).
        descriptor_exhausted,
        /// Times a worker stopped accepting because the relay's descriptors (under the
        /// open-file limit) were used up; clients waited in the backlog.
        descriptor_waits,
        /// Connections reset for their PROXY protocol header, by reason (see
        /// [`ProxyHeaderError::reason`](crate::proxy_protocol::ProxyHeaderError::reason)): no
        /// signature (no header),
        proxy_header_signature,
        /// ... a version the route does not accept,
        proxy_header_version,
        /// ... the client closed before the whole header,
        proxy_header_truncated,
        /// ... no whole header within the PROXY timeout,
        proxy_header_timeout,
        /// ... longer than allowed,
        proxy_header_too_long,
        /// ... for UDP, UNIX sockets, an unknown command or version,
        proxy_header_unsupported,
        /// ... not well-formed.
        proxy_header_malformed,
        /// Intercepted connections (`upstream = "original-destination"`) reset because their
        /// original destination could not be read (the connection was not redirected by a
        /// nat rule, nor delivered by TPROXY to a transparent listener).
        original_destination_unreadable,
        /// HTTP CONNECT answers, by status: 200 (connected, relaying),
        http_connect_200,
        /// ... 400 (malformed, too long, not CONNECT, or not complete within the request timeout),
        http_connect_400,
        /// ... 403 (not in connect_allow, or resolved outside upstream_allow / to the relay),
        http_connect_403,
        /// ... 502 (did not resolve, refused or unreachable),
        http_connect_502,
        /// ... 504 (resolving or connecting took longer than the connect timeout).
        http_connect_504,
        /// UDP sessions started (a datagram from a client address without one).
        udp_sessions_started,
        /// UDP sessions ended (in any way; with `udp_sessions_started`, gives those open).
        udp_sessions_ended,
        /// UDP sessions ended by `udp_idle_timeout` (silent both ways; an upstream that never
        /// answers ends this way).
        udp_idle_timeouts,
        /// UDP sessions ended because the upstream answered with an ICMP error (port
        /// unreachable): not retried.
        udp_upstream_unreachable,
        /// UDP sessions ended when a drain (graceful shutdown) ran out of time, at an
        /// immediate stop, or when a reload closed the address they came in on.
        udp_drain_ends,
        /// UDP sessions ended by an operator (`RelayHandle::end_udp_sessions`, `spliceway
        /// close --udp`): the client's next datagram opens a new session.
        udp_operator_ends,
        /// UDP sessions ended because every datagram of theirs had its `udp_responses`
        /// answers (or, with `udp_responses = 0`, because their datagrams had left).
        udp_responses_ends,
        /// UDP datagrams sent to upstreams (client -> upstream).
        udp_datagrams_client_to_upstream,
        /// UDP datagrams sent to clients (upstream -> client).
        udp_datagrams_upstream_to_client,
        /// UDP payload bytes sent to upstreams.
        udp_bytes_client_to_upstream,
        /// UDP payload bytes sent to clients.
        udp_bytes_upstream_to_client,
        /// UDP datagrams dropped, by reason: the client is refused by the allow/deny lists,
        udp_dropped_denied,
        /// ... the route has `max_sessions` sessions,
        udp_dropped_session_limit,
        /// ... the client's address has `max_sessions_per_client` sessions,
        udp_dropped_client_limit,
        /// ... a new client while the relay drains,
        udp_dropped_draining,
        /// ... no upstream address (unresolved, refused by the address policy, the relay's
        /// own), or no socket could be opened for it,
        udp_dropped_no_upstream,
        /// ... a new session would take more of the relay's descriptors than UDP sessions may
        /// hold (half of the budget is kept for TCP connections),
        udp_dropped_descriptors,
        /// ... the sending socket's buffer was full or the send failed,
        udp_dropped_send_failed,
        /// ... larger than the relay's buffer (never for IPv4/IPv6 UDP: 64 KiB slots),
        udp_dropped_truncated,
        /// ... sent to an upstream that had answered with an ICMP error.
        udp_dropped_unreachable,
    }
);

impl StatsSnapshot {
    /// The HTTP CONNECT answers counted, in the order of
    /// [`Answer::ALL`](crate::http_connect::Answer::ALL) (200, 400, 403, 502, 504).
    #[must_use]
    pub fn http_connect_answers(&self) -> [u64; 5] {
        [
            self.http_connect_200,
            self.http_connect_400,
            self.http_connect_403,
            self.http_connect_502,
            self.http_connect_504,
        ]
    }
}

impl Stats {
    pub(crate) fn add(&self, counter: fn(&Stats) -> &AtomicU64, n: u64) {
        if n != 0 {
            counter(self).fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl StatsSnapshot {
    /// Connections open now: accepted and not yet closed.
    #[must_use]
    pub fn active(&self) -> u64 {
        self.accepted.saturating_sub(self.closed)
    }

    /// Resets of either side.
    #[must_use]
    pub fn resets(&self) -> u64 {
        self.client_resets + self.upstream_resets
    }

    /// The PROXY protocol header refusals, in the order of
    /// [`ProxyHeaderError::REASONS`](crate::proxy_protocol::ProxyHeaderError::REASONS).
    #[must_use]
    pub fn proxy_header_errors(&self) -> [u64; 7] {
        [
            self.proxy_header_signature,
            self.proxy_header_version,
            self.proxy_header_truncated,
            self.proxy_header_timeout,
            self.proxy_header_too_long,
            self.proxy_header_unsupported,
            self.proxy_header_malformed,
        ]
    }
}

/// Counts one event in the relay's and the route's counters.
pub(crate) fn count(global: &Stats, route: &Stats, counter: fn(&Stats) -> &AtomicU64, n: u64) {
    global.add(counter, n);
    route.add(counter, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_micros(300));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(60));
        let snap = h.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.buckets[0], (0.0005, 1));
        assert_eq!(snap.buckets.last().unwrap().1, 2, "60 s only in +Inf");
        assert!((snap.sum_seconds - 60.0033).abs() < 1e-6);
    }

    #[test]
    fn snapshot_reads_what_was_counted() {
        let global = Stats::default();
        let route = Stats::default();
        count(&global, &route, |s| &s.accepted, 3);
        count(&global, &route, |s| &s.closed, 1);
        count(&global, &route, |s| &s.bytes_spliced, 1 << 40);
        let snap = route.snapshot();
        assert_eq!(snap.active(), 2);
        assert_eq!(snap.bytes_spliced, 1 << 40);
        assert_eq!(global.snapshot(), snap);
    }
}
