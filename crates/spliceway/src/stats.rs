//! Counters readable while the relay runs.
//!
//! Workers update relaxed atomics (one cache line per route is contended only by that route's
//! workers); readers take a [`StatsSnapshot`]. There is one [`Stats`] for the whole relay and one
//! per route; each event is counted in both.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident, $snap:ident { $($(#[$fmeta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub(crate) $field: AtomicU64,)*
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
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    /// Counters of a relay or of one route.
    Stats,
    StatsSnapshot {
        /// Client connections accepted.
        accepted,
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
        /// Connections reset because the client reset (or failed).
        client_resets,
        /// Connections reset because the upstream reset (or failed).
        upstream_resets,
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
        /// Connections that fell back from splice to copy because splice was unsupported.
        splice_fallbacks,
        /// Transfers that got a smaller pipe or a user-space buffer because pipes were scarce.
        pipe_degradations,
        /// Sum of the time from accept to upstream connected, in microseconds (with
        /// `upstream_connects`, gives the mean).
        connect_micros_total,
        /// Upstream connections established.
        upstream_connects,
    }
);

impl Stats {
    pub(crate) fn add(&self, counter: fn(&Stats) -> &AtomicU64, n: u64) {
        if n != 0 {
            counter(self).fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl StatsSnapshot {
    /// Connections open now: accepted and not yet closed.
    pub fn active(&self) -> u64 {
        self.accepted.saturating_sub(self.closed)
    }

    /// Resets of either side.
    pub fn resets(&self) -> u64 {
        self.client_resets + self.upstream_resets
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
