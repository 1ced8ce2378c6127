//! A UDP route as it runs: its description and bound addresses (replaced by a reload), its
//! counters, and the upstreams new sessions go to (names refreshed off the event loop).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::upstreams::{Picked, UdpUpstreams, resolve};
use crate::balance::GroupState;
use crate::error::Error;
use crate::route::{Resolution, Route};
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
    upstreams: Mutex<Arc<UdpUpstreams>>,
    /// Sessions started, for taking an upstream's addresses in turn.
    next: AtomicUsize,
}

impl UdpRouteState {
    /// The state of `route` bound at `listen`, with its upstreams resolved once.
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
        let upstreams = resolve(&route, &resolution, &own, None)?;
        Ok(UdpRouteState::running(
            route,
            Running {
                resolution,
                listen,
                own,
                upstreams,
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
            upstreams: Mutex::new(Arc::new(running.upstreams)),
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
    /// with the upstreams [`resolve`] gave for them: new sessions use them; open ones keep
    /// their upstream.
    pub(crate) fn replace(&self, route: Route, running: Running) {
        *self.route.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(route);
        *self.resolution.write().unwrap_or_else(|e| e.into_inner()) = running.resolution;
        *self.listen.write().unwrap_or_else(|e| e.into_inner()) = running.listen;
        *self.own.write().unwrap_or_else(|e| e.into_inner()) = running.own;
        *self.upstreams.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(running.upstreams);
    }

    /// The upstreams as new sessions see them now.
    pub(crate) fn upstreams(&self) -> Arc<UdpUpstreams> {
        Arc::clone(&self.upstreams.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The route's group of upstreams, if it has several.
    pub(crate) fn group(&self) -> Option<Arc<GroupState>> {
        self.upstreams().group().cloned()
    }

    /// The upstream of a new session from `client` (see [`UdpUpstreams::pick`]).
    pub(crate) fn pick(&self, client: SocketAddr, now: Instant) -> Option<Picked> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.upstreams().pick(client, turn, now)
    }

    /// Looks the upstream names up again (on the resolver thread). A name whose lookup fails
    /// keeps the addresses it had: a resolver that hiccups does not stop new sessions. Group
    /// members keep their health.
    ///
    /// # Errors
    ///
    /// The lookup failed or gave only refused addresses (for a group: every member's).
    pub(crate) fn refresh(&self) -> Result<(), Error> {
        let route = self.route();
        let resolution = self
            .resolution
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let own = self.own.read().unwrap_or_else(|e| e.into_inner()).clone();
        let previous = self.upstreams();
        let upstreams = resolve(&route, &resolution, &own, Some(&previous))?;
        *self.upstreams.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(upstreams);
        Ok(())
    }

    /// Whether an upstream is a name (so that refreshing means something).
    pub(crate) fn has_name(&self) -> bool {
        UdpUpstreams::has_name(&self.route())
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
    /// The upstreams, from [`resolve`].
    pub(crate) upstreams: UdpUpstreams,
}
