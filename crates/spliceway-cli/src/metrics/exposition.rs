//! The relay's metrics in the Prometheus text format, as `GET /metrics` answers them.
//!
//! Each family's name, help and labels are written once, in [`COUNTERS`] or a `const`
//! [`Family`] beside the code that reads it.
//!
//! Nothing is counted twice: a [`Collector`] reads the relay's own counters
//! ([`RelayHandle::snapshot`]) at each scrape. Every metric has a `route` label; see
//! `docs/operations.md` for the list. Names, labels and help texts are what dashboards and
//! alerts match on: change none of them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::registry::Registry;
use spliceway::{RelayHandle, StatsSnapshot};

use super::family::{Family, Kind, Label, ROUTE};
use super::process::ProcessCollector;

/// A counter family taken from every route's [`StatsSnapshot`]: its description (with the
/// `route` label and, for some, one more whose values the series name) and how each series is
/// read.
struct CounterFamily {
    family: Family,
    /// One entry per value of the second label, in its order (one entry, `None`, without it).
    series: &'static [(Option<&'static str>, ReadCounter)],
}

/// How one series of a counter family is read from a route's counters.
type ReadCounter = fn(&StatsSnapshot) -> u64;

const COUNTERS: &[CounterFamily] = &[
    CounterFamily {
        family: Family {
            name: "spliceway_connections_accepted",
            help: "Client connections accepted.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.accepted)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_closed",
            help: "Connections finished, in any way.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.closed)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_completed",
            help: "Connections whose both directions ended cleanly.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.completed)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_denied",
            help: "Connections refused by the allow/deny lists.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.denied)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_sni_refused",
            help: "Connections refused by SNI routing (not TLS, no or a disallowed server name, \
               no ClientHello in time).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.sni_refused)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_upstream_unavailable",
            help: "Client connections closed because no upstream address could be resolved or \
               reached.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.upstream_unavailable)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_self_loop",
            help: "Connections refused because the upstream resolved to the relay's own listener.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.self_loops)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_upstream_refused",
            help: "Resolved upstream addresses refused, by reason (address_policy: link-local, \
               unspecified, multicast or broadcast, or loopback for a name from SNI).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "reason",
                    values: &["address_policy"],
                },
            ],
        },
        series: &[(Some("address_policy"), |s| {
            s.upstream_refused_address_policy
        })],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_out_of_descriptors",
            help: "Connections reset because no descriptor could be had for their upstream socket \
               (the open-file limit).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.descriptor_exhausted)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_descriptor_waits",
            help: "Times a worker stopped accepting because the relay's descriptors were used up \
               (clients waited in the backlog).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.descriptor_waits)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_resolve_refused",
            help: "Connections refused without a lookup because their route or client address \
               had as many lookups pending as allowed.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.resolve_refused)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_resolve_cancelled",
            help: "Lookups taken off the resolver's queue before they ran, because every \
               connection waiting for them had closed.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.resolve_cancelled)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_upstream_connects",
            help: "Upstream connections established.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.upstream_connects)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_upstream_connect_failures",
            help: "Upstream connection attempts that failed (refused, unreachable, timed out).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.upstream_connect_failures)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_resets",
            help: "Connections reset because one side reset or failed, by that side.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "side",
                    values: &["client", "upstream"],
                },
            ],
        },
        series: &[
            (Some("client"), |s| s.client_resets),
            (Some("upstream"), |s| s.upstream_resets),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_resets_after_end",
            help: "Connections one side reset after its own end of stream had been passed on (every \
               byte it sent arrived; it left bytes unread, as the AWS CLI does when it closes), \
               by that side: not aborts, and not in spliceway_resets_total.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "side",
                    values: &["client", "upstream"],
                },
            ],
        },
        series: &[
            (Some("client"), |s| s.client_resets_after_end),
            (Some("upstream"), |s| s.upstream_resets_after_end),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_timeouts",
            help: "Connections closed by a timeout, by kind (idle, half_close, drain).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "kind",
                    values: &["idle", "half_close", "drain"],
                },
            ],
        },
        series: &[
            (Some("idle"), |s| s.idle_timeouts),
            (Some("half_close"), |s| s.half_close_timeouts),
            (Some("drain"), |s| s.drain_resets),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_bytes",
            help: "Bytes relayed, by direction.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "direction",
                    values: &["client_to_upstream", "upstream_to_client"],
                },
            ],
        },
        series: &[
            (Some("client_to_upstream"), |s| s.bytes_client_to_upstream),
            (Some("upstream_to_client"), |s| s.bytes_upstream_to_client),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_bytes_moved",
            help: "Bytes relayed, by engine: splice (never entered user space) or copy.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "engine",
                    values: &["splice", "copy"],
                },
            ],
        },
        series: &[
            (Some("splice"), |s| s.bytes_spliced),
            (Some("copy"), |s| s.bytes_copied),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_bytes_discarded",
            help: "Bytes buffered when their connection was aborted, thrown away.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.bytes_discarded)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_splice_fallbacks",
            help: "Connections that fell back from splice to copy because splice was unsupported.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.splice_fallbacks)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_pipe_degradations",
            help: "Transfers that got a smaller pipe or a buffer because pipes were scarce.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.pipe_degradations)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_connections_client_limit_refused",
            help: "Connections reset at accept because their client address (an IPv6 client's \
                   /64) already held max_connections_per_client connections of the route.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.client_limit_refused)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_rate_limit_held_back_bytes",
            help: "Bytes whose read waited for a rate limit (rate_limit, client_rate_limit, \
                   route_rate_limit).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.bytes_held_back)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_rate_limit_kernel_paced",
            help: "Directions of connections whose own rate_limit the kernel paces on the \
                   sending socket (SO_MAX_PACING_RATE) rather than the relay's bucket: set at \
                   the first read, or by a reload on an open connection. Their waits are not in \
                   the throttled-seconds and held-back counters.",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.kernel_paced)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_proxy_header_errors",
            help: "Connections reset for their PROXY protocol header, by reason (signature: no \
               header; version: one the route does not accept; truncated; timeout; too_long; \
               unsupported: UDP, UNIX sockets, an unknown command; malformed).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "reason",
                    values: &[
                        "signature",
                        "version",
                        "truncated",
                        "timeout",
                        "too_long",
                        "unsupported",
                        "malformed",
                    ],
                },
            ],
        },
        series: &[
            (Some("signature"), |s| s.proxy_header_signature),
            (Some("version"), |s| s.proxy_header_version),
            (Some("truncated"), |s| s.proxy_header_truncated),
            (Some("timeout"), |s| s.proxy_header_timeout),
            (Some("too_long"), |s| s.proxy_header_too_long),
            (Some("unsupported"), |s| s.proxy_header_unsupported),
            (Some("malformed"), |s| s.proxy_header_malformed),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_original_destination_unreadable",
            help: "Intercepted connections reset because their original destination could not \
                   be read (not redirected by a nat rule nor delivered by TPROXY).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.original_destination_unreadable)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_http_connect_answers",
            help: "HTTP CONNECT requests answered, by status (200 connected; 400 malformed, too \
                   long, not CONNECT or not complete in time; 403 not in connect_allow or \
                   upstream_allow; 502 unreachable; 504 timed out).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "status",
                    values: &["200", "400", "403", "502", "504"],
                },
            ],
        },
        series: &[
            (Some("200"), |s| s.http_connect_200),
            (Some("400"), |s| s.http_connect_400),
            (Some("403"), |s| s.http_connect_403),
            (Some("502"), |s| s.http_connect_502),
            (Some("504"), |s| s.http_connect_504),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_udp_sessions_started",
            help: "UDP sessions started (a datagram from a client address without one).",
            kind: Kind::Counter,
            labels: &[ROUTE],
        },
        series: &[(None, |s| s.udp_sessions_started)],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_udp_sessions_ended",
            help: "UDP sessions ended, by reason (idle_timeout; upstream_unreachable: an ICMP \
                   error from the upstream; drain: the drain ran out of time, the relay \
                   stopped, or a reload closed the session's address; operator: spliceway \
                   close --udp; responses: every datagram had its udp_responses answers).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "reason",
                    values: &[
                        "idle_timeout",
                        "upstream_unreachable",
                        "drain",
                        "operator",
                        "responses",
                    ],
                },
            ],
        },
        series: &[
            (Some("idle_timeout"), |s| s.udp_idle_timeouts),
            (Some("upstream_unreachable"), |s| s.udp_upstream_unreachable),
            (Some("drain"), |s| s.udp_drain_ends),
            (Some("operator"), |s| s.udp_operator_ends),
            (Some("responses"), |s| s.udp_responses_ends),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_udp_datagrams",
            help: "UDP datagrams relayed, by direction.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "direction",
                    values: &["client_to_upstream", "upstream_to_client"],
                },
            ],
        },
        series: &[
            (Some("client_to_upstream"), |s| {
                s.udp_datagrams_client_to_upstream
            }),
            (Some("upstream_to_client"), |s| {
                s.udp_datagrams_upstream_to_client
            }),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_udp_bytes",
            help: "UDP payload bytes relayed, by direction.",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "direction",
                    values: &["client_to_upstream", "upstream_to_client"],
                },
            ],
        },
        series: &[
            (Some("client_to_upstream"), |s| {
                s.udp_bytes_client_to_upstream
            }),
            (Some("upstream_to_client"), |s| {
                s.udp_bytes_upstream_to_client
            }),
        ],
    },
    CounterFamily {
        family: Family {
            name: "spliceway_udp_dropped",
            help: "UDP datagrams dropped, by reason (denied: allow/deny; session_limit: \
                   max_sessions; client_limit: max_sessions_per_client; draining: a new client \
                   during a drain; no_upstream: no usable upstream address or socket; \
                   send_failed: a full socket buffer or a failed send; truncated: larger than \
                   the relay's buffer; unreachable: to an upstream that answered with an ICMP \
                   error).",
            kind: Kind::Counter,
            labels: &[
                ROUTE,
                Label {
                    name: "reason",
                    values: &[
                        "denied",
                        "session_limit",
                        "client_limit",
                        "draining",
                        "no_upstream",
                        "descriptors",
                        "send_failed",
                        "truncated",
                        "unreachable",
                    ],
                },
            ],
        },
        series: &[
            (Some("denied"), |s| s.udp_dropped_denied),
            (Some("session_limit"), |s| s.udp_dropped_session_limit),
            (Some("client_limit"), |s| s.udp_dropped_client_limit),
            (Some("draining"), |s| s.udp_dropped_draining),
            (Some("no_upstream"), |s| s.udp_dropped_no_upstream),
            (Some("descriptors"), |s| s.udp_dropped_descriptors),
            (Some("send_failed"), |s| s.udp_dropped_send_failed),
            (Some("truncated"), |s| s.udp_dropped_truncated),
            (Some("unreachable"), |s| s.udp_dropped_unreachable),
        ],
    },
];

/// Time waited for rate limits, per route (seconds, from the engine's microseconds).
const THROTTLED_SECONDS: Family = Family {
    name: "spliceway_rate_limit_throttled_seconds",
    help: "Time the route's connections waited for a rate limit, summed over connections and \
           directions (two connections held back for a second each count two seconds).",
    kind: Kind::Counter,
    labels: &[ROUTE],
};

/// Connections open now, per route.
const ACTIVE: Family = Family {
    name: "spliceway_connections_active",
    help: "Connections open now (accepted and not yet closed).",
    kind: Kind::Gauge,
    labels: &[ROUTE],
};

/// UDP sessions open now, per route.
const UDP_SESSIONS: Family = Family {
    name: "spliceway_udp_sessions_active",
    help: "UDP sessions open now (started - ended).",
    kind: Kind::Gauge,
    labels: &[ROUTE],
};

/// Whether a graceful shutdown has begun.
const DRAINING: Family = Family {
    name: "spliceway_draining",
    help: "1 from the moment a graceful shutdown begins (readiness fails, the drain delay \
           runs, then the listeners close and open connections finish), else 0.",
    kind: Kind::Gauge,
    labels: &[],
};

/// The workers' pipes.
const PIPES_OPEN: Family = Family {
    name: "spliceway_pipes_open",
    help: "Pipes the workers hold, in use and pooled.",
    kind: Kind::Gauge,
    labels: &[],
};

/// The connect-latency histogram, per route.
const CONNECT_SECONDS: Family = Family {
    name: "spliceway_upstream_connect_seconds",
    help: "Time from accepting a client to its upstream connection being established.",
    kind: Kind::Histogram,
    labels: &[ROUTE],
};

/// The relay's families, in the order a scrape shows them.
#[cfg(test)]
pub fn families() -> impl Iterator<Item = Family> {
    COUNTERS
        .iter()
        .map(|c| c.family)
        .chain([
            THROTTLED_SECONDS,
            ACTIVE,
            UDP_SESSIONS,
            DRAINING,
            PIPES_OPEN,
            CONNECT_SECONDS,
        ])
        .chain(UPSTREAM_FAMILIES.map(|(family, _)| family))
}

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
        for counter in COUNTERS {
            let mut metric = counter.family.describe(&mut encoder)?;
            let second = counter.family.labels.get(1).map(|l| l.name);
            for (route, stats) in &routes {
                for (value, read) in counter.series {
                    let count = read(stats);
                    match (second, value) {
                        (Some(label), Some(value)) => metric
                            .encode_family(&[("route", route.as_str()), (label, value)])?
                            .encode_counter::<NoLabelSet, _, u64>(&count, None)?,
                        _ => metric
                            .encode_family(&[("route", route.as_str())])?
                            .encode_counter::<NoLabelSet, _, u64>(&count, None)?,
                    }
                }
            }
        }

        let mut throttled = THROTTLED_SECONDS.describe(&mut encoder)?;
        for (route, stats) in &routes {
            throttled
                .encode_family(&[("route", route.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(
                    &(stats.throttled_micros as f64 / 1e6),
                    None,
                )?;
        }

        let mut active = ACTIVE.describe(&mut encoder)?;
        for (route, stats) in &routes {
            active
                .encode_family(&[("route", route.as_str())])?
                .encode_gauge(&stats.active())?;
        }

        let mut sessions = UDP_SESSIONS.describe(&mut encoder)?;
        for (route, stats) in &routes {
            sessions
                .encode_family(&[("route", route.as_str())])?
                .encode_gauge(
                    &stats
                        .udp_sessions_started
                        .saturating_sub(stats.udp_sessions_ended),
                )?;
        }

        DRAINING
            .describe(&mut encoder)?
            .encode_gauge(&u64::from(self.handle.is_stopping()))?;

        PIPES_OPEN
            .describe(&mut encoder)?
            .encode_gauge(&(snapshot.pipes_open as u64))?;

        let mut latency = CONNECT_SECONDS.describe(&mut encoder)?;
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
        encode_upstreams(&mut encoder, &snapshot)
    }
}

/// The `upstream` label of the per-upstream families: the upstream as configured.
const UPSTREAM: Label = Label {
    name: "upstream",
    values: &[],
};

/// The upstreams of routes with several (issue 29), each family with how it reads an upstream.
type ReadUpstream = fn(&spliceway::stats::UpstreamSnapshot) -> u64;
const UPSTREAM_FAMILIES: [(Family, ReadUpstream); 4] = [
    (
        Family {
            name: "spliceway_upstream_up",
            help: "1 while the upstream may receive new connections (its health check passes \
                   and passive health does not hold it down), else 0.",
            kind: Kind::Gauge,
            labels: &[ROUTE, UPSTREAM],
        },
        |u| u64::from(u.up),
    ),
    (
        Family {
            name: "spliceway_upstream_connections_active",
            help: "Connections open to the upstream now (for a UDP route: sessions).",
            kind: Kind::Gauge,
            labels: &[ROUTE, UPSTREAM],
        },
        |u| u.open_connections as u64,
    ),
    (
        Family {
            name: "spliceway_upstream_connections",
            help: "Connections established to the upstream (for a UDP route: sessions started).",
            kind: Kind::Counter,
            labels: &[ROUTE, UPSTREAM],
        },
        |u| u.connections,
    ),
    (
        Family {
            name: "spliceway_upstream_failures",
            help: "Connect attempts to the upstream that failed (refused, timed out, \
                   unreachable; for a UDP route: ICMP errors that ended a session).",
            kind: Kind::Counter,
            labels: &[ROUTE, UPSTREAM],
        },
        |u| u.connect_failures,
    ),
];

/// Writes the per-upstream families: one series per upstream of each route with several.
fn encode_upstreams(
    encoder: &mut DescriptorEncoder<'_>,
    snapshot: &spliceway::stats::RelaySnapshot,
) -> Result<(), std::fmt::Error> {
    for (family, read) in UPSTREAM_FAMILIES {
        let mut metric = family.describe(encoder)?;
        for route in &snapshot.routes {
            for upstream in &route.upstreams {
                let labels = [
                    ("route", route.name.as_str()),
                    ("upstream", upstream.upstream.as_str()),
                ];
                let mut series = metric.encode_family(&labels)?;
                match family.kind {
                    Kind::Counter => {
                        series.encode_counter::<NoLabelSet, _, u64>(&read(upstream), None)?
                    }
                    _ => series.encode_gauge(&read(upstream))?,
                }
            }
        }
    }
    Ok(())
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
