//! The event loop of a relay's UDP routes, on one thread: datagrams from clients go out on
//! their session's connected upstream socket, answers go back through the listening socket the
//! client wrote to. Reads and writes move up to [`MAX_BATCH`] datagrams a system call.
//!
//! Routes and listening sockets are slab entries, so that a reload can add and remove them
//! while the keys of those that stay (held by sessions) do not move.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::UdpRouteState;
use super::batch::Batch;
use super::send::{DestinationSegmentation, Segmentation, send};
use super::session::{Refusal, Session, SessionEnd, Sessions, Traffic};
use super::shared::{UdpMessage, UdpPlan, UdpShared};
use crate::descriptors::PER_SESSION;
use crate::observe::{ConnectionFilter, ConnectionQuery, UdpSessionInfo, order_sessions};
use crate::state::relay::{Control, RelayState};
use crate::stats::{Stats, count};
use crate::sys::{self, MAX_BATCH};

/// Tokens at and above this are listening sockets; below, sessions' upstream sockets.
const LISTENER_BASE: usize = usize::MAX / 2;

/// The token of the worker's waker (its inbox, the relay's control changes): no session's.
pub(crate) const WAKER: Token = Token(LISTENER_BASE - 1);

/// How often idle sessions are looked for, and the longest the loop sleeps while it has any:
/// a session ends at most this late after its idle timeout. (Without sessions it sleeps until
/// woken: a datagram, its inbox, or a control change, which the relay's state signals.)
const TICK: Duration = Duration::from_millis(100);

/// Batches read from one socket per readiness before the others get their turn.
const ROUNDS: usize = 8;

/// Socket buffers asked for on listening sockets: room for a burst from many clients while
/// the loop is busy.
const LISTENER_BUFFER_BYTES: usize = 4 << 20;

/// Socket buffers asked for on a session's upstream socket: room for a burst of answers (or
/// of a client's datagrams) while the loop is busy. The default (`net.core.rmem_default`,
/// 208 KiB of skb truesize) held about 91 answers of 1,000 bytes: a burst of 96 lost 5 on a
/// busy machine, where going direct lost none. Memory is taken only by what is queued.
const SESSION_BUFFER_BYTES: usize = 1 << 20;

/// Asks for `bytes` of receive and send buffer on `socket`, best effort: beyond
/// `net.core.rmem_max`/`wmem_max` with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` where the process may
/// (`CAP_NET_ADMIN`, as unbound does), else as much as those limits allow. A smaller buffer
/// only means earlier drops under a burst (counted by the kernel as `RcvbufErrors`).
fn ask_buffers(socket: &socket2::Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    if setsockopt(socket, sockopt::SndBufForce, &bytes).is_err() {
        let _ = socket.set_send_buffer_size(bytes);
    }
}

/// Binds a UDP socket for a route (IPv6 sockets only for IPv6, as TCP listeners are).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    ask_buffers(&socket, LISTENER_BUFFER_BYTES);
    // Best effort too: a kernel without UDP_GRO (before 5.0) hands over one datagram a slot.
    let _ = sys::enable_udp_gro(&socket);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Whether `socket` may send trains (`UDP_SEGMENT`, Linux 4.18): asked once, when it is made.
fn segmentation_of(socket: &impl std::os::fd::AsFd) -> Segmentation {
    if sys::supports_udp_segment(socket) {
        Segmentation::ON
    } else {
        Segmentation::OFF
    }
}

/// Slot tag of datagrams that go nowhere (refused, truncated): sorted after every session.
const NO_SESSION: usize = usize::MAX;

#[derive(Debug)]
struct Listener {
    socket: UdpSocket,
    addr: SocketAddr,
    /// The key of its route in `UdpWorker::routes`.
    route: usize,
    /// The trains answers to clients may go in on this socket, per client.
    segmentation: DestinationSegmentation,
}

/// The UDP routes' event loop and everything it owns.
#[derive(Debug)]
pub(crate) struct UdpWorker {
    poll: Poll,
    relay: Arc<RelayState>,
    shared: Arc<UdpShared>,
    routes: Slab<Arc<UdpRouteState>>,
    listeners: Slab<Listener>,
    /// Another process reads the listening sockets (an upgrade handed them over): they are
    /// no longer watched, only written to (answers of the open sessions).
    released: bool,
    sessions: Sessions<UdpSocket>,
    /// Boxed, and taken out while in use: moving a batch is moving a pointer, not its
    /// kilobytes of slot descriptions.
    inbound: Option<Box<Batch>>,
    /// Answers read from upstream sockets in one turn, sent to their clients (across
    /// sessions: one `sendmmsg` a listening socket) when the turn ends or the batch is full.
    outbound: Option<Box<Batch>>,
    /// Sockets read `ROUNDS` times without running dry: served again next turn.
    again: Vec<Token>,
    ready: Vec<Token>,
    keys: Vec<usize>,
    deadlines: Vec<Option<Instant>>,
}

impl UdpWorker {
    /// A worker on `poll` (its waker registered as [`WAKER`]) serving each socket of
    /// `sockets` for its route.
    pub(crate) fn new(
        poll: Poll,
        relay: Arc<RelayState>,
        shared: Arc<UdpShared>,
        sockets: Vec<(std::net::UdpSocket, Arc<UdpRouteState>)>,
    ) -> io::Result<Self> {
        let mut worker = UdpWorker {
            poll,
            relay,
            shared,
            routes: Slab::new(),
            listeners: Slab::new(),
            released: false,
            sessions: Sessions::default(),
            inbound: Some(Box::new(Batch::allocate())),
            outbound: Some(Box::new(Batch::allocate())),
            again: Vec::new(),
            ready: Vec::new(),
            keys: Vec::new(),
            deadlines: Vec::new(),
        };
        for state in worker.shared.current().iter() {
            worker.route_key(state);
        }
        for (socket, state) in sockets {
            let route = worker.route_key(&state);
            worker.add_listener(socket, route)?;
        }
        Ok(worker)
    }

    /// The key of `state` among the worker's routes, added if it is new.
    fn route_key(&mut self, state: &Arc<UdpRouteState>) -> usize {
        match self.routes.iter().find(|(_, r)| Arc::ptr_eq(r, state)) {
            Some((key, _)) => key,
            None => self.routes.insert(Arc::clone(state)),
        }
    }

    /// Watches `socket` for datagrams of route `route`.
    fn add_listener(&mut self, socket: std::net::UdpSocket, route: usize) -> io::Result<()> {
        let addr = socket.local_addr()?;
        let mut socket = UdpSocket::from_std(socket);
        let entry = self.listeners.vacant_entry();
        self.poll.registry().register(
            &mut socket,
            Token(LISTENER_BASE + entry.key()),
            Interest::READABLE,
        )?;
        let segmentation = DestinationSegmentation::new(segmentation_of(&socket));
        entry.insert(Listener {
            socket,
            addr,
            route,
            segmentation,
        });
        Ok(())
    }

    /// Serves until the relay stops, or drains and every session has ended.
    ///
    /// # Errors
    ///
    /// epoll failed.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut drain_deadline: Option<Instant> = None;
        let mut next_tick = Instant::now();
        let mut now = next_tick;
        loop {
            match self.relay.advance_drain(now) {
                Control::Stopping => {
                    self.end_all(now);
                    return Ok(());
                }
                Control::Draining => {
                    let deadline = *drain_deadline.get_or_insert_with(|| {
                        crate::clock::deadline(now, self.relay.drain_timeout())
                    });
                    if self.sessions.is_empty() {
                        return Ok(());
                    }
                    if now >= deadline {
                        self.end_all(now);
                        return Ok(());
                    }
                }
                Control::Running | Control::Announced => {}
            }
            self.read_inbox(now);
            if now >= next_tick {
                self.expire(now);
                next_tick = crate::clock::deadline(now, TICK);
            }
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else if self.sessions.is_empty() && self.relay.control().accepts() {
                // Nothing ends by time: sleep until a datagram, a message or a control change
                // (which wake this loop), however long. (A drain that has just ended the last
                // session ends the loop at the top of the next turn.)
                None
            } else {
                Some(next_tick.saturating_duration_since(now))
            };
            let polled = self.poll.poll(&mut events, timeout);
            // One clock read a wake-up: every datagram of this turn is stamped with it.
            now = Instant::now();
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.ready.clear();
            self.ready.append(&mut self.again);
            self.ready.extend(events.iter().map(|e| e.token()));
            let Some(mut answers) = self.outbound.take() else {
                continue; // never: put back below
            };
            for index in 0..self.ready.len() {
                let token = self.ready[index];
                if token == WAKER {
                    // Read at the top of the loop.
                } else if token.0 >= LISTENER_BASE {
                    self.serve_clients(token.0 - LISTENER_BASE, now);
                } else {
                    self.gather_answers(token.0, &mut answers, now);
                }
            }
            self.send_answers(&mut answers, now);
            self.outbound = Some(answers);
        }
    }

    /// Applies what the handle posted: reloads (while the relay runs, as TCP workers do) and a
    /// handover.
    fn read_inbox(&mut self, now: Instant) {
        for message in self.shared.take() {
            match message {
                UdpMessage::Reload(plan) => {
                    if self.relay.control() == Control::Running {
                        self.apply(plan, now);
                    }
                }
                UdpMessage::Release => self.release(),
                UdpMessage::Observe { query, reply } => {
                    // The asker may have given up waiting: nothing to do then.
                    let _ = reply.send(self.observe(&query, now));
                }
                UdpMessage::End { filter, by, reply } => {
                    let _ = reply.send(self.end_by_operator(&filter, &by, now));
                }
            }
        }
    }

    /// Applies a reload: listening sockets whose address stays are kept (their sessions go on,
    /// unless the address now belongs to another route), the others close and their sessions
    /// end, new ones are watched; routes no longer in the list are forgotten.
    fn apply(&mut self, plan: UdpPlan, now: Instant) {
        let gone: Vec<usize> = self
            .routes
            .iter()
            .filter(|(_, r)| !plan.routes.iter().any(|n| Arc::ptr_eq(n, r)))
            .map(|(key, _)| key)
            .collect();
        for state in &plan.routes {
            self.route_key(state);
        }
        let keys: Vec<usize> = self.listeners.iter().map(|(key, _)| key).collect();
        for key in keys {
            let addr = self.listeners[key].addr;
            match plan.keep.iter().find(|(a, _)| *a == addr) {
                Some((_, state)) => {
                    let route = self.route_key(state);
                    if route != self.listeners[key].route {
                        self.end_where(|s| s.listener == key, SessionEnd::Removed, now);
                        self.listeners[key].route = route;
                    }
                }
                None => {
                    self.end_where(|s| s.listener == key, SessionEnd::Removed, now);
                    let mut listener = self.listeners.remove(key);
                    let _ = self.poll.registry().deregister(&mut listener.socket);
                    self.again.retain(|t| *t != Token(LISTENER_BASE + key));
                    // log: not client input: a reload.
                    tracing::info!(
                        route = %self.routes[listener.route].name,
                        addr = %addr,
                        "UDP listener closed (reload)"
                    );
                }
            }
        }
        for (socket, state) in plan.add {
            let route = self.route_key(&state);
            let addr = socket.local_addr().ok();
            if let Err(e) = self.add_listener(socket, route) {
                // log: not client input: a reload.
                tracing::error!(?addr, "cannot watch a UDP listener added on reload: {e}");
            }
        }
        for key in gone {
            // Every session of the route ended with its listeners; none is left to count.
            self.end_where(|s| s.route == key, SessionEnd::Removed, now);
            self.routes.remove(key);
        }
    }

    /// Stops reading the listening sockets: another process does now (an upgrade). The open
    /// sessions go on; their answers still leave through the sockets.
    fn release(&mut self) {
        for (_, listener) in self.listeners.iter_mut() {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.again.retain(|t| t.0 < LISTENER_BASE);
        self.released = true;
        // log: not client input: an upgrade, once.
        tracing::info!(
            sessions = self.sessions.len(),
            "udp: the listening sockets are read by the new process now; open sessions go on \
             here until they idle out"
        );
    }

    /// The open sessions `query` selects: how many matched, and those it keeps.
    fn observe(&self, query: &ConnectionQuery, now: Instant) -> (usize, Vec<UdpSessionInfo>) {
        let mut listed: Vec<UdpSessionInfo> = self
            .sessions
            .iter()
            .filter_map(|session| {
                let route = &self.routes.get(session.route)?.name;
                query
                    .filter
                    .matches_session(route, session.client)
                    .then(|| UdpSessionInfo {
                        route: route.clone(),
                        client: session.client,
                        upstream: session.upstream_addr,
                        age: now.saturating_duration_since(session.started),
                        idle: now.saturating_duration_since(session.last_active),
                        datagrams_up: session.traffic.datagrams_up,
                        bytes_up: session.traffic.bytes_up,
                        datagrams_down: session.traffic.datagrams_down,
                        bytes_down: session.traffic.bytes_down,
                    })
            })
            .collect();
        let matched = listed.len();
        order_sessions(&mut listed, query.sort, query.limit);
        (matched, listed)
    }

    /// Ends the sessions `filter` selects for an operator (`by`: who asked), each logged as
    /// every session end is, and says which (route, client) they were.
    fn end_by_operator(
        &mut self,
        filter: &ConnectionFilter,
        by: &str,
        now: Instant,
    ) -> Vec<(String, SocketAddr)> {
        let mut ended = Vec::new();
        let mut keys = std::mem::take(&mut self.keys);
        self.sessions.matching(
            |s| {
                self.routes
                    .get(s.route)
                    .is_some_and(|r| filter.matches_session(&r.name, s.client))
            },
            &mut keys,
        );
        for &key in &keys {
            if let Some(session) = self.sessions.get_mut(key) {
                ended.push((self.routes[session.route].name.clone(), session.client));
            }
            self.end(key, SessionEnd::Operator, now);
        }
        self.keys = keys;
        if !ended.is_empty() {
            // log: not client input: an operator's request, once per request.
            tracing::warn!(
                sessions = ended.len(),
                "udp: sessions ended by the operator ({by})"
            );
        }
        ended
    }

    /// Ends every session `select` picks, for `why`.
    fn end_where(
        &mut self,
        select: impl Fn(&Session<UdpSocket>) -> bool,
        why: SessionEnd,
        now: Instant,
    ) {
        let mut keys = std::mem::take(&mut self.keys);
        self.sessions.matching(select, &mut keys);
        for &key in &keys {
            self.end(key, why, now);
        }
        self.keys = keys;
    }

    /// Counts `n` of `counter` for route `route`, and relay-wide.
    fn count(&self, route: usize, counter: fn(&Stats) -> &AtomicU64, n: u64) {
        count(&self.relay.stats, &self.routes[route].stats, counter, n);
    }

    /// Reads datagrams from clients on listening socket `index` and sends each on its session.
    fn serve_clients(&mut self, index: usize, now: Instant) {
        if self.released {
            return;
        }
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let route = listener.route;
        let Some(mut batch) = self.inbound.take() else {
            return; // never: put back below
        };
        for _ in 0..ROUNDS {
            batch.clear();
            let n = match batch.recv(&self.listeners[index].socket, NO_SESSION, None) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inbound = Some(batch);
                    return;
                }
                Err(e) => {
                    // An unconnected socket reports no peer's errors; this is the socket's own.
                    tracing::debug!(route = %self.routes[route].name, "udp: receive failed: {e}");
                    self.inbound = Some(batch);
                    return;
                }
            };
            self.forward_up(index, route, &mut batch, now);
            if n < MAX_BATCH {
                // recvmmsg stopped at an empty queue: a later datagram raises a new edge, so
                // another read now would only answer EAGAIN (one system call saved a wake-up).
                self.inbound = Some(batch);
                return;
            }
        }
        self.inbound = Some(batch);
        self.again.push(Token(LISTENER_BASE + index));
    }

    /// Sends the datagrams of `batch` to their sessions' upstreams: each slot is tagged with
    /// its session (opened for a new client), the datagrams ordered by session (each client's
    /// in the order they came), and each session's sent with one `sendmmsg`, in trains where
    /// they may be.
    fn forward_up(&mut self, listener: usize, route: usize, batch: &mut Batch, now: Instant) {
        let mut last: Option<(SocketAddr, usize)> = None;
        for slot in 0..batch.slots() {
            let Some(client) = batch.sender(slot) else {
                continue;
            };
            if batch.truncated(slot) {
                self.count(route, |s| &s.udp_dropped_truncated, 1);
                continue;
            }
            let key = match last {
                Some((sender, key)) if sender == client => key,
                _ => match self.sessions.find(listener, client) {
                    Some(key) => key,
                    None => match self.open(listener, route, client, now) {
                        Ok(key) => key,
                        Err(refusal) => {
                            let n = batch.datagrams_in(slot) as u64;
                            self.refused(route, client, refusal, n, now);
                            continue;
                        }
                    },
                },
            };
            last = Some((client, key));
            batch.tag(slot, key, None);
        }
        batch.order_by(|tag, _| tag);
        let mut i = 0;
        let total = batch.datagrams().len();
        while i < total {
            let key = batch.tag_of(batch.datagrams()[i].slot());
            let mut end = i + 1;
            while end < total && batch.tag_of(batch.datagrams()[end].slot()) == key {
                end += 1;
            }
            if key == NO_SESSION {
                break; // sorted last: refused, counted above
            }
            let Some(session) = self.sessions.get_mut(key) else {
                i = end;
                continue;
            };
            let unreachable = send(&session.upstream, batch, i..end, &mut session.segmentation);
            let (sent, bytes) = sent_of(batch, i..end);
            session.last_active = now;
            session.traffic.datagrams_up += sent;
            session.traffic.bytes_up += bytes;
            // With `udp_responses = 0` nothing comes back: the session is done once its
            // datagrams have left.
            let done = sent > 0 && session.responses == Some(0);
            self.count(route, |s| &s.udp_datagrams_client_to_upstream, sent);
            self.count(route, |s| &s.udp_bytes_client_to_upstream, bytes);
            let dropped = (end - i) as u64 - sent;
            if unreachable {
                self.count(route, |s| &s.udp_dropped_unreachable, dropped);
                self.end(key, SessionEnd::Unreachable, now);
            } else {
                self.count(route, |s| &s.udp_dropped_send_failed, dropped);
                if done {
                    self.end(key, SessionEnd::Responses, now);
                }
            }
            i = end;
        }
    }

    /// Opens a session for `client`, or says why not.
    fn open(
        &mut self,
        listener: usize,
        route: usize,
        client: SocketAddr,
        now: Instant,
    ) -> Result<usize, Refusal> {
        if !self.relay.control().accepts() {
            return Err(Refusal::Draining);
        }
        let state = Arc::clone(&self.routes[route]);
        let description = state.route();
        if description.access.check(client.ip()).is_err() {
            return Err(Refusal::Denied);
        }
        self.sessions.admits(
            route,
            client.ip(),
            description.udp.max_sessions,
            description.udp.max_sessions_per_client,
        )?;
        let picked = state.pick(client, now).ok_or(Refusal::NoUpstream)?;
        let upstream_addr = picked.addr;
        let key = self.sessions.next_key();
        let budget = &self.relay.descriptors;
        if !budget.try_take_leaving(PER_SESSION, budget.capacity() / 2) {
            return Err(Refusal::Descriptors);
        }
        let opened = connect(upstream_addr).and_then(|mut upstream| {
            self.poll
                .registry()
                .register(&mut upstream, Token(key), Interest::READABLE)?;
            Ok(upstream)
        });
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(e) => {
                self.relay.descriptors.give_back(PER_SESSION);
                return Err(match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => Refusal::Descriptors,
                    _ => Refusal::NoUpstream,
                });
            }
        };
        let segmentation = segmentation_of(&upstream);
        let inserted = self.sessions.insert(Session {
            client,
            listener,
            route,
            upstream,
            upstream_addr,
            started: now,
            last_active: now,
            traffic: Traffic::default(),
            segmentation,
            member: picked.member,
            reached: false,
            responses: description.udp.responses,
        });
        debug_assert_eq!(inserted, key);
        if let Some(member) = self.sessions.get(key).and_then(|s| s.member.as_ref()) {
            member.opened();
        }
        self.count(route, |s| &s.udp_sessions_started, 1);
        tracing::debug!(
            target: "spliceway::udp",
            route = %state.name,
            client = %client,
            upstream = %upstream_addr,
            "session started"
        );
        Ok(key)
    }

    /// Counts datagrams dropped for a client without a session, and says so once a second.
    fn refused(&self, route: usize, client: SocketAddr, refusal: Refusal, n: u64, now: Instant) {
        let counter: fn(&Stats) -> &AtomicU64 = match refusal {
            Refusal::Denied => |s| &s.udp_dropped_denied,
            Refusal::SessionLimit => |s| &s.udp_dropped_session_limit,
            Refusal::ClientLimit => |s| &s.udp_dropped_client_limit,
            Refusal::Draining => |s| &s.udp_dropped_draining,
            Refusal::NoUpstream => |s| &s.udp_dropped_no_upstream,
            Refusal::Descriptors => |s| &s.udp_dropped_descriptors,
        };
        self.count(route, counter, n);
        let state = &self.routes[route];
        if let Some(held_back) = state.drop_log.admit(now, Duration::from_secs(1)) {
            // log: rate limited (one line a second per route, drop_log.admit above).
            tracing::info!(
                route = %state.name,
                client = %client,
                held_back,
                "udp: datagrams of a new client dropped: {refusal}"
            );
        }
    }

    /// Reads answers on session `key`'s upstream socket into `answers`, tagged with the session
    /// and addressed to its client; sends what `answers` holds first when it is full.
    fn gather_answers(&mut self, key: usize, answers: &mut Batch, now: Instant) {
        for _ in 0..ROUNDS {
            if answers.free_slots() == 0 {
                self.send_answers(answers, now);
            }
            let Some(session) = self.sessions.get_mut(key) else {
                return;
            };
            let free = answers.free_slots();
            match answers.recv(&session.upstream, key, Some(session.client)) {
                Ok(n) => {
                    session.last_active = now;
                    if !session.reached {
                        session.reached = true;
                        if let Some(member) = &session.member {
                            member.answered(&self.routes[session.route].name);
                        }
                    }
                    if n < free {
                        // As for clients: the queue was empty; the next datagram raises a new
                        // edge.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // ECONNREFUSED (port unreachable) and the other ICMP errors of a
                    // connected socket: the upstream is not there; end instead of retrying.
                    // Answers it gave before go first (they are tagged with the session).
                    self.send_answers(answers, now);
                    self.end(key, SessionEnd::Unreachable, now);
                    return;
                }
            }
        }
        self.again.push(Token(key));
    }

    /// Sends the answers gathered in `answers` to their clients: ordered by the listening
    /// socket they leave through (each session's in the order they came), one `sendmmsg` a
    /// listening socket for all its sessions, in trains where they may be; then empties it.
    fn send_answers(&mut self, answers: &mut Batch, now: Instant) {
        if answers.slots() == 0 {
            return;
        }
        let sessions = &self.sessions;
        // A session that ended in this turn may have left its key to a new one: its answers
        // are dropped rather than sent through the new one's listening socket.
        let listener_of = |tag: usize, to: Option<SocketAddr>| {
            sessions
                .get(tag)
                .filter(|s| Some(s.client) == to)
                .map_or(NO_SESSION, |s| s.listener)
        };
        for slot in 0..answers.slots() {
            if answers.truncated(slot)
                && let Some(session) = self.sessions.get(answers.tag_of(slot))
            {
                self.count(session.route, |s| &s.udp_dropped_truncated, 1);
            }
        }
        answers.order_by(listener_of);
        let total = answers.datagrams().len();
        let mut i = 0;
        while i < total {
            let listener_at = |i: usize| {
                let slot = answers.datagrams()[i].slot();
                listener_of(answers.tag_of(slot), answers.destination(i))
            };
            let listener = listener_at(i);
            let mut end = i + 1;
            while end < total && listener_at(end) == listener {
                end += 1;
            }
            let Some(through) = self.listeners.get_mut(listener) else {
                break; // sorted last: of sessions gone
            };
            // An unconnected socket reports no ICMP errors.
            let _ = send(&through.socket, answers, i..end, &mut through.segmentation);
            i = end;
        }
        // Counted per session: its datagrams are consecutive. Sessions whose every datagram
        // has had its `udp_responses` answers end once all are counted (their answers have
        // left).
        let mut answered = std::mem::take(&mut self.keys);
        answered.clear();
        let mut i = 0;
        while i < total {
            let key = answers.tag_of(answers.datagrams()[i].slot());
            let mut end = i + 1;
            while end < total && answers.tag_of(answers.datagrams()[end].slot()) == key {
                end += 1;
            }
            let (sent, bytes) = sent_of(answers, i..end);
            let to = answers.destination(i);
            if let Some(session) = self.sessions.get_mut(key).filter(|s| Some(s.client) == to) {
                session.traffic.datagrams_down += sent;
                session.traffic.bytes_down += bytes;
                if session.traffic.answered(session.responses) {
                    answered.push(key);
                }
                let route = session.route;
                self.count(route, |s| &s.udp_datagrams_upstream_to_client, sent);
                self.count(route, |s| &s.udp_bytes_upstream_to_client, bytes);
                self.count(
                    route,
                    |s| &s.udp_dropped_send_failed,
                    (end - i) as u64 - sent,
                );
            }
            i = end;
        }
        answers.clear();
        for &key in &answered {
            self.end(key, SessionEnd::Responses, now);
        }
        self.keys = answered;
    }

    /// Ends the sessions silent for their route's idle timeout.
    fn expire(&mut self, now: Instant) {
        if self.sessions.is_empty() {
            return;
        }
        self.deadlines.clear();
        for (key, state) in self.routes.iter() {
            if self.deadlines.len() <= key {
                self.deadlines.resize(key + 1, None);
            }
            let idle = state.route().udp.idle_timeout;
            self.deadlines[key] = now.checked_sub(idle);
        }
        let mut keys = std::mem::take(&mut self.keys);
        self.sessions.expired(&self.deadlines, &mut keys);
        for &key in &keys {
            self.end(key, SessionEnd::IdleTimeout, now);
        }
        self.keys = keys;
    }

    /// Ends every session (a stop, or a drain out of time).
    fn end_all(&mut self, now: Instant) {
        self.end_where(|_| true, SessionEnd::Stopped, now);
    }

    /// Ends session `key`: closes its upstream socket, counts and logs it.
    fn end(&mut self, key: usize, why: SessionEnd, now: Instant) {
        let Some(mut session) = self.sessions.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut session.upstream);
        drop(session.upstream);
        self.relay.descriptors.give_back(PER_SESSION);
        if let Some(member) = &session.member {
            if why == SessionEnd::Unreachable {
                member.unreachable(&self.routes[session.route].name, now);
            }
            member.closed();
        }
        if let Some(listener) = self.listeners.get_mut(session.listener) {
            listener.segmentation.forget(session.client);
        }
        let route = session.route;
        let counter: fn(&Stats) -> &AtomicU64 = match why {
            SessionEnd::IdleTimeout => |s| &s.udp_idle_timeouts,
            SessionEnd::Unreachable => |s| &s.udp_upstream_unreachable,
            // The metric's `drain` reason: the relay, or this route, stopped serving.
            SessionEnd::Stopped | SessionEnd::Removed => |s| &s.udp_drain_ends,
            SessionEnd::Operator => |s| &s.udp_operator_ends,
            SessionEnd::Responses => |s| &s.udp_responses_ends,
        };
        self.count(route, counter, 1);
        self.count(route, |s| &s.udp_sessions_ended, 1);
        let traffic = session.traffic;
        let duration = now.saturating_duration_since(session.started);
        // log: access log: the operator's choice (info, -v), one line per session as for TCP.
        tracing::info!(
            target: "spliceway::udp",
            route = %self.routes[route].name,
            client = %session.client,
            upstream = %session.upstream_addr,
            datagrams_up = traffic.datagrams_up,
            bytes_up = traffic.bytes_up,
            datagrams_down = traffic.datagrams_down,
            bytes_down = traffic.bytes_down,
            duration_ms = duration.as_millis() as u64,
            end = %why,
            "session closed"
        );
    }
}

/// A connected, non-blocking UDP socket to `upstream` from an address the kernel chooses.
fn connect(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    ask_buffers(&socket2::SockRef::from(&socket), SESSION_BUFFER_BYTES);
    socket.connect(upstream)?;
    socket.set_nonblocking(true)?;
    // Best effort, as on listening sockets: a train of answers arrives in one slot.
    let _ = sys::enable_udp_gro(&socket);
    Ok(UdpSocket::from_std(socket))
}

/// How many of datagrams `range` of `batch` were sent, and their bytes.
fn sent_of(batch: &Batch, range: std::ops::Range<usize>) -> (u64, u64) {
    batch.datagrams()[range]
        .iter()
        .filter(|d| d.sent)
        .fold((0, 0), |(n, bytes), d| (n + 1, bytes + d.len() as u64))
}
