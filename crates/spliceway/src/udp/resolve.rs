//! Re-resolution of UDP upstream names, on a thread of its own: a name's addresses change (a
//! DNS server behind a load balancer, a service that moves), and sessions started after the
//! change must go to the new ones. The event loop never waits for a lookup.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::UdpRouteState;

/// Looks every named upstream up again each `resolve_cache_ttl` of its route (at least once a
/// second, at most once a minute) until `stop` is dropped or sent to.
pub(crate) fn refresh_names(routes: &[Arc<UdpRouteState>], stop: &Receiver<()>) {
    if !routes.iter().any(|r| r.has_name()) {
        // Nothing to refresh: wait for the end without waking.
        let _ = stop.recv();
        return;
    }
    loop {
        let period = routes
            .iter()
            .filter(|r| r.has_name())
            .map(|r| r.route().options.resolve_cache_ttl)
            .min()
            .unwrap_or(Duration::from_secs(10))
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        match stop.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        for route in routes.iter().filter(|r| r.has_name()) {
            if let Err(e) = route.refresh() {
                // log: not client input: the resolver, once a period per route at most.
                tracing::warn!(route = %route.name, "udp: keeping the previous addresses: {e}");
            }
        }
    }
}
