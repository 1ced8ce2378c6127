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
use crate::mailbox::{Mailbox, Message, ReloadPlan};
use crate::resolver::{Resolver, Target, is_local};
use crate::route::{Resolution, Route, Upstream};
use crate::state::{Control, RouteCounters, RouteState, Shared};
use crate::stats::StatsSnapshot;

/// Default time a graceful shutdown waits for open connections before resetting them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Describes a relay: its routes and relay-wide settings.
#[must_use]
#[derive(Debug)]
pub struct RelayBuilder {
    routes: Vec<Route>,
    threads: usize,
    max_connections: Option<usize>,
    drain_timeout: Duration,
    pool_limits: PoolLimits,
    backlog: i32,
    resolution: Resolution,
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
            resolution: Resolution::system(),
        }
    }
}

/// Settings fixed for the relay's lifetime, kept for reloads.
#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    pub(crate) threads: usize,
    pub(crate) backlog: i32,
    pub(crate) resolution: Resolution,
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

    /// Checks the description, resolves upstream names once (so that a typo fails now), and
    /// binds every listening socket. Nothing is accepted until [`Relay::run`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for inconsistent settings, [`Error::Resolve`] for an upstream name
    /// that does not resolve, [`Error::Bind`] for an address in use or not allowed,
    /// [`Error::SelfLoop`] for an upstream that is the route's own listening address.
    pub fn build(self) -> Result<Relay, Error> {
        validate(&self.routes)?;
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let fixed = Fixed {
            threads,
            backlog: self.backlog,
            resolution: self.resolution.clone(),
        };
        let resolver = Resolver::new();
        resolve_upstreams(&self.routes, &resolver, &fixed.resolution)?;

        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = mio::Poll::new().map_err(Error::EventLoop)?;
            let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN).map_err(Error::EventLoop)?;
            mailboxes.push(Arc::new(Mailbox::new(waker)));
            polls.push(poll);
        }

        let mut states = Vec::new();
        let mut sockets: Vec<(Arc<RouteState>, Vec<std::net::TcpListener>)> = Vec::new();
        for route in &self.routes {
            let mut actual = Vec::new();
            let mut bound = Vec::new();
            for &addr in &route.listen {
                let per_worker = bind_all(addr, &fixed)?;
                actual.push(
                    per_worker[0]
                        .local_addr()
                        .map_err(|source| Error::Bind { addr, source })?,
                );
                bound.push(per_worker);
            }
            let state = Arc::new(route_state(route, actual, Arc::default(), &fixed)?);
            for per_worker in bound {
                sockets.push((Arc::clone(&state), per_worker));
            }
            states.push(state);
        }

        let shared = Arc::new(Shared::new(
            states,
            self.max_connections,
            self.drain_timeout,
            resolver,
            mailboxes.clone(),
            fixed,
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
        for (state, per_worker) in sockets {
            for (worker, socket) in workers.iter_mut().zip(per_worker) {
                let addr = socket.local_addr().unwrap_or(state.listen[0]);
                worker
                    .add_listener(socket, Arc::clone(&state))
                    .map_err(|source| Error::Bind { addr, source })?;
            }
        }
        Ok(Relay { shared, workers })
    }
}

/// Checks routes for consistency.
fn validate(routes: &[Route]) -> Result<(), Error> {
    if routes.is_empty() {
        return Err(Error::Invalid("no routes".into()));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for route in routes {
        if !names.insert(route.name.as_str()) {
            return Err(Error::Invalid(format!(
                "two routes are named {:?}",
                route.name
            )));
        }
        if route.listen.is_empty() {
            return Err(Error::Invalid(format!(
                "route {:?} has no listen address",
                route.name
            )));
        }
        for addr in &route.listen {
            if addr.port() != 0 && !addrs.insert(*addr) {
                return Err(Error::Invalid(format!("{addr} is listed twice")));
            }
        }
        if let Upstream::Sni(table) = &route.upstream
            && table.entries.is_empty()
        {
            return Err(Error::Invalid(format!(
                "route {:?} has an empty SNI table",
                route.name
            )));
        }
        route
            .options
            .validate(&route.name)
            .map_err(Error::Invalid)?;
    }
    Ok(())
}

/// Resolves every upstream name known in advance (fixed upstreams, explicit SNI upstreams),
/// so that typos fail at start-up (or make a reload fail) instead of failing every connection.
fn resolve_upstreams(
    routes: &[Route],
    resolver: &Resolver,
    default: &Resolution,
) -> Result<(), Error> {
    for route in routes {
        let resolution = route.resolution.as_ref().unwrap_or(default);
        let names: Vec<&UpstreamAddr> = match &route.upstream {
            Upstream::Fixed(addr) => vec![addr],
            Upstream::Sni(table) => table
                .entries
                .iter()
                .filter_map(|e| e.upstream.as_ref())
                .collect(),
        };
        for upstream in names {
            if let UpstreamAddr::Name { host, port } = upstream {
                resolver
                    .resolve_blocking(resolution, host, *port, route.options.resolve_cache_ttl)
                    .map_err(|source| Error::Resolve {
                        upstream: upstream.to_string(),
                        source,
                    })?;
            }
        }
    }
    Ok(())
}

/// Binds `addr` once per worker (after checking nothing else listens there).
fn bind_all(addr: SocketAddr, fixed: &Fixed) -> Result<Vec<std::net::TcpListener>, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let reuse_port = fixed.threads > 1;
    listener::probe_free(addr).map_err(bind_error)?;
    let first = listener::bind(addr, reuse_port, fixed.backlog).map_err(bind_error)?;
    let actual = first.local_addr().map_err(bind_error)?;
    let mut sockets = vec![first];
    for _ in 1..fixed.threads {
        sockets.push(
            listener::bind(actual, true, fixed.backlog).map_err(|source| Error::Bind {
                addr: actual,
                source,
            })?,
        );
    }
    Ok(sockets)
}

/// The runtime state of a route bound to `listen`.
fn route_state(
    route: &Route,
    listen: Vec<SocketAddr>,
    counters: Arc<RouteCounters>,
    fixed: &Fixed,
) -> Result<RouteState, Error> {
    let literal_targets = match &route.upstream {
        Upstream::Fixed(UpstreamAddr::Ip(addr)) => Some(Arc::from(vec![Target {
            addr: *addr,
            local: is_local(addr.ip()),
        }])),
        _ => None,
    };
    let state = RouteState {
        name: route.name.clone(),
        upstream: route.upstream.clone(),
        options: route.options.clone(),
        access: route.access.clone(),
        resolution: route
            .resolution
            .clone()
            .unwrap_or_else(|| fixed.resolution.clone()),
        listen,
        literal_targets,
        counters,
        max_connections: route.max_connections,
        next_target: AtomicUsize::new(0),
    };
    if let Some(targets) = &state.literal_targets
        && let Some(listen) = state.loops_back(&targets[0])
    {
        return Err(Error::SelfLoop {
            route: state.name.clone(),
            upstream: targets[0].addr,
            listen,
        });
    }
    Ok(state)
}

/// What a reload changed, by route name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadSummary {
    /// Routes that are new.
    pub added: Vec<String>,
    /// Routes that are gone (their open connections finish).
    pub removed: Vec<String>,
    /// Routes whose settings changed (new connections use the new ones).
    pub changed: Vec<String>,
    /// Routes left as they were.
    pub unchanged: Vec<String>,
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
            .routes()
            .iter()
            .find(|r| r.name == route)
            .map(|r| r.stats().snapshot())
    }

    /// Every route's upstream connect-latency histogram.
    pub fn all_route_connect_latency(&self) -> Vec<(String, crate::stats::HistogramSnapshot)> {
        self.shared
            .routes()
            .iter()
            .map(|r| (r.name.clone(), r.stats().connect_latency()))
            .collect()
    }

    /// Every route's name and counters.
    pub fn all_route_stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.shared
            .routes()
            .iter()
            .map(|r| (r.name.clone(), r.stats().snapshot()))
            .collect()
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Pipes the workers hold (in use and pooled), as of each worker's last loop turn.
    pub fn pipes_open(&self) -> usize {
        self.shared
            .pipes_open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Total capacity of those pipes, in bytes (an upper bound on their kernel memory).
    pub fn pipe_bytes(&self) -> usize {
        self.shared
            .pipe_bytes
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// The addresses the relay listens on, per route.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .routes()
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

    /// Replaces the routes while the relay runs. Routes are matched by name: new ones start,
    /// removed ones stop accepting while their open connections finish, changed ones apply to
    /// new connections. Listening sockets whose address stays are kept (no connection is
    /// refused during a reload). Upstream names are resolved and new addresses bound *before*
    /// anything changes: on any error the running configuration stays as it was.
    ///
    /// The worker count, backlog and default resolver are fixed for the relay's lifetime.
    ///
    /// # Errors
    ///
    /// As [`RelayBuilder::build`], plus [`Error::Invalid`] if the relay is stopping.
    pub fn reload(
        &self,
        routes: Vec<Route>,
        max_connections: Option<usize>,
    ) -> Result<ReloadSummary, Error> {
        let _serial = self
            .shared
            .reload_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.is_stopping() {
            return Err(Error::Invalid("the relay is stopping".into()));
        }
        validate(&routes)?;
        let fixed = self.shared.fixed.clone();
        resolve_upstreams(&routes, &self.shared.resolver, &fixed.resolution)?;
        let old = self.shared.routes();
        let threads = self.shared.mailboxes.len();

        let mut plans: Vec<ReloadPlan> = (0..threads).map(|_| ReloadPlan::default()).collect();
        let mut states = Vec::new();
        let mut summary = ReloadSummary::default();
        for route in &routes {
            let mut actual = Vec::new();
            let mut kept = Vec::new();
            let mut added = Vec::new();
            for &addr in &route.listen {
                if addr.port() != 0 && old.iter().any(|o| o.listen.contains(&addr)) {
                    actual.push(addr);
                    kept.push(addr);
                } else {
                    // Bound now; dropped (closed) again if anything later fails.
                    let sockets = bind_all(addr, &fixed)?;
                    actual.push(
                        sockets[0]
                            .local_addr()
                            .map_err(|source| Error::Bind { addr, source })?,
                    );
                    added.push(sockets);
                }
            }
            let previous = old.iter().find(|o| o.name == route.name);
            let counters = previous.map_or_else(Arc::default, |p| Arc::clone(&p.counters));
            let state = Arc::new(route_state(route, actual, counters, &fixed)?);
            match previous {
                None => summary.added.push(route.name.clone()),
                Some(p) if same_settings(p, &state) => summary.unchanged.push(route.name.clone()),
                Some(_) => summary.changed.push(route.name.clone()),
            }
            for addr in kept {
                for plan in &mut plans {
                    plan.keep.push((addr, Arc::clone(&state)));
                }
            }
            for sockets in added {
                for (plan, socket) in plans.iter_mut().zip(sockets) {
                    plan.add.push((socket, Arc::clone(&state)));
                }
            }
            states.push(state);
        }
        summary.removed = old
            .iter()
            .filter(|o| !routes.iter().any(|r| r.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        *self
            .shared
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner()) = states;
        self.shared.set_max_connections(max_connections);
        for (mailbox, plan) in self.shared.mailboxes.iter().zip(plans) {
            mailbox.post(Message::Reload(plan));
        }
        Ok(summary)
    }

    /// Whether a shutdown was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.control() != Control::Running
    }
}

/// Whether two states of a route behave the same (the listening sockets aside).
fn same_settings(a: &RouteState, b: &RouteState) -> bool {
    a.upstream == b.upstream
        && a.options == b.options
        && a.access == b.access
        && a.resolution == b.resolution
        && a.max_connections == b.max_connections
        && a.listen == b.listen
}
