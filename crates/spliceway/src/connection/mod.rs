//! One relayed connection: the client socket, and the phases it goes through to reach and
//! relay to its upstream.
//!
//! | phase | file | what happens |
//! | --- | --- | --- |
//! | awaiting PROXY header | `proxy_header.rs` | routes behind a load balancer: the client's real address is read from the PROXY protocol header |
//! | awaiting hello | `hello.rs` | SNI routes: the ClientHello is peeked at to choose the upstream |
//! | awaiting request | `connect_request.rs` | HTTP CONNECT routes: the request is read, its target checked against `connect_allow`; answered `200` once connected, or its refusal |
//! | resolving | (the worker carries out the lookup) | the upstream name is resolved off the event loop; an intercepted connection's original destination is read here (`interception.rs`) |
//! | connecting | `dial.rs`, `attempts.rs` | one resolved address after another, never the relay's own listener |
//! | relaying | `relaying.rs` | readiness latches into the two directions; the pump moves bytes within a budget |
//!
//! The connection drives itself through the early phases: [`Connection::advance`] reads what
//! the client sent, checks the access lists, routes by server name and dials, and returns a
//! [`Step`] saying what only the worker can do (wait for readiness, look a name up, close).
//! Which phase follows which, and what each phase does next, is decided without I/O in
//! `phase.rs` and tested there. `adoption.rs` builds a connection a program handed over,
//! already relaying; `context.rs` holds what the phases share.
//!
//! How a connection ends decides how its sockets are closed: only a connection whose both
//! directions passed end of stream is closed gracefully; every other end (a reset, a failed
//! write, a timeout, a drain that ran out of time) closes *both* sockets with `SO_LINGER` 0, so
//! each peer sees a reset and never mistakes a truncated transfer for a complete one. The
//! sockets carry `SO_LINGER` 0 from the moment they exist, so the same holds when the process
//! dies (a crash, a panic, SIGKILL, the OOM killer): the kernel's close resets them too.

mod adoption;
mod attempts;
mod connect_request;
mod context;
mod dial;
mod hello;
mod interception;
mod peek;
mod phase;
mod proxy_header;
mod relaying;

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use socket2::SockRef;

use connect_request::{RequestRead, read_connect_request, write_answer};
pub(crate) use context::{Ctx, Identity, Pump, Seen, SocketTokens};
use context::{Millis, OrDash};
use dial::Dial;
use hello::{Hello, NamePeek, read_hello};
use phase::{Action, RouteShape, after_header, after_hello, first_phase, next_action};
pub(crate) use phase::{ClientEvent, Phase, Step};
use proxy_header::{HeaderRead, read_proxy_header, write_proxy_header};
use relaying::Relaying;

use crate::address::UpstreamAddr;
use crate::balance::GroupAttempt;
use crate::clock::deadline;
use crate::end::{CloseReason, ConnectionEnd, OnEnd};
use crate::http_connect::Answer;
use crate::observe::{ConnectionFilter, ConnectionInfo, RateSample};
use crate::proxy_protocol::ProxyHeaderError;
use crate::rate_limit::ClientSlot;
use crate::resolver::{Target, Ticket, is_local};
use crate::route::{Mode, NameOrigin, Upstream};
use crate::socket_options::{apply_accepted_options, apply_socket_options};
use crate::state::route::RouteState;
use crate::stats::count;
use crate::transfer::direction_io::is_reset;

// Relaying is the state a connection spends its life in: boxing it would add an allocation per
// connection to save bytes only in the short-lived states.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    /// Routes that accept PROXY protocol: waiting for the whole header.
    AwaitingProxyHeader,
    /// SNI routes: waiting for the client's TLS ClientHello.
    AwaitingHello,
    /// HTTP CONNECT routes: waiting for the client's request.
    AwaitingRequest,
    Resolving,
    Connecting(Dial),
    Relaying(Relaying),
}

impl State {
    /// The state an early phase starts in (the later ones are entered with their sockets).
    fn early(phase: Phase) -> State {
        match phase {
            Phase::AwaitingHeader => State::AwaitingProxyHeader,
            Phase::AwaitingHello => State::AwaitingHello,
            Phase::AwaitingRequest => State::AwaitingRequest,
            _ => State::Resolving,
        }
    }
}

/// The shape of `route` that decides a connection's phases.
fn shape(route: &RouteState) -> RouteShape {
    RouteShape {
        accepts_proxy: route.options.accept_proxy.is_some(),
        sni: matches!(route.upstream, Upstream::Sni(_)),
        connect: matches!(route.upstream, Upstream::HttpConnect(_)),
    }
}

/// A relayed connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) route: Arc<RouteState>,
    client: TcpStream,
    /// The client's address: the socket's peer, or the source a PROXY protocol header gave.
    client_addr: SocketAddr,
    /// The load balancer the client came through, when a PROXY header gave the client's
    /// address (the socket's own peer).
    via: Option<SocketAddr>,
    /// The address the client connected to, when a PROXY header gave it (else the client
    /// socket's local address), for the header sent upstream.
    destination: Option<SocketAddr>,
    tokens: SocketTokens,
    /// The upstream chosen for this connection (fixed, from the SNI table, or from the
    /// route's group).
    chosen: Option<UpstreamAddr>,
    /// Routes with several upstreams: this connection's way through the group (which
    /// upstream, which were tried); it holds the connection's place in the upstream's count of
    /// open connections until it is dropped.
    group: Option<GroupAttempt>,
    /// The server name the client asked for (SNI routes; fixed routes peek for it, for the
    /// log only).
    server_name: Option<String>,
    /// Whether looking for a server name is over: true from the start unless this is a fixed
    /// route whose connections are logged; then set once the client's first bytes were looked
    /// at (at most twice, never waiting for them: see [`Connection::peek_server_name`]).
    name_peeked: bool,
    /// Where the chosen upstream's name came from; `None` for an IP literal.
    origin: Option<NameOrigin>,
    state: State,
    accepted_at: Instant,
    /// When the upstream was chosen and resolution began: at accept for fixed routes, when
    /// the ClientHello completed for SNI routes. The connect timeout counts from here, so the
    /// time a client takes to send its hello (bounded by the hello timeout) is not taken from
    /// its connect timeout.
    resolving_since: Instant,
    connect_time: Option<Duration>,
    /// The lookup this connection waits for (while resolving): dropping it withdraws the
    /// request, so a closed connection's lookup is not run if it has not started.
    lookup: Option<Ticket>,
    /// The deadline entry that is current in the worker's queue.
    pub(crate) timer_at: Option<Instant>,
    /// Adopted connections: what to tell the program when the connection ends (`adoption.rs`).
    on_end: Option<OnEnd>,
    /// What the client socket's events said before relaying began, so that the client ->
    /// upstream direction starts knowing whether there is anything to read.
    client_seen: Seen,
    /// Byte counts when a listing last looked, for its rates (`observe.rs`): touched only by
    /// listings, never on the per-byte path.
    sample: RateSample,
    /// HTTP CONNECT routes: the client has been answered (`200`, or a refusal), so the close
    /// writes nothing more.
    answered: bool,
    /// The connection's place among its client's connections of the route (its per-client
    /// connection limit and shared rate limit): taken once the client's address is known,
    /// at accept or after its PROXY header; freed when the connection is dropped.
    client_slot: Option<ClientSlot>,
}

/// Borrows a connection's identity and its state mutably at once (disjoint fields).
macro_rules! identity_and_state {
    ($self:ident) => {
        (
            Identity {
                id: $self.id,
                route: &$self.route,
                client: $self.client_addr,
                chosen: $self.chosen.as_ref(),
                origin: $self.origin,
            },
            &mut $self.state,
        )
    };
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        route: Arc<RouteState>,
        client: TcpStream,
        client_addr: SocketAddr,
        tokens: SocketTokens,
        now: Instant,
    ) -> Self {
        let first = State::early(first_phase(shape(&route)));
        Connection {
            id,
            client,
            client_addr,
            via: None,
            destination: None,
            tokens,
            chosen: match &route.upstream {
                Upstream::Fixed(addr) => Some(addr.clone()),
                // Chosen by the ClientHello, the original destination or the CONNECT request.
                _ => None,
            },
            group: None,
            server_name: None,
            // Decided once, not on every event: only a fixed route's connection whose `closed`
            // line will be logged (info on `spliceway::conn`, `-v`) looks for the name.
            name_peeked: !(matches!(route.upstream, Upstream::Fixed(_) | Upstream::Group(_))
                && tracing::enabled!(target: "spliceway::conn", tracing::Level::INFO)),
            origin: match &route.upstream {
                Upstream::Fixed(UpstreamAddr::Name { .. }) => Some(NameOrigin::Configured),
                _ => None,
            },
            state: first,
            accepted_at: now,
            resolving_since: now,
            connect_time: None,
            lookup: None,
            timer_at: None,
            on_end: None,
            client_seen: Seen::default(),
            sample: RateSample::new(now),
            answered: false,
            client_slot: None,
            route,
        }
    }

    /// Sets the client socket's options and registers it. A socket accepted from the route's
    /// listener already carries the options it inherits (`apply_listener_options`);
    /// `all_options` asks for them all (an adopted socket, a listener whose options a reload
    /// changed).
    pub(crate) fn register_client(
        &mut self,
        registry: &Registry,
        all_options: bool,
    ) -> io::Result<()> {
        if all_options {
            apply_socket_options(&self.client, &self.route.options)?;
        } else {
            apply_accepted_options(&self.client, &self.route.options);
        }
        // Registered before anything is read from it: epoll reports bytes already queued at
        // once, so from here every arrival comes with an event (`client_seen`).
        registry.register(
            &mut self.client,
            self.tokens.client,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub(crate) fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The TCP peer the connection came from: the client, or the load balancer whose PROXY
    /// header gave [`client_addr`](Self::client_addr).
    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.via.unwrap_or(self.client_addr)
    }

    /// Remembers a client event before relaying begins (while relaying, the directions latch
    /// it themselves).
    pub(crate) fn note_client_event(&mut self, readable: bool, read_closed: bool) {
        self.client_seen.readable |= readable;
        self.client_seen.closing |= read_closed;
    }

    /// The upstream chosen (after SNI routing for SNI routes).
    pub(crate) fn chosen_upstream(&self) -> Option<&UpstreamAddr> {
        self.chosen.as_ref()
    }

    /// Where the client asked to go, on routes where the client chooses (the original
    /// destination, the CONNECT target), for the `closed` line.
    fn client_chosen(&self) -> Option<&UpstreamAddr> {
        self.route
            .upstream
            .client_chooses()
            .then_some(self.chosen.as_ref())
            .flatten()
    }

    /// Where the connection is (cheap: a match).
    pub(crate) fn phase(&self) -> Phase {
        match &self.state {
            State::AwaitingProxyHeader => Phase::AwaitingHeader,
            State::AwaitingHello => Phase::AwaitingHello,
            State::AwaitingRequest => Phase::AwaitingRequest,
            State::Resolving => Phase::Resolving,
            State::Connecting(_) => Phase::Connecting,
            State::Relaying(relaying) if relaying.half_closed() => Phase::HalfClosed,
            State::Relaying(_) => Phase::Relaying,
        }
    }

    /// Whether a listing's or a close's `filter` selects this connection.
    pub(crate) fn selected_by(&self, filter: &ConnectionFilter) -> bool {
        filter.matches(self.id, &self.route.name, self.client_addr)
    }

    /// What `spliceway connections` shows of this connection, without allocating. Moves the
    /// rate sample on (`observe.rs`).
    pub(crate) fn observe(&mut self, now: Instant) -> Observed {
        let (upstream, (bytes_up, bytes_down), mode) = match &self.state {
            State::Relaying(relaying) => (
                Some(relaying.upstream_addr()),
                relaying.bytes_written(),
                if relaying.splicing() {
                    Mode::Splice
                } else {
                    Mode::Copy
                },
            ),
            State::Connecting(dial) => (dial.upstream_addr(), (0, 0), self.route.options.mode),
            _ => (None, (0, 0), self.route.options.mode),
        };
        let (rate_up, rate_down) = self.sample.rate(now, bytes_up, bytes_down);
        Observed {
            upstream,
            phase: self.phase(),
            age: now.saturating_duration_since(self.accepted_at),
            bytes_up,
            bytes_down,
            rate_up,
            rate_down,
            mode,
        }
    }

    /// The listing entry of this connection, from what [`observe`](Self::observe) found.
    pub(crate) fn info(&self, seen: &Observed) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            route: self.route.name.clone(),
            client: self.client_addr,
            via: self.via,
            upstream: seen.upstream,
            phase: seen.phase.public(),
            age: seen.age,
            bytes_up: seen.bytes_up,
            bytes_down: seen.bytes_down,
            rate_up: seen.rate_up,
            rate_down: seen.rate_down,
            mode: seen.mode,
        }
    }

    /// Whether the route refuses this client before a byte is read. Behind a load balancer
    /// the client's address comes with its PROXY header, and the access lists are checked
    /// once it has been read ([`advance`](Self::advance)); but a header is believed only from
    /// the peers the route trusts to send one: any other peer is refused now, so it holds no
    /// slot while it waits or stalls.
    ///
    /// A client the access lists admit then takes its place among its address's connections
    /// of the route, unless it already holds `max_connections_per_client` of them.
    pub(crate) fn refusal_at_accept(&mut self) -> Option<CloseReason> {
        let peer = self.client_addr.ip();
        if self.phase() == Phase::AwaitingHeader {
            return proxy_peer_refusal(&self.route, peer).map(CloseReason::Denied);
        }
        if let Err(denied) = self.route.access.check(peer) {
            return Some(CloseReason::Denied(denied.to_string()));
        }
        self.take_client_slot().err()
    }

    /// Counts the connection among its client's (by the client's address: the PROXY header's
    /// when there is one).
    fn take_client_slot(&mut self) -> Result<(), CloseReason> {
        let slot = self
            .route
            .counters
            .limits
            .admit(self.client_addr.ip())
            .map_err(|at| CloseReason::ClientLimit(at.limit))?;
        self.client_slot = Some(slot);
        Ok(())
    }

    /// Moves the connection through its early phases as far as `client`'s event lets it: reads
    /// the PROXY header (then checks the access lists against the address it gave), peeks at
    /// the ClientHello and routes by its server name, and dials an IP-literal upstream. Returns
    /// what the worker must do next. Called at accept (with no event: a connection of a fixed
    /// route starts resolving at once) and on the client's events while it awaits a header or
    /// a hello.
    pub(crate) fn advance(&mut self, ctx: &mut Ctx<'_>, mut client: ClientEvent) -> Step {
        // One pass per early phase at most: the header, the hello, resolving.
        for _ in 0..3 {
            match next_action(self.phase(), client, self.lookup.is_some()) {
                Action::Wait => return Step::Wait,
                Action::ReadHeader => {
                    if let ControlFlow::Break(reason) =
                        self.read_proxy_header(ctx.scratch, client.read_closed, ctx.now)
                    {
                        return Step::Close(reason);
                    }
                    if self.phase() == Phase::AwaitingHeader {
                        return Step::Wait;
                    }
                    if let Err(denied) = self.route.access.check(self.client_addr.ip()) {
                        return Step::Close(CloseReason::Denied(denied.to_string()));
                    }
                    if let Err(refused) = self.take_client_slot() {
                        return Step::Close(refused);
                    }
                    // Go on at once: the bytes after the header may be queued already, and no
                    // new edge would announce them.
                    client.readable = true;
                }
                Action::ReadHello => {
                    if let ControlFlow::Break(reason) = self.read_hello(ctx.scratch, ctx.now) {
                        return Step::Close(reason);
                    }
                    if self.phase() == Phase::AwaitingHello {
                        return Step::Wait;
                    }
                    if let Err(reason) = after_hello(client) {
                        return Step::Close(reason);
                    }
                }
                Action::ReadRequest => {
                    if let ControlFlow::Break(reason) =
                        self.read_connect_request(ctx.scratch, client.read_closed, ctx.now)
                    {
                        return Step::Close(reason);
                    }
                    if self.phase() == Phase::AwaitingRequest {
                        return Step::Wait;
                    }
                }
                Action::Resolve => return self.resolve(ctx),
            }
        }
        Step::Wait
    }

    /// The upstream is chosen: an IP literal is dialled at once; a name is for the worker to
    /// look up ([`Step::Resolve`]). A route with several upstreams chooses one first, by its
    /// balance, for the client's address (the one a PROXY header gave, if any).
    fn resolve(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.chosen.is_none() && matches!(self.route.upstream, Upstream::OriginalDestination) {
            return match interception::original_destination(&self.client, &self.route.options) {
                Ok(target) => {
                    // The client chose it: the route's strict address policy applies.
                    self.chosen = Some(UpstreamAddr::Ip(target.addr));
                    self.origin = Some(NameOrigin::Client);
                    self.resolved(ctx, Ok(Arc::from(vec![target])))
                }
                Err(reason) => Step::Close(reason),
            };
        }
        if self.group.is_none()
            && let Some(group) = &self.route.group
        {
            let attempt = GroupAttempt::start(Arc::clone(group), self.client_addr.ip(), ctx.now);
            self.choose(attempt.upstream().clone());
            self.group = Some(attempt);
        }
        if let Some(targets) = self.group.as_ref().and_then(GroupAttempt::literal_targets) {
            return self.resolved(ctx, Ok(targets));
        }
        let targets = match &self.chosen {
            None => return Step::Close(CloseReason::ConnectFailed("no upstream".into())),
            Some(UpstreamAddr::Name { .. }) => return Step::Resolve,
            Some(UpstreamAddr::Ip(addr)) => match &self.route.literal_targets {
                Some(targets) if targets[0].addr == *addr => Arc::clone(targets),
                _ => Arc::from(vec![Target {
                    addr: *addr,
                    local: is_local(addr.ip()),
                }]),
            },
        };
        self.resolved(ctx, Ok(targets))
    }

    /// The answer to the lookup of the chosen upstream's name (from the cache, or from the
    /// resolver's threads through the worker's mailbox): start connecting, or close.
    ///
    /// With several upstreams, one whose name does not resolve or whose every address fails
    /// at once is left for the next (within `connect_attempts` upstreams in all).
    pub(crate) fn resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        answer: Result<Arc<[Target]>, String>,
    ) -> Step {
        let reason = match answer.map(|targets| self.on_resolved(ctx, targets)) {
            Err(e) => CloseReason::ResolveFailed(e),
            Ok(ControlFlow::Break(reason)) => reason,
            Ok(ControlFlow::Continue(())) => return Step::Wait,
        };
        match self.next_upstream(ctx, reason) {
            ControlFlow::Break(reason) => Step::Close(reason),
            ControlFlow::Continue(()) => self.resolve_next(ctx),
        }
    }

    /// HTTP CONNECT routes: reads the request so far and, once it is whole, allowed and
    /// consumed, takes its target as the upstream and moves on to resolving. `Continue` in
    /// [`Phase::AwaitingRequest`] still means: wait for more bytes.
    fn read_connect_request(
        &mut self,
        scratch: &mut [u8],
        read_closed: bool,
        now: Instant,
    ) -> ControlFlow<CloseReason> {
        let Upstream::HttpConnect(table) = &self.route.upstream else {
            return ControlFlow::Continue(());
        };
        match read_connect_request(&self.client, table, scratch, read_closed) {
            Ok(RequestRead::Incomplete) => ControlFlow::Continue(()),
            Ok(RequestRead::Allowed(target)) => {
                tracing::debug!(
                    target: "spliceway::conn",
                    id = self.id,
                    route = %self.route.name,
                    client = %self.client_addr,
                    target = %target,
                    "CONNECT request allowed"
                );
                // The client chose the name: the route's strict address policy applies to
                // what it resolves to.
                self.chosen = Some(target.upstream());
                self.origin = Some(NameOrigin::Client);
                self.state = State::Resolving;
                self.resolving_since = now;
                ControlFlow::Continue(())
            }
            Err(reason) => ControlFlow::Break(reason),
        }
    }

    /// Resolves (or dials) the next upstream of a group, after the previous one failed; each
    /// literal that fails at once leads to the next, at most one pass over the group.
    fn resolve_next(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if matches!(self.chosen, Some(UpstreamAddr::Name { .. })) {
            return Step::Resolve;
        }
        // `resolve` dials a literal and, on failure, comes back here through `resolved` and
        // `next_upstream`, which stops once the group's attempts are spent: the recursion is
        // bounded by connect_attempts.
        self.resolve(ctx)
    }

    /// Sets the upstream this connection goes to next (from a group).
    fn choose(&mut self, upstream: UpstreamAddr) {
        self.origin = match upstream {
            UpstreamAddr::Name { .. } => Some(NameOrigin::Configured),
            UpstreamAddr::Ip(_) => None,
        };
        self.chosen = Some(upstream);
    }

    /// The chosen upstream failed with `reason` (its name did not resolve, or every address
    /// tried failed). With several upstreams: counts the failure against it (passive health)
    /// and moves to the next the balance picks, back to resolving, if the connection has
    /// attempts left; otherwise, and for a single upstream, `reason` ends the connection.
    fn next_upstream(
        &mut self,
        ctx: &mut Ctx<'_>,
        reason: CloseReason,
    ) -> ControlFlow<CloseReason> {
        let Some(group) = &mut self.group else {
            return ControlFlow::Break(reason);
        };
        group.attempt_failed(ctx.now, &self.route.name);
        // No other upstream would do better without descriptors, nor against a reset client.
        if matches!(reason, CloseReason::OutOfDescriptors(_)) {
            return ControlFlow::Break(reason);
        }
        let budget = self.route.options.connect_attempts;
        let Some(next) = group.next_upstream(self.client_addr.ip(), budget, ctx.now) else {
            return ControlFlow::Break(reason);
        };
        let next = next.clone();
        tracing::debug!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            upstream = %next,
            "trying the next upstream: {reason}"
        );
        self.choose(next);
        self.lookup = None;
        self.state = State::Resolving;
        self.resolving_since = ctx.now;
        ControlFlow::Continue(())
    }

    /// Whether the connection moved on to another upstream whose name the worker must look
    /// up (after a failed connect: see [`Connection::resolved`]).
    pub(crate) fn needs_lookup(&self) -> bool {
        matches!(self.state, State::Resolving)
            && self.lookup.is_none()
            && matches!(self.chosen, Some(UpstreamAddr::Name { .. }))
    }

    /// Routes that accept PROXY protocol: reads the header so far and, once it is whole and
    /// consumed, takes the client's address from it and moves on to the ClientHello (SNI
    /// routes) or to resolving. `Continue` in [`Phase::AwaitingHeader`] still means: wait for
    /// more bytes.
    fn read_proxy_header(
        &mut self,
        scratch: &mut [u8],
        read_closed: bool,
        now: Instant,
    ) -> ControlFlow<CloseReason> {
        let Some(accept) = self.route.options.accept_proxy else {
            return ControlFlow::Continue(());
        };
        let header = match read_proxy_header(&self.client, accept, scratch, read_closed) {
            Ok(HeaderRead::Incomplete) => return ControlFlow::Continue(()),
            Ok(HeaderRead::Complete(header)) => header,
            Err(reason) => return ControlFlow::Break(reason),
        };
        if let Some((source, destination)) = header.addresses {
            self.via = Some(self.client_addr);
            self.client_addr = source;
            self.destination = Some(destination);
        }
        tracing::debug!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            via = self.via.map(tracing::field::display),
            proxy = %header.version,
            vpce = header.vpc_endpoint_id.as_deref(),
            "PROXY header accepted"
        );
        self.state = State::early(after_header(shape(&self.route)));
        self.resolving_since = now;
        ControlFlow::Continue(())
    }

    /// Whether a fixed route's connection may still look for the client's server name: before
    /// relaying moves the first bytes on, and only while its `closed` line would be logged (the
    /// name is for that line; `name_peeked` starts true otherwise), so a relay that does not log
    /// connections does not pay the peek's system call (measured: one `recvfrom` per connection,
    /// about 4 % of a short connection's system calls).
    fn wants_server_name(&self) -> bool {
        !self.name_peeked
            && matches!(
                self.state,
                State::Resolving | State::Connecting(_) | State::Relaying(_)
            )
    }

    /// Fixed routes: notes the server name of the client's ClientHello for the log, if the
    /// hello is all there. Called when the client is readable while the upstream is being
    /// resolved or connected (a TLS client sends its hello at once, so it is usually there
    /// before the upstream answers), and once more as relaying begins, before the first
    /// splice moves the bytes on; never waits for a hello a non-TLS client never sends. The
    /// cost: one `recv(MSG_PEEK)` per connection, rarely two.
    fn peek_server_name(&mut self, scratch: &mut [u8]) {
        // Once relaying, the next splice moves the bytes on: this look is the last.
        let last_chance = matches!(self.state, State::Relaying(_));
        match hello::peek_server_name(&self.client, scratch) {
            NamePeek::Found(name) => {
                self.server_name = Some(name);
                self.name_peeked = true;
            }
            NamePeek::NotYet if !last_chance => {}
            NamePeek::NotYet | NamePeek::Nothing => self.name_peeked = true,
        }
    }

    /// SNI routes: reads the ClientHello so far and, once it is complete, chooses the upstream.
    /// `Continue` in [`Phase::AwaitingHello`] still means: wait for more bytes.
    fn read_hello(&mut self, scratch: &mut [u8], now: Instant) -> ControlFlow<CloseReason> {
        let Upstream::Sni(table) = &self.route.upstream else {
            return ControlFlow::Continue(());
        };
        match read_hello(&self.client, table, scratch) {
            Ok(Hello::Incomplete) => ControlFlow::Continue(()),
            Ok(Hello::Routed {
                name,
                upstream,
                origin,
            }) => {
                tracing::debug!(
                    target: "spliceway::conn",
                    id = self.id,
                    route = %self.route.name,
                    client = %self.client_addr,
                    sni = %name,
                    upstream = %upstream,
                    "server name routed"
                );
                self.server_name = Some(name);
                self.origin = match upstream {
                    UpstreamAddr::Name { .. } => Some(origin),
                    UpstreamAddr::Ip(_) => None,
                };
                self.chosen = Some(upstream);
                self.state = State::Resolving;
                self.resolving_since = now;
                ControlFlow::Continue(())
            }
            Ok(Hello::Refused { name, reason }) => {
                self.server_name = Some(name);
                ControlFlow::Break(reason)
            }
            Err(reason) => ControlFlow::Break(reason),
        }
    }

    /// The upstream name is being looked up: hold the request until the answer comes.
    pub(crate) fn wait_for_lookup(&mut self, ticket: Ticket) {
        self.lookup = Some(ticket);
    }

    /// The upstream's addresses are known: start connecting.
    fn on_resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        targets: Arc<[Target]>,
    ) -> ControlFlow<CloseReason> {
        if !matches!(self.state, State::Resolving) {
            return ControlFlow::Continue(());
        }
        self.lookup = None;
        if let Some(group) = &mut self.group {
            group.attempt_started();
        }
        let token = self.tokens.upstream;
        let (who, state) = identity_and_state!(self);
        match Dial::start(targets, ctx, &who, token) {
            Ok(dial) => {
                *state = State::Connecting(dial);
                ControlFlow::Continue(())
            }
            Err(reason) => ControlFlow::Break(reason),
        }
    }

    /// The socket reported an error or hang-up: if it carries a pending error (a reset), end
    /// the connection now rather than when an operation would next trip over it. While the
    /// upstream connect is in progress its errors are the connect's, handled there.
    pub(crate) fn on_socket_error(&mut self, upstream: bool) -> ControlFlow<CloseReason> {
        let stream = if upstream {
            match &self.state {
                State::Relaying(relaying) => relaying.upstream(),
                _ => return ControlFlow::Continue(()),
            }
        } else {
            &self.client
        };
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => e,
            Ok(None) => return ControlFlow::Continue(()),
        };
        ControlFlow::Break(match (upstream, is_reset(&error), &self.state) {
            (_, true, State::Relaying(relaying)) => relaying.reset_by(!upstream),
            (false, true, _) => CloseReason::ClientReset,
            (false, false, _) => CloseReason::ClientError(error.to_string()),
            (true, true, _) => CloseReason::UpstreamReset,
            (true, false, _) => CloseReason::UpstreamError(error.to_string()),
        })
    }

    /// Readiness of the client socket (before relaying, the directions do not exist yet and
    /// start as ready when they do).
    ///
    /// An SNI client that ends its side (`read_closed`) while its upstream name is looked up
    /// has given up: a TLS handshake needs more from it. The connection ends, withdrawing its
    /// lookup, rather than holding a place in its route's queue until the connect timeout.
    /// (A client of a fixed route may half-close early on purpose: it keeps waiting.)
    ///
    /// A fixed route's client with bytes to read while its upstream is resolved or connected
    /// has its TLS server name noted for the log ([`peek_server_name`](Self::peek_server_name)).
    pub(crate) fn on_client_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> ControlFlow<CloseReason> {
        if readable && self.wants_server_name() {
            self.peek_server_name(ctx.scratch);
        }
        match &mut self.state {
            State::Relaying(relaying) => relaying.on_client_event(readable, writable, read_closed),
            State::Resolving if read_closed && matches!(self.route.upstream, Upstream::Sni(_)) => {
                return ControlFlow::Break(CloseReason::ClientLeft);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Readiness of the upstream socket. While connecting, any readiness means the connect
    /// finished (or failed); `connected` (EPOLLOUT without an error or hang-up) says it
    /// succeeded without asking the socket.
    pub(crate) fn on_upstream_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        readable: bool,
        writable: bool,
        read_closed: bool,
        connected: bool,
    ) -> ControlFlow<CloseReason> {
        let flow = match self.upstream_event(ctx, readable, writable, read_closed, connected) {
            // Every address of the chosen upstream failed: the next upstream of a group.
            ControlFlow::Break(reason) if matches!(self.state, State::Connecting(_)) => {
                self.after_dial_failed(ctx, reason)
            }
            flow => flow,
        };
        // Relaying has just begun with the client's first bytes already there: the last look
        // at them before the pump splices them on.
        if self.wants_server_name() && self.client_seen.readable {
            self.peek_server_name(ctx.scratch);
        }
        flow
    }

    fn upstream_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        readable: bool,
        writable: bool,
        read_closed: bool,
        connected: bool,
    ) -> ControlFlow<CloseReason> {
        let token = self.tokens.upstream;
        let client_seen = self.client_seen;
        let (who, state) = identity_and_state!(self);
        match state {
            State::Relaying(relaying) => {
                relaying.on_upstream_event(readable, writable, read_closed);
                ControlFlow::Continue(())
            }
            State::Connecting(dial) if readable || writable => {
                match dial.check_connected(ctx, &who, token, connected) {
                    Ok(None) => ControlFlow::Continue(()),
                    Ok(Some((stream, addr))) => {
                        if let Some(version) = who.route.options.send_proxy {
                            let destination = match self.destination {
                                Some(d) => Ok(d),
                                None => self.client.local_addr(),
                            };
                            let sent = match destination {
                                Ok(d) => write_proxy_header(&stream, version, who.client, d),
                                Err(e) => Err(CloseReason::ClientError(e.to_string())),
                            };
                            if let Err(reason) = sent {
                                let mut stream = stream;
                                let _ = ctx.registry.deregister(&mut stream);
                                return ControlFlow::Break(reason);
                            }
                        }
                        if matches!(who.route.upstream, Upstream::HttpConnect(_)) {
                            self.answered = true;
                            count(ctx.global, who.route.stats(), |s| &s.http_connect_200, 1);
                            if let Err(reason) = write_answer(&self.client, Answer::Established) {
                                let mut stream = stream;
                                let _ = ctx.registry.deregister(&mut stream);
                                return ControlFlow::Break(reason);
                            }
                        }
                        let slot = self
                            .client_slot
                            .get_or_insert_with(|| who.route.counters.limits.join(who.client.ip()));
                        let mut relaying =
                            Relaying::new(stream, addr, &who.route.options, slot, ctx.now);
                        // Start from what the events said rather than assuming both sources
                        // readable: two splices that would answer EAGAIN saved per connection.
                        // Bytes the relay already peeked at (a ClientHello, what follows a
                        // PROXY header) came with a readable event, so they count as seen.
                        relaying.start_from(
                            client_seen,
                            Seen {
                                readable,
                                closing: read_closed,
                            },
                        );
                        *state = State::Relaying(relaying);
                        self.connected(ctx, addr);
                        ControlFlow::Continue(())
                    }
                    Err(reason) => ControlFlow::Break(reason),
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// Every address of the chosen upstream failed while connecting: with several upstreams,
    /// the next one (dialled now if it is an address; a name is left for the worker, see
    /// [`Connection::needs_lookup`]).
    fn after_dial_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        reason: CloseReason,
    ) -> ControlFlow<CloseReason> {
        self.next_upstream(ctx, reason)?;
        match self.resolve_next(ctx) {
            Step::Close(reason) => ControlFlow::Break(reason),
            Step::Wait | Step::Resolve => ControlFlow::Continue(()),
        }
    }

    /// Counts and logs an established upstream connection.
    fn connected(&mut self, ctx: &mut Ctx<'_>, addr: SocketAddr) {
        if let Some(group) = &mut self.group {
            group.connected(&self.route.name);
        }
        let connect_time = ctx.now.saturating_duration_since(self.accepted_at);
        self.connect_time = Some(connect_time);
        let stats = self.route.stats();
        count(ctx.global, stats, |s| &s.upstream_connects, 1);
        count(
            ctx.global,
            stats,
            |s| &s.connect_micros_total,
            connect_time.as_micros() as u64,
        );
        ctx.global.connect_latency.observe(connect_time);
        stats.connect_latency.observe(connect_time);
        tracing::debug!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            upstream = %addr,
            connect_ms = %Millis(Some(connect_time)),
            "connected"
        );
    }

    /// Moves bytes (relaying connections only) within `budget` operations.
    pub(crate) fn pump(&mut self, ctx: &mut Ctx<'_>, budget: usize) -> Pump {
        let (who, state) = identity_and_state!(self);
        match state {
            State::Relaying(relaying) => relaying.pump(&self.client, ctx, &who, budget),
            _ => Pump::Idle,
        }
    }

    /// When the connection next needs attention without an event.
    pub(crate) fn deadline(&self) -> Instant {
        let options = &self.route.options;
        match &self.state {
            State::AwaitingProxyHeader => deadline(self.accepted_at, options.proxy_timeout),
            State::AwaitingHello => match &self.route.upstream {
                Upstream::Sni(table) => deadline(self.accepted_at, table.hello_timeout),
                _ => deadline(self.accepted_at, options.connect_timeout),
            },
            State::AwaitingRequest => match &self.route.upstream {
                Upstream::HttpConnect(table) => deadline(self.accepted_at, table.request_timeout),
                _ => deadline(self.accepted_at, options.connect_timeout),
            },
            State::Resolving => deadline(self.resolving_since, options.connect_timeout),
            State::Connecting(dial) => dial.deadline(options),
            State::Relaying(relaying) => relaying.deadline(options),
        }
    }

    /// The deadline has passed.
    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx<'_>) -> ControlFlow<CloseReason> {
        let token = self.tokens.upstream;
        let (who, state) = identity_and_state!(self);
        let options = &who.route.options;
        match state {
            State::AwaitingProxyHeader => {
                ControlFlow::Break(CloseReason::ProxyHeader(ProxyHeaderError::Timeout))
            }
            State::AwaitingHello => ControlFlow::Break(CloseReason::SniRefused(
                "no complete ClientHello in time".into(),
            )),
            State::AwaitingRequest => ControlFlow::Break(CloseReason::BadRequest(
                "no complete request in time".into(),
            )),
            State::Resolving => ControlFlow::Break(CloseReason::ResolveFailed(format!(
                "no answer within {:?}",
                options.connect_timeout
            ))),
            State::Connecting(dial) => {
                let timeout = options.connect_timeout;
                match dial.attempt_failed(ctx, &who, token, format!("timed out after {timeout:?}"))
                {
                    ControlFlow::Break(reason) => self.after_dial_failed(ctx, reason),
                    flow => flow,
                }
            }
            State::Relaying(relaying) => relaying.on_deadline(ctx.now, options),
        }
    }

    /// Closes both sockets — with a reset unless the connection completed — gives the buffers
    /// back, counts and logs the end.
    pub(crate) fn close(mut self, ctx: &mut Ctx<'_>, reason: &CloseReason) {
        let pipe_size = self.route.options.pipe_size;
        let (upstream, upstream_addr, (bytes_up, bytes_down), discarded) = match &mut self.state {
            State::Relaying(relaying) => {
                relaying.release_buffers(ctx.pool, pipe_size);
                let addr = relaying.upstream_addr();
                let bytes = relaying.bytes_written();
                let discarded = relaying.buffered() as u64;
                (Some(relaying.upstream_mut()), Some(addr), bytes, discarded)
            }
            State::Connecting(dial) => {
                let addr = dial.upstream_addr();
                (dial.pending_stream(), addr, (0, 0), 0)
            }
            State::AwaitingProxyHeader
            | State::AwaitingHello
            | State::AwaitingRequest
            | State::Resolving => (None, None, (0, 0), 0),
        };
        // An HTTP CONNECT client not yet answered hears why (400, 403, 502, 504), counted, and
        // its connection ends with FIN after the answer: the answer is the end of the exchange.
        let answer = match &self.route.upstream {
            Upstream::HttpConnect(_) if !self.answered => reason.http_answer(),
            _ => None,
        };
        if let Some(answer) = answer {
            let stats = self.route.stats();
            count(ctx.global, stats, answer_counter(answer), 1);
            if write_answer(&self.client, answer).is_ok() {
                let _ = SockRef::from(&self.client).set_linger(None);
            }
        }
        // Closing a socket removes it from epoll (its file is released: nothing else holds
        // it), so no EPOLL_CTL_DEL first: two system calls per connection. An event of these
        // sockets already in the current batch, or one from a file that a concurrent fork
        // keeps alive for a moment, carries this connection's generation in its token and is
        // dropped by the worker (`event_loop/token.rs`). A program's adopted sockets are
        // deregistered: it may hold duplicates of them, which keep the file open.
        let deregister = !self.tokens.generational || self.on_end.is_some();
        for stream in [Some(&mut self.client), upstream].into_iter().flatten() {
            // Both sockets carry SO_LINGER 0 from the start (inherited from the listener, set
            // on the upstream socket when it is created), so an abort, or the process dying,
            // closes them with a reset. Only a completed connection closes gracefully: normal
            // linger, so close() sends FIN after any bytes still queued.
            if !reason.is_abort() {
                let _ = SockRef::from(&*stream).set_linger(None);
            }
            if deregister {
                let _ = ctx.registry.deregister(stream);
            }
        }
        let stats = self.route.stats();
        if let Some(ticket) = self.lookup.take()
            && ticket.cancel()
        {
            count(ctx.global, stats, |s| &s.resolve_cancelled, 1);
        }
        count(ctx.global, stats, |s| &s.bytes_discarded, discarded);
        if let Some(counter) = reason.counter() {
            count(ctx.global, stats, counter, 1);
        }
        // Last, so that whoever sees `closed` reach n also sees every other counter of those n.
        count(ctx.global, stats, |s| &s.closed, 1);
        let duration = ctx.now.saturating_duration_since(self.accepted_at);
        // Formatted only if the line is logged: no allocation per connection otherwise.
        let upstream = OrDash(upstream_addr);
        macro_rules! closed {
            ($level:ident) => {
                // log: access log: the operator's choice (info, -v); refusals at debug.
                tracing::$level!(
                    target: "spliceway::conn",
                    id = self.id,
                    route = %self.route.name,
                    client = %self.client_addr,
                    via = self.via.map(tracing::field::display),
                    sni = self.server_name.as_deref().unwrap_or("-"),
                    upstream = %upstream,
                    target = self.client_chosen().map(tracing::field::display),
                    bytes_up,
                    bytes_down,
                    connect_ms = %Millis(self.connect_time),
                    duration_ms = %Millis(Some(duration)),
                    discarded,
                    end = %reason,
                    "closed"
                )
            };
        }
        // Refusals are summarised by the worker (rate-limited) so a scan cannot flood the log.
        if reason.is_refusal() {
            closed!(debug);
        } else {
            closed!(info);
        }
        if let Some(on_end) = self.on_end.take() {
            on_end.call(ConnectionEnd::new(
                self.id,
                reason.clone(),
                (bytes_up, bytes_down),
                duration,
            ));
        }
    }
}

/// What a listing found of a connection (no allocation: the route's name is added only for
/// the connections kept).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) phase: Phase,
    pub(crate) age: Duration,
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
    pub(crate) rate_up: f64,
    pub(crate) rate_down: f64,
    pub(crate) mode: Mode,
}

/// The counter of an HTTP CONNECT answer.
fn answer_counter(answer: Answer) -> fn(&crate::stats::Stats) -> &std::sync::atomic::AtomicU64 {
    match answer {
        Answer::Established => |s| &s.http_connect_200,
        Answer::BadRequest => |s| &s.http_connect_400,
        Answer::Forbidden => |s| &s.http_connect_403,
        Answer::BadGateway => |s| &s.http_connect_502,
        _ => |s| &s.http_connect_504,
    }
}

/// Why `peer` may not send a PROXY header on `route`, if it may not: it is not in the route's
/// `accept_proxy_from` (a route without the list believes no one; the builder refuses such a
/// route, so only a connection adopted onto one could meet this).
fn proxy_peer_refusal(route: &RouteState, peer: std::net::IpAddr) -> Option<String> {
    let not_trusted = || format!("{peer} may not send a PROXY header (not in accept_proxy_from)");
    match &route.proxy_from {
        Some(trusted) => trusted.check(peer).err().map(|_| not_trusted()),
        None => Some(not_trusted()),
    }
}
