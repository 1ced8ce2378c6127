//! [`RelayHandle`]: counters, shutdown and reload, from any thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Mutex;

use super::setup::{LifetimeSettings, bind_all, copies, resolve_upstreams, route_state, validate};
use crate::error::{Error, SettingsError};
use crate::route::{Protocol, Route};
use crate::state::mailbox::{Message, ReloadPlan};
use crate::state::relay::{Control, RelayState};
use crate::state::route::RouteState;
use crate::stats::{RelaySnapshot, RouteSnapshot};
use crate::udp::{UdpMessage, UdpShared};

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

/// What reloads need besides the running state: the settings fixed at build time, a lock
/// that serialises reloads from several handles, and a duplicate of every listening socket.
#[derive(Debug)]
pub(super) struct Reloads {
    settings: LifetimeSettings,
    lock: Mutex<()>,
    /// Duplicates of the workers' listening sockets (the workers own theirs), for
    /// [`RelayHandle::listening_sockets`]. Reloads keep it current; a shutdown empties it, so
    /// that a draining relay's ports close as before.
    handoff: Mutex<Vec<(SocketAddr, std::net::TcpListener)>>,
}

impl Reloads {
    pub(super) fn new(
        settings: LifetimeSettings,
        handoff: Vec<(SocketAddr, std::net::TcpListener)>,
    ) -> Self {
        Reloads {
            settings,
            lock: Mutex::new(()),
            handoff: Mutex::new(handoff),
        }
    }

    fn handoff(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, std::net::TcpListener)>> {
        self.handoff.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a running relay's counters and stops it. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    pub(super) relay: Arc<RelayState>,
    pub(super) reloads: Arc<Reloads>,
    /// The UDP routes (served by their own worker, `udp/`).
    pub(super) udp: Arc<UdpShared>,
}

impl RelayHandle {
    /// The relay's counters, every route's, and its gauges (open connections, pipes), read
    /// at once. Never blocks on the workers: it reads relaxed atomics.
    #[must_use]
    pub fn snapshot(&self) -> RelaySnapshot {
        let mut routes: Vec<RouteSnapshot> = self
            .relay
            .routes()
            .iter()
            .map(|r| RouteSnapshot {
                name: r.name.clone(),
                stats: r.stats().snapshot(),
                connect_latency: r.stats().connect_latency(),
                upstreams: r
                    .group
                    .as_ref()
                    .map(|g| g.snapshot(std::time::Instant::now()))
                    .unwrap_or_default(),
            })
            .collect();
        routes.extend(self.udp.current().iter().map(|r| {
            RouteSnapshot {
                name: r.name.clone(),
                stats: r.stats.snapshot(),
                connect_latency: r.stats.connect_latency(),
                // A UDP group's "connections" are its sessions, and its connect failures the ICMP
                // errors that ended them.
                upstreams: r
                    .group()
                    .map(|g| g.snapshot(std::time::Instant::now()))
                    .unwrap_or_default(),
            }
        }));
        let global = self.relay.stats.snapshot();
        RelaySnapshot {
            udp_sessions: global
                .udp_sessions_started
                .saturating_sub(global.udp_sessions_ended) as usize,
            stats: global,
            routes,
            active_connections: self.relay.active.load(Ordering::Relaxed),
            pipes_open: self
                .relay
                .pipes_open
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum(),
            pipe_bytes: self
                .relay
                .pipe_bytes
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// The addresses the relay listens on, per route (TCP routes first, then UDP routes).
    #[must_use]
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let tcp = self.relay.routes();
        let tcp = tcp
            .iter()
            .flat_map(|r| r.listen.iter().map(|a| (r.name.clone(), *a)));
        let udp = self.udp.current();
        let udp = udp
            .iter()
            .flat_map(|r| r.listen().into_iter().map(|a| (r.name.clone(), a)));
        tcp.chain(udp).collect()
    }

    /// New descriptors for every listening socket of the relay (the same sockets: what one
    /// accepts, the other no longer sees), with their addresses; several for one address when
    /// each worker has its own `SO_REUSEPORT` socket. They are what a process replacing this
    /// one passes to [`RelayBuilder::listener`](super::RelayBuilder::listener), so that the
    /// clients queued on them are served, not reset. Empty once a shutdown began.
    ///
    /// # Errors
    ///
    /// The process is out of descriptors.
    pub fn listening_sockets(&self) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
        self.reloads
            .handoff()
            .iter()
            .map(|(addr, socket)| Ok((*addr, socket.try_clone()?)))
            .collect()
    }

    /// New descriptors for every listening socket of the UDP routes (the same sockets), with
    /// their addresses: what a process replacing this one passes to
    /// [`RelayBuilder::udp_socket`](super::RelayBuilder::udp_socket), so that it does not bind
    /// them again and no datagram meets a closed port. Once it serves them, tell this relay
    /// with [`release_udp_sockets`](Self::release_udp_sockets). Empty once a shutdown began.
    ///
    /// # Errors
    ///
    /// The process is out of descriptors.
    pub fn udp_sockets(&self) -> std::io::Result<Vec<(SocketAddr, std::net::UdpSocket)>> {
        self.udp
            .handoff()
            .iter()
            .map(|(addr, socket)| Ok((*addr, socket.try_clone()?)))
            .collect()
    }

    /// Another process reads the UDP routes' sockets from now on (it took them with
    /// [`udp_sockets`](Self::udp_sockets) and serves): this relay stops reading them, so that
    /// every datagram reaches the new process, which starts sessions of its own. The open
    /// sessions go on here (answers of their upstreams still leave through the same sockets)
    /// until they idle out or the drain ends; call it just before the graceful shutdown
    /// ([`shutdown_with`](Self::shutdown_with)), as an upgrade does. Both processes reading
    /// one socket would split its datagrams between them, and the draining one would drop
    /// those of new clients.
    pub fn release_udp_sockets(&self) {
        self.udp.post(UdpMessage::Release);
    }

    /// Graceful shutdown: [`is_stopping`](Self::is_stopping) turns true at once; the relay
    /// keeps accepting for the drain delay ([`RelayBuilder::drain_delay`](super::RelayBuilder::drain_delay),
    /// default zero), then stops accepting and closes its listeners, lets open connections
    /// finish for up to the drain timeout, then resets the rest.
    /// [`Relay::run`](super::Relay::run) returns when all are gone.
    pub fn shutdown(&self) {
        self.shutdown_with(self.relay.drain_delay(), None);
    }

    /// Graceful shutdown with an explicit drain delay (zero: stop accepting at once, as when
    /// another process has taken over the listening sockets; [`drain_delay`](Self::drain_delay)
    /// for the relay's own) and, if given, drain timeout (`None`: the relay's,
    /// [`RelayBuilder::drain_timeout`](super::RelayBuilder::drain_timeout)).
    pub fn shutdown_with(&self, drain_delay: Duration, drain_timeout: Option<Duration>) {
        self.reloads.handoff().clear();
        self.udp.handoff().clear();
        let first = !self.is_stopping();
        self.relay.begin_drain(drain_delay, drain_timeout);
        if first && !drain_delay.is_zero() {
            // The program says it at info, in its own words (`spliceway run`: the signal).
            tracing::debug!(
                "drain: no longer ready; accepting for another {drain_delay:?} before the \
                 listeners close"
            );
        }
    }

    /// Immediate shutdown: reset every open connection and stop.
    pub fn shutdown_now(&self) {
        self.reloads.handoff().clear();
        self.udp.handoff().clear();
        self.relay.set_control(Control::Stopping, None);
    }

    /// Replaces the routes while the relay runs. Routes are matched by name: new ones start,
    /// removed ones stop accepting while their open connections finish, changed ones apply to
    /// new connections. Listening sockets whose address stays are kept (no connection is
    /// refused during a reload). Upstream names are resolved and new addresses bound *before*
    /// anything changes: on any error the running configuration stays as it was.
    ///
    /// UDP routes reload the same way, but a UDP session needs its listening socket (its
    /// answers leave through it): the sessions on an address that closes end at once (counted
    /// with the `drain` reason), those on an address that stays go on.
    ///
    /// The worker count, backlog and default resolver are fixed for the relay's lifetime.
    ///
    /// # Errors
    ///
    /// As [`RelayBuilder::build`](super::RelayBuilder::build), plus [`Error::Invalid`] if the relay is stopping.
    pub fn reload(
        &self,
        routes: Vec<Route>,
        max_connections: Option<usize>,
    ) -> Result<ReloadSummary, Error> {
        let _serial = self.reloads.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_stopping() {
            return Err(SettingsError::Stopping.into());
        }
        validate(&routes)?;
        let (udp_routes, routes): (Vec<Route>, Vec<Route>) = routes
            .into_iter()
            .partition(|r| r.protocol == Protocol::Udp);
        let settings = &self.reloads.settings;
        // Checked and bound now; applied with the TCP routes (dropped, so closed, on an error).
        let udp = crate::udp::prepare_reload(&self.udp, udp_routes, &settings.resolution)?;
        resolve_upstreams(&routes, &self.relay.resolver, &settings.resolution)?;
        let old = self.relay.routes();
        let threads = self.relay.mailboxes.len();

        let mut plans: Vec<ReloadPlan> = (0..threads).map(|_| ReloadPlan::default()).collect();
        let own: Vec<SocketAddr> = old.iter().flat_map(|o| o.listen.iter().copied()).collect();
        // Bind what is new first (dropped, so closed again, if anything later fails); then make
        // every route's state, each knowing every listener of the relay.
        let mut bound_routes = Vec::with_capacity(routes.len());
        for route in &routes {
            let previous = old.iter().find(|o| o.name == route.name);
            let mut actual = Vec::new();
            let mut kept = Vec::new();
            let mut added = Vec::new();
            for (index, &addr) in route.listen.iter().enumerate() {
                // Port 0: the port the kernel chose last time, if the route listened on this
                // very address then (an unchanged file must not move the route).
                let chosen = match previous {
                    Some(p)
                        if addr.port() == 0 && p.configured_listen.get(index) == Some(&addr) =>
                    {
                        p.listen.get(index).copied()
                    }
                    _ => None,
                };
                let addr = chosen.unwrap_or(addr);
                if addr.port() != 0 && own.contains(&addr) {
                    actual.push(addr);
                    kept.push(addr);
                } else {
                    let sockets = bind_all(addr, settings, &own, route.options.transparent)?;
                    let bound = sockets[0]
                        .local_addr()
                        .map_err(|source| Error::Bind { addr, source })?;
                    actual.push(bound);
                    added.push((bound, sockets));
                }
            }
            bound_routes.push((route, previous, actual, kept, added));
        }
        let relay_listeners: Arc<[SocketAddr]> = bound_routes
            .iter()
            .flat_map(|(_, _, actual, _, _)| actual.iter().copied())
            .collect();
        let mut new_copies = Vec::new();
        for (_, _, _, _, added) in &bound_routes {
            for (addr, sockets) in added {
                new_copies.extend(copies(*addr, sockets).map_err(|source| Error::Bind {
                    addr: *addr,
                    source,
                })?);
            }
        }
        let mut states = Vec::new();
        let mut summary = ReloadSummary::default();
        for (route, previous, actual, kept, added) in bound_routes {
            let counters = previous.map_or_else(Arc::default, |p| Arc::clone(&p.counters));
            let state = Arc::new(route_state(
                route,
                actual,
                &relay_listeners,
                counters,
                previous.and_then(|p| p.group.as_deref()),
                settings,
            )?);
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
            for (addr, sockets) in added {
                tracing::info!(route = %route.name, addr = %addr, "listening (reload)");
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
        for state in &states {
            state.apply_limits();
        }
        *self.relay.routes.write().unwrap_or_else(|e| e.into_inner()) = states;
        {
            let mut handoff = self.reloads.handoff();
            let kept: Vec<SocketAddr> = plans
                .first()
                .map(|p| p.keep.iter().map(|(a, _)| *a).collect())
                .unwrap_or_default();
            handoff.retain(|(addr, _)| kept.contains(addr));
            handoff.extend(new_copies);
        }
        let udp = udp.apply(&self.udp);
        summary.added.extend(udp.added);
        summary.removed.extend(udp.removed);
        summary.unchanged.extend(udp.unchanged);
        summary.changed.extend(udp.changed);
        self.relay.set_max_connections(max_connections);
        for (mailbox, plan) in self.relay.mailboxes.iter().zip(plans) {
            mailbox.post(Message::Reload(plan));
        }
        Ok(summary)
    }

    /// Whether a shutdown was requested: true from the moment it was, drain delay included
    /// (what a readiness check reports).
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.relay.control() != Control::Running
    }

    /// Whether the relay is serving: [`Relay::run`](super::Relay::run) has started its workers
    /// and none has failed (an epoll error or a panic). A relay that drains is still healthy;
    /// one that stopped is not. What a liveness check reports.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.relay.started.load(Ordering::Acquire) && !self.relay.failed.load(Ordering::Acquire)
    }

    /// The drain delay graceful shutdowns use.
    #[must_use]
    pub fn drain_delay(&self) -> Duration {
        self.relay.drain_delay()
    }
}

/// Whether two states of a route behave the same (the listening sockets aside).
fn same_settings(a: &RouteState, b: &RouteState) -> bool {
    a.upstream == b.upstream
        && a.options == b.options
        && a.access == b.access
        && a.proxy_from == b.proxy_from
        && a.resolution == b.resolution
        && a.address_policy == b.address_policy
        && a.max_connections == b.max_connections
        && a.max_connections_per_client == b.max_connections_per_client
        && a.listen == b.listen
}
