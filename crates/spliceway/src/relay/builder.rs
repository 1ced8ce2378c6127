//! [`RelayBuilder`]: describes a relay, then checks it, resolves its upstream names once and
//! binds its listeners, so that every start-up problem is an error before anything runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::handle::Reloads;
use super::run::Relay;
use super::setup::{
    LifetimeSettings, bind_all, copies, make_transparent, resolve_upstreams, route_state, validate,
};
use crate::descriptors::DescriptorBudget;
use crate::error::{Error, SettingsError};
use crate::event_loop::{Source, Worker};
use crate::listener;
use crate::resolver::Resolver;
use crate::route::{Protocol, Resolution, Route};
use crate::state::mailbox::Mailbox;
use crate::state::relay::RelayState;
use crate::state::route::RouteState;
use crate::transfer::buffer::PoolLimits;

/// Default time a graceful shutdown waits for open connections before resetting them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

// Defined here rather than beside `Relay` so that the builder uses the relay and not the other
// way round (`run.rs` knows nothing of how a relay is described).
impl Relay {
    /// Starts describing a relay.
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }
}

/// Describes a relay: its routes and relay-wide settings.
#[must_use]
#[derive(Debug)]
pub struct RelayBuilder {
    routes: Vec<Route>,
    threads: usize,
    max_connections: Option<usize>,
    drain_timeout: Duration,
    drain_delay: Duration,
    pool_limits: PoolLimits,
    backlog: i32,
    resolution: Resolution,
    /// Listening sockets bound elsewhere, served instead of binding their addresses.
    passed: Vec<std::net::TcpListener>,
    /// UDP sockets bound elsewhere, likewise.
    passed_udp: Vec<std::net::UdpSocket>,
    /// Descriptors kept out of the relay's budget for the rest of the program.
    reserved_descriptors: usize,
}

impl Default for RelayBuilder {
    fn default() -> Self {
        RelayBuilder {
            routes: Vec::new(),
            threads: 1,
            max_connections: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            drain_delay: Duration::ZERO,
            pool_limits: PoolLimits::default(),
            backlog: listener::DEFAULT_BACKLOG,
            resolution: Resolution::system(),
            passed: Vec::new(),
            passed_udp: Vec::new(),
            reserved_descriptors: 0,
        }
    }
}

impl RelayBuilder {
    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Number of worker threads (event loops), each with its own `SO_REUSEPORT` listener per
    /// address. Default 1; `0` means one per CPU.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Limits the connections the whole relay holds at once (default: no limit). At the limit
    /// the relay stops accepting; new clients wait in the kernel's backlog.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// How long [`RelayHandle::shutdown`](crate::RelayHandle::shutdown) waits for open connections before resetting them.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a graceful shutdown keeps accepting after it starts, while
    /// [`RelayHandle::is_stopping`](crate::RelayHandle::is_stopping) already says so (default
    /// zero). A load balancer that sees the relay's readiness fail may send new connections
    /// for a while (an AWS NLB does during its deregistration delay): they are served, not
    /// refused. Then the relay stops accepting and drains for the drain timeout.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Bounds of each worker's pipe pool.
    pub fn pool_limits(mut self, limits: PoolLimits) -> Self {
        self.pool_limits = limits;
        self
    }

    /// Length of each listener's accept queue (capped by `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Resolves upstream names of routes without their own [`Resolution`] with `lookup`
    /// instead of the system resolver. It runs on the relay's resolver threads, never on an
    /// event loop.
    pub fn resolver(
        mut self,
        lookup: impl Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        self.resolution = Resolution::custom("custom", lookup);
        self
    }

    /// Serves the route whose `listen` address is this socket's bound address on this socket
    /// instead of binding one: a socket bound by systemd (socket activation), or by the
    /// process this one replaces (an upgrade that hands its listeners over, so that no client
    /// queued on them is lost). Several sockets may be passed for one address (an
    /// `SO_REUSEPORT` group); every one is served, spread over the workers, and a worker
    /// without one shares one. Addresses without a passed socket are bound as usual.
    ///
    /// [`build`](Self::build) fails with [`Error::Invalid`] if a socket's address is no
    /// route's `listen` address, and with [`Error::Bind`] if it is not a listening TCP socket.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.passed.push(listener);
        self
    }

    /// Serves the UDP route whose `listen` address is this socket's bound address on this
    /// socket instead of binding one: the socket of the process this one replaces
    /// ([`RelayHandle::udp_sockets`](crate::RelayHandle::udp_sockets)), so that the address is
    /// never unbound and no datagram sent to it is refused. Addresses without a passed socket
    /// are bound as usual.
    ///
    /// [`build`](Self::build) fails with [`Error::Invalid`] if a socket's address is no UDP
    /// route's `listen` address, and with [`Error::Bind`] if it is not a UDP socket.
    pub fn udp_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.passed_udp.push(socket);
        self
    }

    /// Keeps `n` more descriptors out of the relay's share of the open-file limit, for what the
    /// program opens beside the relay (default 0). The relay counts every descriptor it holds
    /// against a budget taken when it is built: the soft `RLIMIT_NOFILE`, less the descriptors
    /// open then, less a reserve of [`RESERVED_DESCRIPTORS`](crate::limits::RESERVED_DESCRIPTORS) or a
    /// sixteenth of the limit (whichever is more), less `n`. Reserve what a bounded server of
    /// the program's own (a metrics endpoint with a connection cap) may hold at most: then
    /// neither it nor the relay can run the other out of descriptors. Calls add up.
    pub fn reserve_descriptors(mut self, n: usize) -> Self {
        self.reserved_descriptors = self.reserved_descriptors.saturating_add(n);
        self
    }

    /// Checks the description, resolves upstream names once (so that a typo fails now), and
    /// binds every listening socket. Nothing is accepted until [`Relay::run`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for inconsistent settings, [`Error::Resolve`] for an upstream name
    /// that does not resolve, [`Error::Bind`] for an address in use or not allowed,
    /// [`Error::SelfLoop`] for an IP-literal upstream that is one of the relay's own listening
    /// addresses (of any route).
    pub fn build(self) -> Result<Relay, Error> {
        validate(&self.routes)?;
        // UDP routes are served by the UDP worker (`udp/`); everything below is TCP's.
        let (udp_routes, tcp_routes): (Vec<Route>, Vec<Route>) = self
            .routes
            .into_iter()
            .partition(|r| r.protocol == Protocol::Udp);
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let settings = LifetimeSettings {
            threads,
            backlog: self.backlog,
            resolution: self.resolution.clone(),
        };
        let resolver = Resolver::new();
        resolve_upstreams(&tcp_routes, &resolver, &settings.resolution)?;

        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = mio::Poll::new().map_err(Error::EventLoop)?;
            let waker = mio::Waker::new(poll.registry(), Source::Waker.token())
                .map_err(Error::EventLoop)?;
            mailboxes.push(Arc::new(Mailbox::new(waker)));
            polls.push(poll);
        }

        let mut passed = passed_by_address(self.passed, &tcp_routes)?;
        // Copies of every socket, kept for RelayHandle::listening_sockets (an upgrade).
        let mut handoff = Vec::new();
        // Bind every route first: each route's state knows every listener of the relay.
        let mut bound_routes = Vec::with_capacity(tcp_routes.len());
        for route in &tcp_routes {
            let mut actual = Vec::new();
            let mut bound = Vec::new();
            for &addr in &route.listen {
                let bind_error = |source| Error::Bind { addr, source };
                let per_worker = match passed.iter().position(|(a, _)| *a == addr) {
                    Some(index) => {
                        let sockets = passed.swap_remove(index).1;
                        handoff.extend(copies(addr, &sockets).map_err(bind_error)?);
                        if route.options.transparent {
                            make_transparent(addr, &sockets)?;
                        }
                        listener::spread(sockets, threads).map_err(bind_error)?
                    }
                    None => {
                        let sockets = bind_all(addr, &settings, &[], route.options.transparent)?;
                        let actual = sockets[0].local_addr().map_err(bind_error)?;
                        handoff.extend(copies(actual, &sockets).map_err(bind_error)?);
                        sockets
                    }
                };
                actual.push(
                    per_worker[0]
                        .local_addr()
                        .map_err(|source| Error::Bind { addr, source })?,
                );
                bound.push(per_worker);
            }
            bound_routes.push((route, actual, bound));
        }
        let relay_listeners: Arc<[SocketAddr]> = bound_routes
            .iter()
            .flat_map(|(_, actual, _)| actual.iter().copied())
            .collect();
        let mut states = Vec::new();
        let mut sockets: Vec<(Arc<RouteState>, Vec<std::net::TcpListener>)> = Vec::new();
        for (route, actual, bound) in bound_routes {
            let state = Arc::new(route_state(
                route,
                actual,
                &relay_listeners,
                Arc::default(),
                None,
                &settings,
            )?);
            state.apply_limits();
            for per_worker in bound {
                sockets.push((Arc::clone(&state), per_worker));
            }
            states.push(state);
        }

        // Counted now that the epoll instances, wakers and listeners exist.
        let descriptors = Arc::new(DescriptorBudget::for_this_process(
            self.reserved_descriptors,
        ));
        let relay = Arc::new(RelayState::new(
            states,
            self.max_connections,
            (self.drain_delay, self.drain_timeout),
            resolver,
            mailboxes.clone(),
            descriptors,
        ));
        let udp_refs: Vec<&Route> = udp_routes.iter().collect();
        let udp = crate::udp::build(&udp_refs, &settings.resolution, &relay, self.passed_udp)?;
        let mut workers = Vec::with_capacity(threads);
        for (index, poll) in polls.into_iter().enumerate() {
            workers.push(Worker::new(
                index,
                poll,
                Arc::clone(&mailboxes[index]),
                Arc::clone(&relay),
                self.pool_limits,
            ));
        }
        for (state, per_worker) in sockets {
            // One per worker, or more when more sockets were passed than there are workers.
            for (index, socket) in per_worker.into_iter().enumerate() {
                let addr = socket.local_addr().unwrap_or(state.listen[0]);
                workers[index % threads]
                    .add_listener(socket, Arc::clone(&state))
                    .map_err(|source| Error::Bind { addr, source })?;
            }
        }
        Ok(Relay::new(
            relay,
            Arc::new(Reloads::new(settings, handoff)),
            workers,
            udp,
        ))
    }
}

/// The passed sockets, prepared and grouped by bound address; each address must be a route's.
fn passed_by_address(
    passed: Vec<std::net::TcpListener>,
    routes: &[Route],
) -> Result<Vec<(SocketAddr, Vec<std::net::TcpListener>)>, Error> {
    let mut groups: Vec<(SocketAddr, Vec<std::net::TcpListener>)> = Vec::new();
    for socket in passed {
        let addr = listener::adopt(&socket).map_err(|source| Error::Bind {
            addr: socket
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })?;
        if !routes.iter().any(|r| r.listen.contains(&addr)) {
            return Err(SettingsError::PassedSocketUnrouted { addr }.into());
        }
        match groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, sockets)) => sockets.push(socket),
            None => groups.push((addr, vec![socket])),
        }
    }
    Ok(groups)
}
