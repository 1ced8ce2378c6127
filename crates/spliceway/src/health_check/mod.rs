//! Active health checks (issue 29): one thread per relay probes every checked upstream of every
//! route, each every `interval`, spread in time, and records the verdict (rise/fall) in the
//! upstream's shared health, which the workers read when they choose. The workers never wait
//! for a probe.
//!
//! Probes run one after another on this thread, each bounded by its check's timeout. A name is
//! looked up here (bypassing the relay's cache) and an address the route's address policy
//! refuses, or one of the relay's own listeners, is never probed: a route whose name resolves
//! only to such addresses counts as failing its checks.

mod probe;
mod reply;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::address::UpstreamAddr;
use crate::balance::{GroupState, RiseFall, UpstreamHealth};
use crate::resolver::is_local;
use crate::route::NameOrigin;
use crate::state::relay::RelayState;
use crate::state::route::RouteState;

/// The longest the checker sleeps at once: how soon it notices a reload's new upstreams.
const MAX_NAP: Duration = Duration::from_millis(200);

/// One checked upstream's schedule and verdict, keyed by its shared health (which a reload
/// keeps for an unchanged upstream, so its schedule and verdict carry over too).
struct Scheduled {
    next: Instant,
    verdict: RiseFall,
    /// Seen in the latest pass over the routes (entries not seen are dropped).
    seen: bool,
}

/// Runs the checks until `stop` is set; returns within [`MAX_NAP`] of it.
pub(crate) fn run(relay: &RelayState, stop: &AtomicBool) {
    let mut schedule: HashMap<*const UpstreamHealth, Scheduled> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        let routes = relay.routes();
        let now = Instant::now();
        for entry in schedule.values_mut() {
            entry.seen = false;
        }
        let checked: Vec<(&Arc<RouteState>, &Arc<GroupState>, usize)> = routes
            .iter()
            .filter_map(|r| r.group.as_ref().map(|g| (r, g)))
            .filter(|(_, g)| g.group.check.is_some())
            .flat_map(|(r, g)| (0..g.health.len()).map(move |i| (r, g, i)))
            .collect();
        let count = checked.len().max(1) as u32;
        let mut next_wake = now + MAX_NAP;
        for (k, (route, group, i)) in checked.iter().enumerate() {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let Some(check) = &group.group.check else {
                continue;
            };
            let health = &group.health[*i];
            let entry = schedule
                .entry(Arc::as_ptr(health))
                .or_insert_with(|| Scheduled {
                    // Spread: the k-th of n upstreams first probed k/n of an interval from now.
                    next: now + check.interval / count * k as u32,
                    verdict: RiseFall::new(health.checked_up()),
                    seen: false,
                });
            entry.seen = true;
            let now = Instant::now();
            if entry.next <= now {
                let result = probe_upstream(route, &group.group.servers[*i].address, check);
                if let Some(up) = entry.verdict.record(result.is_ok(), check.rise, check.fall) {
                    health.set_checked_up(up);
                    log_change(route, &group.group.servers[*i].address, up, check, &result);
                }
                entry.next =
                    crate::clock::deadline(entry.next.max(now - check.interval), check.interval);
                if entry.next < Instant::now() {
                    entry.next = crate::clock::deadline(Instant::now(), check.interval);
                }
            }
            next_wake = next_wake.min(entry.next);
        }
        schedule.retain(|_, e| e.seen);
        drop(routes);
        let nap = next_wake
            .saturating_duration_since(Instant::now())
            .min(MAX_NAP);
        if !nap.is_zero() {
            std::thread::park_timeout(nap);
        }
    }
}

fn log_change(
    route: &RouteState,
    upstream: &UpstreamAddr,
    up: bool,
    check: &crate::route::HealthCheck,
    result: &Result<(), String>,
) {
    if up {
        tracing::info!(
            target: "spliceway::upstream",
            route = %route.name,
            upstream = %upstream,
            "upstream up: {} health checks in a row passed",
            check.rise
        );
    } else {
        tracing::warn!(
            target: "spliceway::upstream",
            route = %route.name,
            upstream = %upstream,
            "upstream down: {} health checks in a row failed (last: {}); no new connections \
             go to it until {} pass",
            check.fall,
            result.as_ref().err().map_or("", String::as_str),
            check.rise
        );
    }
}

/// Probes one upstream: its address, or for a name each address it resolves to that the
/// route may reach, until one passes.
fn probe_upstream(
    route: &RouteState,
    upstream: &UpstreamAddr,
    check: &crate::route::HealthCheck,
) -> Result<(), String> {
    let (host, addrs, policy) = match upstream {
        UpstreamAddr::Ip(addr) => (addr.ip().to_string(), vec![*addr], false),
        UpstreamAddr::Name { host, port } => {
            let (addrs, _) = route
                .resolution
                .lookup(host, *port)
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            (host.clone(), addrs, true)
        }
    };
    let mut last = format!("{upstream} resolved to no address");
    for addr in addrs {
        if let Some(why) = refusal(route, addr, policy) {
            last = why;
            continue;
        }
        match probe::probe(check, addr, &host) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Why the checker must not probe `addr`: the route's address policy refuses it (for a resolved
/// name), or it is one of the relay's own listeners.
fn refusal(route: &RouteState, addr: SocketAddr, resolved: bool) -> Option<String> {
    if resolved
        && let Some(reason) = route
            .address_policy
            .refusal(addr.ip(), NameOrigin::Configured)
    {
        return Some(format!("{addr} is {reason} (the address policy)"));
    }
    let target = crate::resolver::Target {
        addr,
        local: is_local(addr.ip()),
    };
    crate::state::route::loops_back(&route.relay_listeners, &target)
        .map(|listen| format!("{addr} is this relay's own listener {listen}"))
}
