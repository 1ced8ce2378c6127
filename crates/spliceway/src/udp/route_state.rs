//! A UDP route as it runs: its description (replaced by a reload), its counters, and the
//! upstream addresses new sessions go to (refreshed off the event loop).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::address::UpstreamAddr;
use crate::error::{Error, SettingsError};
use crate::route::{NameOrigin, Resolution, Route, Upstream};
use crate::state::log_limit::LogLimit;
use crate::stats::Stats;

/// A UDP route's running state, shared by the worker, the resolver thread and the handle.
#[derive(Debug)]
pub(crate) struct UdpRouteState {
    pub(crate) name: String,
    /// The bound addresses (with the ports the kernel chose for port 0).
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) stats: Stats,
    /// One line a second about datagrams dropped for new clients (refused, limits, drain).
    pub(crate) drop_log: LogLimit,
    route: RwLock<Arc<Route>>,
    resolution: RwLock<Resolution>,
    /// Every UDP address of the relay: an upstream equal to one would loop.
    own: Vec<SocketAddr>,
    addrs: Mutex<Arc<[SocketAddr]>>,
    next: AtomicUsize,
}

impl UdpRouteState {
    /// The state of `route` bound at `listen`, with its upstream resolved once.
    ///
    /// # Errors
    ///
    /// As [`UdpRouteState::resolve`], in the relay's error type.
    pub(crate) fn new(
        route: Route,
        listen: Vec<SocketAddr>,
        resolution: Resolution,
        own: Vec<SocketAddr>,
    ) -> Result<Self, Error> {
        let addrs = resolve(&route, &resolution, &own)?;
        Ok(UdpRouteState {
            name: route.name.clone(),
            listen,
            stats: Stats::default(),
            drop_log: LogLimit::default(),
            route: RwLock::new(Arc::new(route)),
            resolution: RwLock::new(resolution),
            own,
            addrs: Mutex::new(addrs.into()),
            next: AtomicUsize::new(0),
        })
    }

    /// The route's description as it is now (read once per batch of datagrams).
    pub(crate) fn route(&self) -> Arc<Route> {
        Arc::clone(&self.route.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The upstream addresses `route` would have here (a reload checks every route first).
    ///
    /// # Errors
    ///
    /// The upstream does not resolve, or only to refused addresses.
    pub(crate) fn prepare(
        &self,
        route: &Route,
        resolution: &Resolution,
    ) -> Result<Vec<SocketAddr>, Error> {
        resolve(route, resolution, &self.own)
    }

    /// Replaces the description (a reload), with the addresses [`prepare`](Self::prepare) gave:
    /// new sessions use it; open ones keep their upstream.
    pub(crate) fn replace(&self, route: Route, resolution: Resolution, addrs: Vec<SocketAddr>) {
        *self.route.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(route);
        *self.resolution.write().unwrap_or_else(|e| e.into_inner()) = resolution;
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs.into();
    }

    /// The upstream address of a new session: the resolved addresses in turn.
    pub(crate) fn pick(&self) -> Option<SocketAddr> {
        let addrs = Arc::clone(&self.addrs.lock().unwrap_or_else(|e| e.into_inner()));
        if addrs.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(addrs[turn % addrs.len()])
    }

    /// Looks the upstream name up again (on the resolver thread). A failed lookup keeps the
    /// addresses the route had: a resolver that hiccups does not stop new sessions.
    ///
    /// # Errors
    ///
    /// The lookup failed or gave only refused addresses.
    pub(crate) fn refresh(&self) -> Result<(), Error> {
        let route = self.route();
        let resolution = self
            .resolution
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let addrs = resolve(&route, &resolution, &self.own)?;
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs.into();
        Ok(())
    }

    /// Whether the upstream is a name (so that refreshing means something).
    pub(crate) fn has_name(&self) -> bool {
        matches!(
            self.route().upstream,
            Upstream::Fixed(UpstreamAddr::Name { .. })
        )
    }
}

/// The addresses `route`'s upstream leads to, by the route's address policy: an IP literal as
/// written, a name's addresses less those the policy refuses (link-local, so the metadata
/// service, never; loopback allowed, as for a configured TCP upstream) and less the relay's
/// own UDP addresses.
fn resolve(
    route: &Route,
    resolution: &Resolution,
    own: &[SocketAddr],
) -> Result<Vec<SocketAddr>, Error> {
    let upstream = match &route.upstream {
        Upstream::Fixed(addr) => addr,
        Upstream::Sni(_) => {
            return Err(SettingsError::UdpUnsupported {
                route: route.name.clone(),
                what: "an upstream chosen by TLS server name (SNI)",
            }
            .into());
        }
        Upstream::OriginalDestination | Upstream::HttpConnect(_) => {
            return Err(SettingsError::UdpUnsupported {
                route: route.name.clone(),
                what: "an upstream the client chooses (original destination or HTTP CONNECT)",
            }
            .into());
        }
        Upstream::Group(_) => {
            return Err(SettingsError::UdpUnsupported {
                route: route.name.clone(),
                what: "several upstreams (balancing and health checks are for TCP routes)",
            }
            .into());
        }
    };
    let self_loop = |addr: SocketAddr| {
        own.iter()
            .copied()
            .find(|listen| crate::relay::reached_listener(&[*listen], addr).is_some())
    };
    match upstream {
        UpstreamAddr::Ip(addr) => match self_loop(*addr) {
            Some(listen) => Err(Error::SelfLoop {
                route: route.name.clone(),
                upstream: *addr,
                listen,
            }),
            None => Ok(vec![*addr]),
        },
        UpstreamAddr::Name { host, port } => {
            let fail = |source: io::Error| Error::Resolve {
                upstream: upstream.to_string(),
                source,
            };
            let (found, _ttl) = resolution.lookup(host, *port).map_err(fail)?;
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| {
                    route
                        .address_policy
                        .refusal(a.ip(), NameOrigin::Configured)
                        .is_none()
                        && self_loop(*a).is_none()
                })
                .collect();
            if kept.is_empty() {
                return Err(fail(io::Error::other(format!(
                    "no usable address ({} found, each refused by the address policy or the \
                     relay's own)",
                    found.len()
                ))));
            }
            Ok(kept)
        }
    }
}
