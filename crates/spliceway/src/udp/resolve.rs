//! Re-resolution of UDP upstream names, on a thread of its own: a name's addresses change (a
//! DNS server behind a load balancer, a service that moves), and sessions started after the
//! change must go to the new ones. The event loop never waits for a lookup.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::shared::{Refresh, UdpShared};

/// Looks every named upstream up again each `resolve_cache_ttl` of its route (at least once a
/// second, at most once a minute) until told to stop. Without named upstreams it sleeps until
/// a reload changes the routes.
pub(crate) fn refresh_names(shared: &UdpShared, told: &Receiver<Refresh>) {
    loop {
        let routes = shared.current();
        let named: Vec<_> = routes.iter().filter(|r| r.has_name()).collect();
        let heard = if named.is_empty() {
            told.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            let period = named
                .iter()
                .map(|r| r.route().options.resolve_cache_ttl)
                .min()
                .unwrap_or(Duration::from_secs(10))
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            told.recv_timeout(period)
        };
        match heard {
            Ok(Refresh::RoutesChanged) => continue,
            Ok(Refresh::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for route in named {
            if let Err(e) = route.refresh() {
                // log: not client input: the resolver, once a period per route at most.
                tracing::warn!(route = %route.name, "udp: keeping the previous addresses: {e}");
            }
        }
    }
}
