//! A worker: one thread, one mio `Poll` (epoll, edge-triggered), its own listening sockets and
//! the connections they accepted.
//!
//! The loop turns readiness into transitions and nothing more: before relaying,
//! [`Connection::advance`] moves a connection through its early phases and returns what the
//! worker must carry out (a lookup, a close); while relaying, an event on a connection's socket
//! latches readiness into its directions, then [`Connection::pump`] moves bytes until both
//! directions wait. A pump has a budget of operations; a connection that still has work when it
//! runs out is queued to run again after the next (zero-timeout) poll, so one fast transfer
//! cannot starve the others and no readiness is lost in between.
//!
//! | file | job |
//! | --- | --- |
//! | `token.rs` | what an epoll token stands for (waker, listener, client or upstream socket) |
//! | `listeners.rs` | the worker's listening sockets; accepting within the connection limits |
//! | `deadlines.rs` | the heap of connection deadlines |
//! | `refusal_log.rs` | the rate-limited log of refused clients |
//! | `adoption.rs` | taking in connections a program handed over |
//! | `observe.rs` | listing connections and closing some, for the control side |

mod adoption;
mod deadlines;
mod listeners;
mod observe;
mod refusal_log;
mod token;

use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use slab::Slab;

pub(crate) use token::Source;

use crate::address::UpstreamAddr;
use crate::clock::deadline;
use crate::connection::{ClientEvent, Connection, Ctx, Phase, Pump, Step};
use crate::descriptors::PER_CONNECTION;
use crate::end::CloseReason;
use crate::resolver::Asker;
use crate::sni::MAX_CLIENT_HELLO_BYTES;
use crate::state::log_limit::PROXY_ERROR_LOG_PERIOD;
use crate::state::mailbox::{Mailbox, Message};
use crate::state::relay::{Control, RelayState};
use crate::state::route::RouteState;
use crate::stats::count;
use crate::transfer::buffer::{BufferPool, PoolLimits};
use deadlines::{Deadline, DeadlineQueue};
use listeners::{Accepted, Listeners};
use refusal_log::RefusalLog;

/// Operations a connection may perform per turn before others get theirs.
const OPS_PER_TURN: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;

/// What an epoll event says about a socket.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer ended its side (end of stream is queued).
    read_closed: bool,
    /// EPOLLERR: a reset or another error is pending that no read or write would notice soon
    /// (a peer that half-closed earlier, a client still waiting for its upstream). A reset
    /// always raises EPOLLERR while its error is unread (`tcp_poll` reports `sk_err`), so an
    /// EPOLLHUP without it (both ways closed in order) needs no `SO_ERROR` look.
    failed: bool,
    /// EPOLLOUT without EPOLLERR or EPOLLHUP. For a socket whose connect is in progress this
    /// is the connect's success: `tcp_poll` reports nothing for a socket in SYN-SENT, and a
    /// failed connect raises EPOLLERR. Only then is `SO_ERROR` read.
    connected: bool,
}

impl Readiness {
    fn of(event: &mio::event::Event) -> Self {
        Readiness {
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            read_closed: event.is_read_closed(),
            failed: event.is_error(),
            connected: event.is_writable() && !event.is_error() && !event.is_write_closed(),
        }
    }
}

/// One event-loop thread's state.
#[derive(Debug)]
pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    listeners: Listeners,
    /// Clients taken in the current accept batch, waiting to be admitted (kept to reuse its
    /// allocation).
    accepted: Vec<Accepted>,
    connections: Slab<Connection>,
    timers: DeadlineQueue,
    again: Vec<(usize, u64)>,
    pool: BufferPool,
    relay: Arc<RelayState>,
    mailbox: Arc<Mailbox>,
    drain_deadline: Option<Instant>,
    /// Where ClientHellos are peeked into (one buffer per worker, not per connection).
    hello_scratch: Vec<u8>,
    refusals: RefusalLog,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        mailbox: Arc<Mailbox>,
        relay: Arc<RelayState>,
        pool_limits: PoolLimits,
    ) -> Self {
        Worker {
            index,
            poll,
            listeners: Listeners::default(),
            accepted: Vec::new(),
            connections: Slab::new(),
            timers: DeadlineQueue::default(),
            again: Vec::new(),
            pool: BufferPool::new(pool_limits, Arc::clone(&relay.descriptors)),
            relay,
            mailbox,
            drain_deadline: None,
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
        self.listeners.add(self.poll.registry(), listener, route)
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
                let readiness = Readiness::of(event);
                match Source::of(event.token()) {
                    Source::Waker => woken = true,
                    Source::Listener(key) => self.accept(key, now),
                    Source::Client(key, generation) => {
                        self.on_socket_event(key, generation, false, readiness, now)
                    }
                    Source::Upstream(key, generation) => {
                        self.on_socket_event(key, generation, true, readiness, now)
                    }
                }
            }
            if woken {
                self.handle_mail(now);
            }
            self.run_again(now);
            self.fire_timers(now);
            self.refusals.flush(now);
            if self.listeners.take_retry(now) {
                for key in self.listeners.keys() {
                    self.accept(key, now);
                }
            }
            self.relay.pipes_open[self.index].store(self.pool.pipes_open(), Ordering::Relaxed);
            self.relay.pipe_bytes[self.index].store(self.pool.pipe_bytes(), Ordering::Relaxed);
            if self.check_control(now) {
                break;
            }
        }
        self.refuse_late_adoptions(Instant::now());
        self.pool.clear();
        tracing::debug!(worker = self.index, "worker stopped");
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.listeners.is_pending() {
            return Some(Duration::ZERO);
        }
        [
            self.timers.next_at(),
            self.listeners.paused_until(),
            self.drain_deadline,
            self.refusals.flush_at(),
            match self.relay.control() {
                Control::Announced => self.relay.accept_until(),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn ctx(&mut self, now: Instant) -> (Ctx<'_>, &mut Slab<Connection>) {
        let Worker {
            poll,
            pool,
            relay,
            connections,
            hello_scratch,
            ..
        } = self;
        (
            Ctx {
                registry: poll.registry(),
                pool,
                global: &relay.stats,
                now,
                scratch: hello_scratch,
            },
            connections,
        )
    }

    fn on_socket_event(
        &mut self,
        key: usize,
        generation: u32,
        upstream: bool,
        event: Readiness,
        now: Instant,
    ) {
        let Readiness {
            readable,
            writable,
            read_closed,
            failed,
            connected,
        } = event;
        let (mut ctx, connections) = self.ctx(now);
        // A token of a connection that is gone (closed earlier in this batch, its slot perhaps
        // given to a new connection since): see `token.rs` for why this can happen.
        let Some(connection) = connections
            .get_mut(key)
            .filter(|c| token::generation(c.id) == generation)
        else {
            return;
        };
        if !upstream {
            connection.note_client_event(readable, read_closed);
        }
        if failed && let ControlFlow::Break(reason) = connection.on_socket_error(upstream) {
            self.after(key, ControlFlow::Break(reason), now);
            return;
        }
        let flow = if upstream {
            connection.on_upstream_event(&mut ctx, readable, writable, read_closed, connected)
        } else if matches!(
            connection.phase(),
            Phase::AwaitingHeader | Phase::AwaitingHello | Phase::AwaitingRequest
        ) {
            let client = ClientEvent {
                readable,
                read_closed,
            };
            let step = connection.advance(&mut ctx, client);
            self.carry_out(key, step, now);
            return;
        } else {
            connection.on_client_event(&mut ctx, readable, writable, read_closed)
        };
        self.after_upstream_change(key, flow, now);
    }

    /// As [`after`](Self::after), for a transition that may have moved the connection on to
    /// another upstream of its route's group whose name must be looked up first.
    fn after_upstream_change(&mut self, key: usize, flow: ControlFlow<CloseReason>, now: Instant) {
        if flow.is_continue()
            && self
                .connections
                .get(key)
                .is_some_and(Connection::needs_lookup)
        {
            self.carry_out(key, Step::Resolve, now);
        } else {
            self.after(key, flow, now);
        }
    }

    /// Carries out what a connection asked for: a lookup, then whatever follows. A lookup
    /// answered from the cache may lead to another (the next upstream of a group, when every
    /// address of one failed at once): at most one per upstream the connection may try.
    fn carry_out(&mut self, key: usize, step: Step, now: Instant) {
        let mut step = step;
        for _ in 0..=crate::route::MAX_UPSTREAMS_PER_GROUP {
            match step {
                Step::Resolve => step = self.look_up(key, now),
                _ => break,
            }
        }
        let flow = match step {
            Step::Close(reason) => ControlFlow::Break(reason),
            Step::Wait | Step::Resolve => ControlFlow::Continue(()),
        };
        self.after(key, flow, now);
    }

    /// Looks up the name of connection `key`'s upstream: from the cache, fed back at once, or
    /// on the resolver's threads, whose answer comes back in this worker's mailbox.
    fn look_up(&mut self, key: usize, now: Instant) -> Step {
        let Some(connection) = self.connections.get(key) else {
            return Step::Wait;
        };
        let Some(UpstreamAddr::Name { host, port }) = connection.chosen_upstream() else {
            return Step::Wait;
        };
        let route = &connection.route;
        let resolver = &self.relay.resolver;
        if let Some(answer) = resolver.cached(&route.resolution, host, *port, now) {
            let (mut ctx, connections) = self.ctx(now);
            return connections[key].resolved(&mut ctx, answer);
        }
        let mailbox = Arc::clone(&self.mailbox);
        let id = connection.id;
        let asker = Asker {
            group: &route.name,
            client: connection.client_addr().ip(),
            peer: connection.peer_addr().ip(),
        };
        let requested = resolver.request(
            &route.resolution,
            host,
            *port,
            route.options.resolve_cache_ttl,
            asker,
            Box::new(move |result| {
                mailbox.post(Message::Resolved { key, id, result });
            }),
        );
        match requested {
            // Held by the connection: closing it withdraws the request.
            Ok(ticket) => {
                self.connections[key].wait_for_lookup(ticket);
                Step::Wait
            }
            Err(refused) => Step::Close(CloseReason::ResolveRefused(refused.to_string())),
        }
    }

    /// After a transition: close if it ended the connection, else pump and re-arm its timer.
    fn after(&mut self, key: usize, flow: ControlFlow<CloseReason>, now: Instant) {
        let pump = match flow {
            ControlFlow::Break(reason) => Pump::Close(reason),
            ControlFlow::Continue(()) => {
                let (mut ctx, connections) = self.ctx(now);
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
        if let CloseReason::ProxyHeader(error) = &reason {
            // log: rate limited (PROXY_ERROR_LOG_PERIOD per route).
            if let Some(held_back) = route
                .counters
                .proxy_error_log
                .admit(now, PROXY_ERROR_LOG_PERIOD)
            {
                tracing::warn!(
                    target: "spliceway::conn",
                    route = %route.name,
                    client = %connection.client_addr(),
                    reason = error.reason(),
                    held_back,
                    "PROXY protocol header refused, connection reset: {error} \
                     (at most one such line a second per route; held_back = refusals since \
                     the last line; see spliceway_proxy_header_errors_total)"
                );
            }
        } else if reason.is_refusal() {
            self.refusals
                .record(now, &route.name, connection.client_addr(), &reason);
        }
        let (mut ctx, _) = self.ctx(now);
        connection.close(&mut ctx, &reason);
        self.relay.descriptors.give_back(PER_CONNECTION);
        let global_before = self.relay.active.fetch_sub(1, Ordering::AcqRel);
        let route_before = route.active().fetch_sub(1, Ordering::AcqRel);
        // A slot is free: clients may be waiting in a backlog we stopped taking from (only if a
        // limit stopped us; otherwise every listener was read to EAGAIN and will signal again).
        self.listeners.slot_freed();
        // If a limit was reached, other workers may have stopped taking clients too, and their
        // listeners will not signal again for clients already queued: tell them.
        let was_full = self.listeners.short_of_descriptors()
            || self
                .relay
                .max_connections()
                .is_some_and(|limit| global_before >= limit)
            || route
                .max_connections
                .is_some_and(|limit| route_before >= limit);
        if was_full {
            for (index, mailbox) in self.relay.mailboxes.iter().enumerate() {
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
            let (mut ctx, connections) = self.ctx(now);
            let flow = connections[due.key].on_deadline(&mut ctx);
            self.after_upstream_change(due.key, flow, now);
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
                    let (mut ctx, connections) = self.ctx(now);
                    let step = connections[key].resolved(&mut ctx, result);
                    self.carry_out(key, step, now);
                }
                Message::Control => {}
                Message::ResumeAccepting => self.listeners.mark_pending(),
                Message::Adopt(adopted) => self.adopt(adopted, now),
                Message::Observe { query, reply } => {
                    // The asker may have given up waiting: nothing to do then.
                    let _ = reply.send(self.list(&query, now));
                }
                Message::Close { filter, by, reply } => {
                    let _ = reply.send(self.close_selected(&filter, &by, now));
                }
                Message::Reload(plan) => {
                    if self.relay.control() == Control::Running {
                        let mut accepted = std::mem::take(&mut self.accepted);
                        self.listeners.apply_reload(
                            self.poll.registry(),
                            plan,
                            &self.relay,
                            self.index,
                            &mut accepted,
                        );
                        for client in accepted.drain(..) {
                            self.admit(client, now);
                        }
                        self.accepted = accepted;
                    }
                }
            }
        }
    }

    /// Takes a batch of clients from listener `key` and admits each.
    fn accept(&mut self, key: usize, now: Instant) {
        if !self.relay.control().accepts() {
            return;
        }
        let mut accepted = std::mem::take(&mut self.accepted);
        self.listeners
            .accept(key, now, &self.relay, self.index, &mut accepted);
        for client in accepted.drain(..) {
            self.admit(client, now);
        }
        self.accepted = accepted;
    }

    /// Takes in an accepted client (its limit slots are already reserved).
    fn admit(&mut self, client: Accepted, now: Instant) {
        let Accepted {
            stream,
            peer,
            route,
            needs_options,
        } = client;
        let id = self.relay.next_id.fetch_add(1, Ordering::Relaxed);
        count(&self.relay.stats, route.stats(), |s| &s.accepted, 1);
        let key = self.connections.vacant_key();
        let tokens = Source::connection(key, id);
        let mut connection = Connection::new(id, Arc::clone(&route), stream, peer, tokens, now);
        tracing::debug!(
            target: "spliceway::conn",
            id,
            route = %route.name,
            client = %peer,
            "accepted"
        );
        if let Some(reason) = connection.refusal_at_accept() {
            self.finish(connection, reason, now);
            return;
        }
        if let Err(e) = connection.register_client(self.poll.registry(), needs_options) {
            self.finish(connection, CloseReason::ClientError(e.to_string()), now);
            return;
        }
        let inserted = self.connections.insert(connection);
        debug_assert_eq!(inserted, key);
        // A header or ClientHello comes with a readable event (also for bytes already queued):
        // with no event yet, only a fixed route's connection goes on, to resolve.
        let (mut ctx, connections) = self.ctx(now);
        let step = connections[key].advance(&mut ctx, ClientEvent::default());
        self.carry_out(key, step, now);
    }

    /// Applies draining and stopping. Returns true when the worker should exit.
    fn check_control(&mut self, now: Instant) -> bool {
        match self.relay.advance_drain(now) {
            Control::Running | Control::Announced => false,
            Control::Draining => {
                if self.drain_deadline.is_none() {
                    self.listeners.close_all(self.poll.registry(), self.index);
                    let timeout = self.relay.drain_timeout();
                    self.drain_deadline = Some(deadline(now, timeout));
                    // The listeners closing is said once (by the first worker), and by each
                    // other worker only if it has connections to wait for: a stop of an idle
                    // relay is not one line per worker.
                    if self.connections.is_empty() && self.index != 0 {
                        tracing::debug!(worker = self.index, "draining: nothing open");
                    } else {
                        // log: not client input: the drain.
                        tracing::info!(
                            worker = self.index,
                            connections = self.connections.len(),
                            "draining: no new connections; waiting up to {timeout:?} for open ones"
                        );
                    }
                }
                if self.connections.is_empty() {
                    return true;
                }
                if self.drain_deadline.is_some_and(|t| t <= now) {
                    // log: not client input: the drain.
                    tracing::info!(
                        worker = self.index,
                        connections = self.connections.len(),
                        "drain timeout reached: resetting the connections still open"
                    );
                    self.reset_all(now);
                    return true;
                }
                false
            }
            Control::Stopping => {
                self.listeners.close_all(self.poll.registry(), self.index);
                self.reset_all(now);
                true
            }
        }
    }

    /// Ends every open connection with a reset (a drain that ran out of time, or a stop).
    fn reset_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        for key in keys {
            let connection = self.connections.remove(key);
            self.finish(connection, CloseReason::Shutdown, now);
        }
    }
}
