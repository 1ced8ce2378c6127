//! The public face of the engine: [`RelayBuilder`] describes a relay, [`Relay::run`] runs it on
//! the calling thread (plus one thread per extra worker), and a cloneable [`RelayHandle`] reads
//! its counters and stops it from anywhere.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::address::UpstreamAddr;
use crate::buffer::PoolLimits;
use crate::error::Error;
use crate::event_loop::{WAKER_TOKEN, Worker};
use crate::listener;
use crate::mailbox::Mailbox;
use crate::resolver::{LookupFn, Resolver, Target, is_local, system_lookup};
use crate::route::Route;
use crate::state::{Control, RouteState, Shared};
use crate::stats::{Stats, StatsSnapshot};

/// Default time a graceful shutdown waits for open connections before resetting them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Describes a relay: its routes and relay-wide settings.
#[must_use]
pub struct RelayBuilder {
    routes: Vec<Route>,
    threads: usize,
    max_connections: Option<usize>,
    drain_timeout: Duration,
    pool_limits: PoolLimits,
    backlog: i32,
    lookup: Arc<LookupFn>,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("routes", &self.routes)
            .field("threads", &self.threads)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("pool_limits", &self.pool_limits)
            .finish_non_exhaustive()
    }
}

impl Default for RelayBuilder {
    fn default() -> Self {
        RelayBuilder {
            routes: Vec::new(),
            threads: 1,
            max_connections: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            pool_limits: PoolLimits::default(),
            backlog: listener::DEFAULT_BACKLOG,
            lookup: Arc::new(system_lookup),
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

    /// How long [`RelayHandle::shutdown`] waits for open connections before resetting them.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
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

    /// Resolves upstream names with `lookup` instead of the system resolver. It runs on the
    /// relay's resolver threads, never on an event loop.
    pub fn resolver(
        mut self,
        lookup: impl Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        self.lookup = Arc::new(lookup);
        self
    }

    /// Checks the description, resolves upstream names once (so that a typo fails now), and
    /// binds every listening socket. Nothing is accepted until [`Relay::run`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for inconsistent settings, [`Error::Resolve`] for an upstream name
    /// that does not resolve, [`Error::Bind`] for an address in use or not allowed,
    /// [`Error::SelfLoop`] for an upstream that is the route's own listening address.
    pub fn build(self) -> Result<Relay, Error> {
        if self.routes.is_empty() {
            return Err(Error::Invalid("no routes".into()));
        }
        let mut names = HashSet::new();
        for route in &self.routes {
            if !names.insert(route.name.as_str()) {
                return Err(Error::Invalid(format!("two routes are named {:?}", route.name)));
            }
            if route.listen.is_empty() {
                return Err(Error::Invalid(format!(
                    "route {:?} has no listen address",
                    route.name
                )));
            }
            route.options.validate(&route.name).map_err(Error::Invalid)?;
        }
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        let resolver = Resolver::new(Arc::clone(&self.lookup));
        for route in &self.routes {
            if let UpstreamAddr::Name { host, port } = &route.upstream {
                resolver
                    .resolve_blocking(host, *port, route.options.resolve_cache_ttl)
                    .map_err(|source| Error::Resolve {
                        upstream: route.upstream.to_string(),
                        source,
                    })?;
            }
        }

        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = mio::Poll::new().map_err(Error::EventLoop)?;
            let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN).map_err(Error::EventLoop)?;
            mailboxes.push(Arc::new(Mailbox::new(waker)));
            polls.push(poll);
        }

        // Bind: probe each address first (see `listener`), then one socket per worker.
        let reuse_port = threads > 1;
        let mut bound: Vec<Vec<Vec<std::net::TcpListener>>> = Vec::new();
        let mut states = Vec::new();
        for route in &self.routes {
            let mut per_addr = Vec::new();
            let mut actual_addrs = Vec::new();
            for &addr in &route.listen {
                let bind_error = |source| Error::Bind { addr, source };
                listener::probe_free(addr).map_err(bind_error)?;
                let first = listener::bind(addr, reuse_port, self.backlog).map_err(bind_error)?;
                let actual = first.local_addr().map_err(bind_error)?;
                let mut sockets = vec![first];
                for _ in 1..threads {
                    sockets.push(
                        listener::bind(actual, true, self.backlog)
                            .map_err(|source| Error::Bind { addr: actual, source })?,
                    );
                }
                actual_addrs.push(actual);
                per_addr.push(sockets);
            }
            let literal_targets = match route.upstream {
                UpstreamAddr::Ip(addr) => Some(Arc::from(vec![Target {
                    addr,
                    local: is_local(addr.ip()),
                }])),
                UpstreamAddr::Name { .. } => None,
            };
            let state = RouteState {
                name: route.name.clone(),
                upstream: route.upstream.clone(),
                options: route.options.clone(),
                listen: actual_addrs,
                literal_targets,
                stats: Stats::default(),
                active: AtomicUsize::new(0),
                max_connections: route.max_connections,
                next_target: AtomicUsize::new(0),
            };
            if let Some(targets) = &state.literal_targets {
                if let Some(listen) = state.loops_back(&targets[0]) {
                    return Err(Error::SelfLoop {
                        route: state.name.clone(),
                        upstream: targets[0].addr,
                        listen,
                    });
                }
            }
            bound.push(per_addr);
            states.push(Arc::new(state));
        }

        let shared = Arc::new(Shared::new(
            states.clone(),
            self.max_connections,
            self.drain_timeout,
            resolver,
            mailboxes.clone(),
        ));
        let mut workers = Vec::with_capacity(threads);
        for (index, poll) in polls.into_iter().enumerate() {
            workers.push(Worker::new(
                index,
                poll,
                Arc::clone(&mailboxes[index]),
                Arc::clone(&shared),
                self.pool_limits,
            ));
        }
        for (route, per_addr) in states.iter().zip(bound) {
            for sockets in per_addr {
                for (worker, socket) in workers.iter_mut().zip(sockets) {
                    let addr = socket.local_addr().ok();
                    worker
                        .add_listener(socket, Arc::clone(route))
                        .map_err(|source| Error::Bind {
                            addr: addr.unwrap_or_else(|| route.listen[0]),
                            source,
                        })?;
                }
            }
        }
        Ok(Relay { shared, workers })
    }
}

/// A relay, built and bound, ready to [`run`](Relay::run).
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
}

impl Relay {
    /// Starts describing a relay.
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    /// A handle to read counters and stop the relay from other threads.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The addresses the relay listens on, per route, in the order given (with the ports the
    /// kernel chose for port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.handle().local_addrs()
    }

    /// Runs the relay on the calling thread (worker 0) and one more thread per extra worker,
    /// until [`RelayHandle::shutdown`] or [`RelayHandle::shutdown_now`] and every connection is
    /// gone.
    ///
    /// # Errors
    ///
    /// [`Error::EventLoop`] if epoll fails, [`Error::WorkerPanicked`] if a worker panicked (a
    /// bug). Failures of single connections are never errors here.
    pub fn run(self) -> Result<(), Error> {
        let Relay { shared, workers } = self;
        shared.resolver.start();
        let mut workers = workers.into_iter();
        let first = workers.next();
        let result = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for worker in workers {
                let spawned = std::thread::Builder::new()
                    .name("spliceway-worker".into())
                    .spawn_scoped(scope, move || worker.run());
                match spawned {
                    Ok(handle) => handles.push(handle),
                    Err(e) => {
                        shared.set_control(Control::Stopping, None);
                        return Err(Error::EventLoop(e));
                    }
                }
            }
            let mut result = match first {
                Some(worker) => worker.run().map_err(Error::EventLoop),
                None => Ok(()),
            };
            if result.is_err() {
                shared.set_control(Control::Stopping, None);
            }
            for handle in handles {
                let joined = match handle.join() {
                    Ok(r) => r.map_err(Error::EventLoop),
                    Err(panic) => Err(Error::WorkerPanicked(panic_message(&panic))),
                };
                if let (Ok(()), Err(e)) = (&result, joined) {
                    shared.set_control(Control::Stopping, None);
                    result = Err(e);
                }
            }
            result
        });
        shared.resolver.stop();
        result
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Reads a running relay's counters and stops it. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// The relay's counters (all routes).
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// One route's counters.
    pub fn route_stats(&self, route: &str) -> Option<StatsSnapshot> {
        self.shared
            .routes
            .iter()
            .find(|r| r.name == route)
            .map(|r| r.stats.snapshot())
    }

    /// Every route's name and counters.
    pub fn all_route_stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.shared
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.stats.snapshot()))
            .collect()
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Pipes the workers hold (in use and pooled), as of each worker's last closed connection.
    pub fn pipes_open(&self) -> usize {
        self.shared.pipes_open.load(Ordering::Relaxed)
    }

    /// The addresses the relay listens on, per route.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .routes
            .iter()
            .flat_map(|r| r.listen.iter().map(|a| (r.name.clone(), *a)))
            .collect()
    }

    /// Graceful shutdown: stop accepting, let open connections finish for up to the drain
    /// timeout, then reset the rest. [`Relay::run`] returns when all are gone.
    pub fn shutdown(&self) {
        self.shared.set_control(Control::Draining, None);
    }

    /// Graceful shutdown with an explicit drain timeout.
    pub fn shutdown_with_drain(&self, drain_timeout: Duration) {
        self.shared
            .set_control(Control::Draining, Some(drain_timeout));
    }

    /// Immediate shutdown: reset every open connection and stop.
    pub fn shutdown_now(&self) {
        self.shared.set_control(Control::Stopping, None);
    }

    /// Whether a shutdown was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.control() != Control::Running
    }
}
