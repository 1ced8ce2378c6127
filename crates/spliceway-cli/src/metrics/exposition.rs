//! The relay's metrics in the Prometheus text format, as `GET /metrics` answers them.
//!
//! Nothing is counted twice: a [`Collector`] reads the relay's own counters
//! ([`RelayHandle::snapshot`]) at each scrape. Every metric has a `route` label; see
//! `docs/operations.md` for the list. Names, labels and help texts are what dashboards and
//! alerts match on: change none of them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use spliceway::{RelayHandle, StatsSnapshot};

use super::process::ProcessCollector;

/// A counter taken from every route's [`StatsSnapshot`]: name (without `_total`), help, and
/// an optional second label with the value of that label.
struct CounterSpec {
    name: &'static str,
    help: &'static str,
    label: Option<(&'static str, &'static str)>,
    read: fn(&StatsSnapshot) -> u64,
}

const COUNTERS: &[CounterSpec] = &[
    CounterSpec {
        name: "spliceway_connections_accepted",
        help: "Client connections accepted.",
        label: None,
        read: |s| s.accepted,
    },
    CounterSpec {
        name: "spliceway_connections_closed",
        help: "Connections finished, in any way.",
        label: None,
        read: |s| s.closed,
    },
    CounterSpec {
        name: "spliceway_connections_completed",
        help: "Connections whose both directions ended cleanly.",
        label: None,
        read: |s| s.completed,
    },
    CounterSpec {
        name: "spliceway_connections_denied",
        help: "Connections refused by the allow/deny lists.",
        label: None,
        read: |s| s.denied,
    },
    CounterSpec {
        name: "spliceway_connections_sni_refused",
        help: "Connections refused by SNI routing (not TLS, no or a disallowed server name, \
               no ClientHello in time).",
        label: None,
        read: |s| s.sni_refused,
    },
    CounterSpec {
        name: "spliceway_connections_upstream_unavailable",
        help: "Client connections closed because no upstream address could be resolved or \
               reached.",
        label: None,
        read: |s| s.upstream_unavailable,
    },
    CounterSpec {
        name: "spliceway_connections_self_loop",
        help: "Connections refused because the upstream resolved to the relay's own listener.",
        label: None,
        read: |s| s.self_loops,
    },
    CounterSpec {
        name: "spliceway_upstream_refused",
        help: "Resolved upstream addresses refused, by reason (address_policy: link-local, \
               unspecified, multicast or broadcast, or loopback for a name from SNI).",
        label: Some(("reason", "address_policy")),
        read: |s| s.upstream_refused_address_policy,
    },
    CounterSpec {
        name: "spliceway_connections_out_of_descriptors",
        help: "Connections reset because no descriptor could be had for their upstream socket \
               (the open-file limit).",
        label: None,
        read: |s| s.descriptor_exhausted,
    },
    CounterSpec {
        name: "spliceway_descriptor_waits",
        help: "Times a worker stopped accepting because the relay's descriptors were used up \
               (clients waited in the backlog).",
        label: None,
        read: |s| s.descriptor_waits,
    },
    CounterSpec {
        name: "spliceway_connections_resolve_refused",
        help: "Connections refused without a lookup because their route or client address \
               had as many lookups pending as allowed.",
        label: None,
        read: |s| s.resolve_refused,
    },
    CounterSpec {
        name: "spliceway_resolve_cancelled",
        help: "Lookups taken off the resolver's queue before they ran, because every \
               connection waiting for them had closed.",
        label: None,
        read: |s| s.resolve_cancelled,
    },
    CounterSpec {
        name: "spliceway_upstream_connects",
        help: "Upstream connections established.",
        label: None,
        read: |s| s.upstream_connects,
    },
    CounterSpec {
        name: "spliceway_upstream_connect_failures",
        help: "Upstream connection attempts that failed (refused, unreachable, timed out).",
        label: None,
        read: |s| s.upstream_connect_failures,
    },
    CounterSpec {
        name: "spliceway_resets",
        help: "Connections reset because one side reset or failed, by that side.",
        label: Some(("side", "client")),
        read: |s| s.client_resets,
    },
    CounterSpec {
        name: "spliceway_resets",
        help: "",
        label: Some(("side", "upstream")),
        read: |s| s.upstream_resets,
    },
    CounterSpec {
        name: "spliceway_resets_after_end",
        help: "Connections one side reset after its own end of stream had been passed on (every \
               byte it sent arrived; it left bytes unread, as the AWS CLI does when it closes), \
               by that side: not aborts, and not in spliceway_resets_total.",
        label: Some(("side", "client")),
        read: |s| s.client_resets_after_end,
    },
    CounterSpec {
        name: "spliceway_resets_after_end",
        help: "",
        label: Some(("side", "upstream")),
        read: |s| s.upstream_resets_after_end,
    },
    CounterSpec {
        name: "spliceway_timeouts",
        help: "Connections closed by a timeout, by kind (idle, half_close, drain).",
        label: Some(("kind", "idle")),
        read: |s| s.idle_timeouts,
    },
    CounterSpec {
        name: "spliceway_timeouts",
        help: "",
        label: Some(("kind", "half_close")),
        read: |s| s.half_close_timeouts,
    },
    CounterSpec {
        name: "spliceway_timeouts",
        help: "",
        label: Some(("kind", "drain")),
        read: |s| s.drain_resets,
    },
    CounterSpec {
        name: "spliceway_bytes",
        help: "Bytes relayed, by direction.",
        label: Some(("direction", "client_to_upstream")),
        read: |s| s.bytes_client_to_upstream,
    },
    CounterSpec {
        name: "spliceway_bytes",
        help: "",
        label: Some(("direction", "upstream_to_client")),
        read: |s| s.bytes_upstream_to_client,
    },
    CounterSpec {
        name: "spliceway_bytes_moved",
        help: "Bytes relayed, by engine: splice (never entered user space) or copy.",
        label: Some(("engine", "splice")),
        read: |s| s.bytes_spliced,
    },
    CounterSpec {
        name: "spliceway_bytes_moved",
        help: "",
        label: Some(("engine", "copy")),
        read: |s| s.bytes_copied,
    },
    CounterSpec {
        name: "spliceway_bytes_discarded",
        help: "Bytes buffered when their connection was aborted, thrown away.",
        label: None,
        read: |s| s.bytes_discarded,
    },
    CounterSpec {
        name: "spliceway_splice_fallbacks",
        help: "Connections that fell back from splice to copy because splice was unsupported.",
        label: None,
        read: |s| s.splice_fallbacks,
    },
    CounterSpec {
        name: "spliceway_pipe_degradations",
        help: "Transfers that got a smaller pipe or a buffer because pipes were scarce.",
        label: None,
        read: |s| s.pipe_degradations,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "signature")),
        read: |s| s.proxy_header_signature,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "version")),
        read: |s| s.proxy_header_version,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "truncated")),
        read: |s| s.proxy_header_truncated,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "timeout")),
        read: |s| s.proxy_header_timeout,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "too_long")),
        read: |s| s.proxy_header_too_long,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "unsupported")),
        read: |s| s.proxy_header_unsupported,
    },
    CounterSpec {
        name: "spliceway_proxy_header_errors",
        help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
        label: Some(("reason", "malformed")),
        read: |s| s.proxy_header_malformed,
    },
    CounterSpec {
        name: "spliceway_original_destination_unreadable",
        help: "Intercepted connections reset because their original destination could not be \
               read (not redirected by a nat rule nor delivered by TPROXY).",
        label: None,
        read: |s| s.original_destination_unreadable,
    },
    CounterSpec {
        name: "spliceway_http_connect_answers",
        help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
               long, not CONNECT or not complete in time; 403 not in connect_allow or \
               upstream_allow; 502 unreachable; 504 timed out).",
        label: Some(("status", "200")),
        read: |s| s.http_connect_200,
    },
    CounterSpec {
        name: "spliceway_http_connect_answers",
        help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
               long, not CONNECT or not complete in time; 403 not in connect_allow or \
               upstream_allow; 502 unreachable; 504 timed out).",
        label: Some(("status", "400")),
        read: |s| s.http_connect_400,
    },
    CounterSpec {
        name: "spliceway_http_connect_answers",
        help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
               long, not CONNECT or not complete in time; 403 not in connect_allow or \
               upstream_allow; 502 unreachable; 504 timed out).",
        label: Some(("status", "403")),
        read: |s| s.http_connect_403,
    },
    CounterSpec {
        name: "spliceway_http_connect_answers",
        help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
               long, not CONNECT or not complete in time; 403 not in connect_allow or \
               upstream_allow; 502 unreachable; 504 timed out).",
        label: Some(("status", "502")),
        read: |s| s.http_connect_502,
    },
    CounterSpec {
        name: "spliceway_http_connect_answers",
        help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
               long, not CONNECT or not complete in time; 403 not in connect_allow or \
               upstream_allow; 502 unreachable; 504 timed out).",
        label: Some(("status", "504")),
        read: |s| s.http_connect_504,
    },
];

/// Reads the relay's counters at scrape time.
#[derive(Debug)]
struct RelayCollector {
    handle: RelayHandle,
}

impl Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.handle.snapshot();
        let routes: Vec<(String, StatsSnapshot)> = snapshot
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.stats))
            .collect();
        // Specs sharing a name are consecutive: one descriptor, several label values.
        let mut i = 0;
        while i < COUNTERS.len() {
            let first = &COUNTERS[i];
            let group: Vec<&CounterSpec> = COUNTERS[i..]
                .iter()
                .take_while(|c| c.name == first.name)
                .collect();
            i += group.len();
            let mut metric =
                encoder.encode_descriptor(first.name, first.help, None, MetricType::Counter)?;
            for (route, stats) in &routes {
                for spec in &group {
                    let value = (spec.read)(stats);
                    match spec.label {
                        None => metric
                            .encode_family(&[("route", route.as_str())])?
                            .encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                        Some(label) => metric
                            .encode_family(&[("route", route.as_str()), label])?
                            .encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                    }
                }
            }
        }

        let mut active = encoder.encode_descriptor(
            "spliceway_connections_active",
            "Connections open now (accepted and not yet closed).",
            None,
            MetricType::Gauge,
        )?;
        for (route, stats) in &routes {
            active
                .encode_family(&[("route", route.as_str())])?
                .encode_gauge(&stats.active())?;
        }

        encoder
            .encode_descriptor(
                "spliceway_draining",
                "1 from the moment a graceful shutdown begins (readiness fails, the drain delay \
                 runs, then the listeners close and open connections finish), else 0.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&u64::from(self.handle.is_stopping()))?;

        encoder
            .encode_descriptor(
                "spliceway_pipes_open",
                "Pipes the workers hold, in use and pooled.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(snapshot.pipes_open as u64))?;

        let mut latency = encoder.encode_descriptor(
            "spliceway_upstream_connect_seconds",
            "Time from accepting a client to its upstream connection being established.",
            None,
            MetricType::Histogram,
        )?;
        for (route, histogram) in snapshot
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.connect_latency.clone()))
        {
            // The snapshot is cumulative without +Inf; the encoder wants per-bucket counts
            // and accumulates them itself.
            let mut buckets = Vec::with_capacity(histogram.buckets.len() + 1);
            let mut previous = 0;
            for (bound, cumulative) in &histogram.buckets {
                buckets.push((*bound, cumulative - previous));
                previous = *cumulative;
            }
            buckets.push((f64::INFINITY, histogram.count - previous));
            latency
                .encode_family(&[("route", route.as_str())])?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// The relay's metrics in the Prometheus text format.
pub fn render(handle: &RelayHandle) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RelayCollector {
        handle: handle.clone(),
    }));
    // After the relay's, so that their text is what it always was, in the same order.
    registry.register_collector(Box::new(ProcessCollector));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}
