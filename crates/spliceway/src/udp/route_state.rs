//! A UDP route as it runs: its description and bound addresses (replaced by a reload), its
//! counters, and the upstream addresses new sessions go to (refreshed off the event loop).

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
    /// The bound addresses (with the ports the kernel chose for port 0); a reload may move
    /// them.
    listen: RwLock<Vec<SocketAddr>>,
    pub(crate) stats: Stats,
    /// One line a second about datagrams dropped for new clients (refused, limits, drain).
    pub(crate) drop_log: LogLimit,
    route: RwLock<Arc<Route>>,
    resolution: RwLock<Resolution>,
    /// Every UDP address of the relay: an upstream equal to one would loop (a reload that adds
    /// or moves routes changes them).
    own: RwLock<Vec<SocketAddr>>,
    addrs: Mutex<Arc<[SocketAddr]>>,
    next: AtomicUsize,
}

impl UdpRouteState {
    /// The state of `route` bound at `listen`, with its upstream resolved once.
    ///
    /// # Errors
    ///
    /// The upstream does not resolve, or only to refused addresses (see [`resolve`]).
    pub(crate) fn new(
        route: Route,
        listen: Vec<SocketAddr>,
        resolution: Resolution,
        own: Vec<SocketAddr>,
    ) -> Result<Self, Error> {
        let addrs = resolve(&route, &resolution, &own)?;
        Ok(UdpRouteState::running(
            route,
            Running {
                resolution,
                listen,
                own,
                addrs,
            },
        ))
    }

    /// The state of `route` with what a reload checked for it.
    pub(crate) fn running(route: Route, running: Running) -> Self {
        UdpRouteState {
            name: route.name.clone(),
            listen: RwLock::new(running.listen),
            stats: Stats::default(),
            drop_log: LogLimit::default(),
            route: RwLock::new(Arc::new(route)),
            resolution: RwLock::new(running.resolution),
            own: RwLock::new(running.own),
            addrs: Mutex::new(running.addrs.into()),
            next: AtomicUsize::new(0),
        }
    }

    /// The route's description as it is now (read once per batch of datagrams).
    pub(crate) fn route(&self) -> Arc<Route> {
        Arc::clone(&self.route.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The addresses the route is bound to now.
    pub(crate) fn listen(&self) -> Vec<SocketAddr> {
        self.listen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the description, bound addresses and the relay's own addresses (a reload),
    /// with the upstream addresses [`resolve`] gave for them: new sessions use them; open ones
    /// keep their upstream.
    pub(crate) fn replace(&self, route: Route, running: Running) {
        *self.route.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(route);
        *self.resolution.write().unwrap_or_else(|e| e.into_inner()) = running.resolution;
        *self.listen.write().unwrap_or_else(|e| e.into_inner()) = running.listen;
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = running.own;
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = running.addrs.into();
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
        let own = self.own.read().unwrap_or_else(|e| e.into_inner()).clone();
        let addrs = resolve(&route, &resolution, &own)?;
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

/// What a reload gives a UDP route that stays: everything but its description, checked.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) resolution: Resolution,
    /// Its bound addresses.
    pub(crate) listen: Vec<SocketAddr>,
    /// Every UDP address of the relay after the reload.
    pub(crate) own: Vec<SocketAddr>,
    /// The upstream addresses, from [`resolve`].
    pub(crate) addrs: Vec<SocketAddr>,
}

/// The addresses `route`'s upstream leads to, by the route's address policy: an IP literal as
/// written, a name's addresses less those the policy refuses (link-local, so the metadata
/// service, never; loopback allowed, as for a configured TCP upstream) and less the relay's
/// own UDP addresses.
pub(crate) fn resolve(
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
