//! A worker: one thread, one mio `Poll` (epoll, edge-triggered), its own listening sockets and
//! the connections they accepted.
//!
//! The loop turns readiness into transitions and nothing more: an event on a connection's socket
//! latches readiness into its directions, then [`Connection::pump`] moves bytes until both
//! directions wait. A pump has a budget of operations; a connection that still has work when it
//! runs out is queued to run again after the next (zero-timeout) poll, so one fast transfer
//! cannot starve the others and no readiness is lost in between.
//!
//! Accepting stops (and the kernel's backlog holds new clients) while a connection limit is
//! reached, and backs off for [`ACCEPT_BACKOFF`] when descriptors run out (`EMFILE`/`ENFILE`),
//! instead of spinning on a listener that stays readable.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buffer::{BufferPool, PoolLimits};
use crate::connection::{CloseReason, Connection, Ctx, Pump};
use crate::mailbox::{Mailbox, Message};
use crate::sni::MAX_CLIENT_HELLO_BYTES;
use crate::state::{Control, RouteState, Shared, try_reserve};
use crate::stats::count;
use crate::timer::{Deadline, DeadlineQueue};

mod accept;
mod control;

use accept::RefusalLog;

/// The token of the worker's waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener tokens start here; connection tokens are below (two per connection).
const LISTENER_TOKEN_BASE: usize = usize::MAX / 2;
/// Operations a connection may perform per turn before others get theirs.
const OPS_PER_TURN: usize = 64;
/// Connections accepted from one listener per turn.
const ACCEPTS_PER_TURN: usize = 128;
/// Pause after the process ran out of descriptors while accepting.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Events taken per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;

/// A listening socket of this worker.
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    pub(crate) listener: TcpListener,
    pub(crate) route: Arc<RouteState>,
    pub(crate) addr: SocketAddr,
}

/// One event-loop thread's state.
#[derive(Debug)]
pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    listeners: Slab<ListenerSlot>,
    connections: Slab<Connection>,
    timers: DeadlineQueue,
    again: Vec<(usize, u64)>,
    pool: BufferPool,
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    /// Accepting is paused until then (descriptors exhausted).
    accept_paused_until: Option<Instant>,
    /// Listeners may hold clients we did not take (limit reached, or batch exhausted).
    accept_pending: bool,
    drain_deadline: Option<Instant>,
    last_accept_warning: Option<Instant>,
    /// Where ClientHellos are peeked into (one buffer per worker, not per connection).
    hello_scratch: Vec<u8>,
    refusals: RefusalLog,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        mailbox: Arc<Mailbox>,
        shared: Arc<Shared>,
        pool_limits: PoolLimits,
    ) -> Self {
        Worker {
            index,
            poll,
            listeners: Slab::new(),
            connections: Slab::new(),
            timers: DeadlineQueue::default(),
            again: Vec::new(),
            pool: BufferPool::new(pool_limits),
            shared,
            mailbox,
            accept_paused_until: None,
            accept_pending: false,
            drain_deadline: None,
            last_accept_warning: None,
            hello_scratch: vec![0; MAX_CLIENT_HELLO_BYTES],
            refusals: RefusalLog::default(),
        }
    }

    /// Adds a listening socket (before the worker runs).
    pub(crate) fn add_listener(
        &mut self,
        listener: std::net::TcpListener,
        route: Arc<RouteState>,
    ) -> io::Result<()> {
        let addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let entry = self.listeners.vacant_entry();
        self.poll.registry().register(
            &mut listener,
            Token(LISTENER_TOKEN_BASE + entry.key()),
            Interest::READABLE,
        )?;
        entry.insert(ListenerSlot {
            listener,
            route,
            addr,
        });
        Ok(())
    }

    /// Runs until the relay stops and every connection is gone.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        tracing::debug!(worker = self.index, "worker started");
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    WAKER_TOKEN => woken = true,
                    Token(t) if t >= LISTENER_TOKEN_BASE => {
                        self.accept(t - LISTENER_TOKEN_BASE, now)
                    }
                    Token(t) => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable =
                            event.is_writable() || event.is_write_closed() || event.is_error();
                        // EPOLLERR, or EPOLLHUP (both ways closed): a reset may be pending
                        // that no read or write would notice soon (a peer that half-closed
                        // earlier, a client still waiting for its upstream).
                        let failed =
                            event.is_error() || (event.is_read_closed() && event.is_write_closed());
                        self.on_socket_event(t / 2, t % 2 == 1, readable, writable, failed, now);
                    }
                }
            }
            if woken {
                self.handle_mail(now);
            }
            self.run_again(now);
            self.fire_timers(now);
            if self.accept_pending || self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                self.accept_pending = false;
                let keys: Vec<usize> = self.listeners.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.accept(key, now);
                }
            }
            self.shared.pipes_open[self.index].store(self.pool.pipes_open(), Ordering::Relaxed);
            self.shared.pipe_bytes[self.index].store(self.pool.pipe_bytes(), Ordering::Relaxed);
            if self.check_control(now) {
                break;
            }
        }
        self.pool.clear();
        tracing::debug!(worker = self.index, "worker stopped");
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_pending {
            return Some(Duration::ZERO);
        }
        [
            self.timers.next_at(),
            self.accept_paused_until,
            self.drain_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn ctx(&mut self, now: Instant) -> (Ctx<'_>, &mut Slab<Connection>, &mut DeadlineQueue) {
        let Worker {
            poll,
            pool,
            shared,
            connections,
            timers,
            ..
        } = self;
        (
            Ctx {
                registry: poll.registry(),
                pool,
                global: &shared.stats,
                now,
            },
            connections,
            timers,
        )
    }

    fn on_socket_event(
        &mut self,
        key: usize,
        upstream: bool,
        readable: bool,
        writable: bool,
        failed: bool,
        now: Instant,
    ) {
        let (mut ctx, connections, _) = self.ctx(now);
        let Some(connection) = connections.get_mut(key) else {
            return;
        };
        if failed && let ControlFlow::Break(reason) = connection.on_socket_error(upstream) {
            self.after(key, ControlFlow::Break(reason), now);
            return;
        }
        let flow = if upstream {
            connection.on_upstream_event(&mut ctx, key, readable, writable)
        } else if connection.awaiting_hello() {
            if readable {
                self.route_by_hello(key, now);
            }
            return;
        } else {
            connection.on_client_event(readable, writable);
            ControlFlow::Continue(())
        };
        self.after(key, flow, now);
    }

    /// After a transition: close if it ended the connection, else pump and re-arm its timer.
    fn after(&mut self, key: usize, flow: ControlFlow<CloseReason>, now: Instant) {
        let pump = match flow {
            ControlFlow::Break(reason) => Pump::Close(reason),
            ControlFlow::Continue(()) => {
                let (mut ctx, connections, _) = self.ctx(now);
                match connections.get_mut(key) {
                    Some(connection) => connection.pump(&mut ctx, OPS_PER_TURN),
                    None => return,
                }
            }
        };
        match pump {
            Pump::Idle => self.schedule(key, now),
            Pump::Again => {
                let id = self.connections[key].id;
                self.again.push((key, id));
                self.schedule(key, now);
            }
            Pump::Close(reason) => {
                let connection = self.connections.remove(key);
                self.finish(connection, reason, now);
            }
        }
    }

    /// Closes a connection and frees its limit slots.
    fn finish(&mut self, connection: Connection, reason: CloseReason, now: Instant) {
        let route = Arc::clone(&connection.route);
        if matches!(reason, CloseReason::Denied(_) | CloseReason::SniRefused(_)) {
            self.refusals
                .record(now, &route.name, connection.client_addr(), &reason);
        }
        let (mut ctx, _, _) = self.ctx(now);
        connection.close(&mut ctx, &reason);
        let global_before = self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let route_before = route.active().fetch_sub(1, Ordering::AcqRel);
        // A slot is free: clients may be waiting in a backlog we stopped taking from.
        self.accept_pending = true;
        // If a limit was reached, other workers may have stopped taking clients too, and their
        // listeners will not signal again for clients already queued: tell them.
        let was_full = self
            .shared
            .max_connections()
            .is_some_and(|limit| global_before >= limit)
            || route
                .max_connections
                .is_some_and(|limit| route_before >= limit);
        if was_full {
            for (index, mailbox) in self.shared.mailboxes.iter().enumerate() {
                if index != self.index {
                    mailbox.post(Message::ResumeAccepting);
                }
            }
        }
    }

    /// Makes sure the connection's deadline is in the queue.
    fn schedule(&mut self, key: usize, now: Instant) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        // Never in the past: a deadline that handling did not move must not make
        // `fire_timers` spin; it comes round again on the next turn.
        let at = connection.deadline().max(now + Duration::from_millis(1));
        if connection.timer_at.is_none_or(|current| at < current) {
            connection.timer_at = Some(at);
            self.timers.push(Deadline {
                at,
                key,
                id: connection.id,
            });
        }
    }

    fn run_again(&mut self, now: Instant) {
        for (key, id) in std::mem::take(&mut self.again) {
            if self.connections.get(key).is_some_and(|c| c.id == id) {
                self.after(key, ControlFlow::Continue(()), now);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(due) = self.timers.pop_due(now) {
            let Some(connection) = self.connections.get_mut(due.key) else {
                continue;
            };
            if connection.id != due.id || connection.timer_at != Some(due.at) {
                continue; // stale entry
            }
            connection.timer_at = None;
            if connection.deadline() > now {
                self.schedule(due.key, now);
                continue;
            }
            let (mut ctx, connections, _) = self.ctx(now);
            let flow = connections[due.key].on_deadline(&mut ctx, due.key);
            self.after(due.key, flow, now);
        }
    }

    fn handle_mail(&mut self, now: Instant) {
        for message in self.mailbox.take() {
            match message {
                Message::Resolved { key, id, result } => {
                    let Some(connection) = self.connections.get(key) else {
                        continue;
                    };
                    if connection.id != id {
                        continue;
                    }
                    let flow = match result {
                        Ok(targets) => {
                            let (mut ctx, connections, _) = self.ctx(now);
                            connections[key].on_resolved(&mut ctx, key, targets)
                        }
                        Err(e) => ControlFlow::Break(CloseReason::ResolveFailed(e)),
                    };
                    self.after(key, flow, now);
                }
                Message::Control => {}
                Message::ResumeAccepting => self.accept_pending = true,
                Message::Reload(plan) => self.apply_reload(plan),
            }
        }
    }
}
