//! Taking in clients: accepting within the connection limits (backing off when descriptors run
//! out), access lists, SNI routing, and starting the upstream side.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::*;
use crate::address::UpstreamAddr;

/// Summarises refused connections (access lists, SNI) in the log: the first refusal of a
/// period is logged with its reason, the rest are counted and reported once the period ends,
/// so a port scan or a misconfigured client cannot flood the log.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    period_start: Option<Instant>,
    suppressed: u64,
}

/// Length of a refusal-log period.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

impl RefusalLog {
    pub(super) fn record(
        &mut self,
        now: Instant,
        route: &str,
        client: SocketAddr,
        reason: &CloseReason,
    ) {
        match self.period_start {
            Some(start) if now.duration_since(start) < REFUSAL_LOG_PERIOD => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    tracing::info!(
                        "{} more connections refused in the last {REFUSAL_LOG_PERIOD:?} (see the denied and sni_refused counters)",
                        self.suppressed
                    );
                }
                self.period_start = Some(now);
                self.suppressed = 0;
                tracing::info!(target: "spliceway::conn", route, client = %client, "refused: {reason}");
            }
        }
    }
}

impl Worker {
    pub(super) fn accept(&mut self, listener_key: usize, now: Instant) {
        if self.shared.control() != Control::Running {
            return;
        }
        if self.accept_paused_until.is_some_and(|t| t > now) {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(slot) = self.listeners.get(listener_key) else {
                return;
            };
            let route = Arc::clone(&slot.route);
            if !try_reserve(&self.shared.active, self.shared.max_connections()) {
                return;
            }
            if !try_reserve(route.active(), route.max_connections) {
                self.shared.active.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            match slot.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, route, now),
                Err(e) => {
                    self.shared.active.fetch_sub(1, Ordering::AcqRel);
                    route.active().fetch_sub(1, Ordering::AcqRel);
                    match e.raw_os_error() {
                        _ if e.kind() == io::ErrorKind::WouldBlock => return,
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                            if self
                                .last_accept_warning
                                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                            {
                                self.last_accept_warning = Some(now);
                                tracing::warn!(
                                    worker = self.index,
                                    "cannot accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} \
                                     (raise the open-file limit, or lower max connections)"
                                );
                            }
                            return;
                        }
                        // The client went away before we took it, or a signal: next one.
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => {}
                        _ => {
                            tracing::warn!(worker = self.index, "accept failed: {e}");
                            self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                            return;
                        }
                    }
                }
            }
        }
        // More clients may be queued: take them next turn, after other events.
        self.accept_pending = true;
    }

    /// Takes in an accepted client (its limit slots are already reserved).
    pub(super) fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        route: Arc<RouteState>,
        now: Instant,
    ) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        count(&self.shared.stats, route.stats(), |s| &s.accepted, 1);
        let key = self.connections.vacant_key();
        let mut connection = Connection::new(id, Arc::clone(&route), stream, peer, now);
        tracing::debug!(
            target: "spliceway::conn",
            id,
            route = %route.name,
            client = %peer,
            "accepted"
        );
        if let Err(reason) = route.access.check(peer.ip()) {
            self.finish(connection, CloseReason::Denied(reason), now);
            return;
        }
        if let Err(e) = connection.register_client(self.poll.registry(), key) {
            self.finish(connection, CloseReason::ClientError(e.to_string()), now);
            return;
        }
        let awaiting_hello = connection.awaiting_hello();
        let inserted = self.connections.insert(connection);
        debug_assert_eq!(inserted, key);
        let flow = if awaiting_hello {
            // The ClientHello comes with a readable event (also for bytes already queued).
            ControlFlow::Continue(())
        } else {
            self.start_upstream(key, now)
        };
        self.after(key, flow, now);
    }

    /// The connection's upstream is chosen: resolve it (from the cache, or on the resolver
    /// threads) and start connecting.
    pub(super) fn start_upstream(&mut self, key: usize, now: Instant) -> ControlFlow<CloseReason> {
        let Some(connection) = self.connections.get(key) else {
            return ControlFlow::Continue(());
        };
        let route = Arc::clone(&connection.route);
        let id = connection.id;
        let targets = match connection.chosen_upstream() {
            None => return ControlFlow::Break(CloseReason::ConnectFailed("no upstream".into())),
            Some(UpstreamAddr::Ip(addr)) => match &route.literal_targets {
                Some(targets) if targets[0].addr == *addr => Arc::clone(targets),
                _ => Arc::from(vec![crate::resolver::Target {
                    addr: *addr,
                    local: crate::resolver::is_local(addr.ip()),
                }]),
            },
            Some(UpstreamAddr::Name { host, port }) => {
                match self
                    .shared
                    .resolver
                    .cached(&route.resolution, host, *port, now)
                {
                    Some(Ok(targets)) => targets,
                    Some(Err(e)) => return ControlFlow::Break(CloseReason::ResolveFailed(e)),
                    None => {
                        self.shared.resolver.request(
                            &route.resolution,
                            host,
                            *port,
                            route.options.resolve_cache_ttl,
                            &self.mailbox,
                            key,
                            id,
                        );
                        return ControlFlow::Continue(());
                    }
                }
            }
        };
        let (mut ctx, connections, _) = self.ctx(now);
        connections[key].on_resolved(&mut ctx, key, targets)
    }

    /// A readable client of an SNI route: try to route it by its ClientHello.
    pub(super) fn route_by_hello(&mut self, key: usize, now: Instant) {
        let Worker {
            connections,
            hello_scratch,
            ..
        } = self;
        let Some(connection) = connections.get_mut(key) else {
            return;
        };
        let flow = match connection.read_hello(hello_scratch) {
            ControlFlow::Continue(()) if !connection.awaiting_hello() => {
                self.start_upstream(key, now)
            }
            flow => flow,
        };
        self.after(key, flow, now);
    }
}
