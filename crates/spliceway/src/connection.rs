//! One relayed connection: the client socket, the upstream socket, and the two directions
//! between them.
//!
//! A connection goes through three states: *resolving* the upstream name (off the event loop),
//! *connecting* to one resolved address after another, and *relaying*. While relaying, each
//! readiness event latches into the directions ([`Direction::source_ready`] and friends), and
//! [`Connection::pump`] performs the operations the directions ask for until both wait, with a
//! budget so that one busy connection cannot starve the others.
//!
//! How a connection ends decides how its sockets are closed: only a connection whose both
//! directions passed end of stream is closed gracefully; every other end (a reset, a failed
//! write, a timeout, a drain that ran out of time) closes *both* sockets with `SO_LINGER` 0, so
//! each peer sees a reset and never mistakes a truncated transfer for a complete one.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use crate::address::UpstreamAddr;
use crate::buffer::{Buffer, BufferPool, Degradation};
pub use crate::close_reason::CloseReason;
use crate::direction::{Direction, End, Phase};
use crate::direction_io::{StepDone, StepEnv, step_direction};
use crate::low_water::LowWater;
use crate::resolver::Target;
use crate::route::{Mode, Upstream};
use crate::sni::{self, Peek};
use crate::state::RouteState;
use crate::stats::{Stats, count};
use crate::upstream::{apply_socket_options, open_upstream};

/// Milliseconds with three decimals for log lines, `-` when unknown.
struct Millis(Option<Duration>);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.3}", d.as_secs_f64() * 1e3),
            None => f.write_str("-"),
        }
    }
}

/// What a pump left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pump {
    /// Both directions wait for readiness events.
    Idle,
    /// The budget ran out with work left: pump again soon, without waiting for an event.
    Again,
    /// The connection is finished.
    Close(CloseReason),
}

/// What the worker lends a connection while it handles an event.
pub(crate) struct Ctx<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) pool: &'a mut BufferPool,
    pub(crate) global: &'a Stats,
    pub(crate) now: Instant,
}

#[derive(Debug)]
enum State {
    /// SNI routes: waiting for the client's TLS ClientHello.
    AwaitingHello,
    Resolving,
    Connecting {
        targets: Arc<[Target]>,
        first: usize,
        tried: usize,
        attempt_started: Instant,
        last_error: Option<CloseReason>,
    },
    Relaying,
}

/// Which of the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// client -> upstream
    Up,
    /// upstream -> client
    Down,
}

/// The tokens of a connection's two sockets.
pub(crate) fn client_token(key: usize) -> Token {
    Token(key * 2)
}

pub(crate) fn upstream_token(key: usize) -> Token {
    Token(key * 2 + 1)
}

/// A relayed connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) route: Arc<RouteState>,
    client: TcpStream,
    client_addr: SocketAddr,
    upstream: Option<TcpStream>,
    upstream_addr: Option<SocketAddr>,
    /// The upstream chosen for this connection (fixed, or from the SNI table).
    chosen: Option<UpstreamAddr>,
    /// The server name the client asked for (SNI routes).
    server_name: Option<String>,
    state: State,
    up: Direction,
    down: Direction,
    up_buffer: Option<Buffer>,
    down_buffer: Option<Buffer>,
    splice: bool,
    spliced_any: bool,
    accepted_at: Instant,
    connect_time: Option<Duration>,
    last_activity: Instant,
    half_closed_at: Option<Instant>,
    last_error_up: Option<io::Error>,
    last_error_down: Option<io::Error>,
    /// Bulk low-water state of the up and down directions' sources.
    low_water: [LowWater; 2],
    /// The deadline entry that is current in the worker's queue.
    pub(crate) timer_at: Option<Instant>,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        route: Arc<RouteState>,
        client: TcpStream,
        client_addr: SocketAddr,
        now: Instant,
    ) -> Self {
        let options = &route.options;
        let splice = options.mode == Mode::Splice;
        let capacity = if splice {
            options.pipe_size
        } else {
            options.copy_buffer_size
        };
        Connection {
            id,
            client,
            client_addr,
            upstream: None,
            upstream_addr: None,
            chosen: match &route.upstream {
                Upstream::Fixed(addr) => Some(addr.clone()),
                Upstream::Sni(_) => None,
            },
            server_name: None,
            state: match &route.upstream {
                Upstream::Fixed(_) => State::Resolving,
                Upstream::Sni(_) => State::AwaitingHello,
            },
            up: Direction::new(capacity),
            down: Direction::new(capacity),
            up_buffer: None,
            down_buffer: None,
            splice,
            spliced_any: false,
            accepted_at: now,
            connect_time: None,
            last_activity: now,
            half_closed_at: None,
            last_error_up: None,
            last_error_down: None,
            low_water: Default::default(),
            timer_at: None,
            route,
        }
    }

    /// Sets the client socket's options and registers it.
    pub(crate) fn register_client(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        apply_socket_options(&self.client, &self.route.options)?;
        registry.register(
            &mut self.client,
            client_token(key),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub(crate) fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The upstream chosen (after SNI routing for SNI routes).
    pub(crate) fn chosen_upstream(&self) -> Option<&UpstreamAddr> {
        self.chosen.as_ref()
    }

    pub(crate) fn awaiting_hello(&self) -> bool {
        matches!(self.state, State::AwaitingHello)
    }

    /// Looks at the client's first bytes without consuming them (`MSG_PEEK`) and, once the
    /// whole ClientHello is there, chooses the upstream from its server name. `Continue` with
    /// `awaiting_hello()` still true means: wait for more bytes.
    pub(crate) fn read_hello(&mut self, scratch: &mut [u8]) -> ControlFlow<CloseReason> {
        let Upstream::Sni(table) = &self.route.upstream else {
            return ControlFlow::Continue(());
        };
        let n = match self.client.peek(scratch) {
            Ok(0) => {
                return ControlFlow::Break(CloseReason::SniRefused(
                    "the client closed before sending a ClientHello".into(),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ControlFlow::Continue(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return ControlFlow::Continue(()),
            Err(e) => {
                return ControlFlow::Break(if crate::direction_io::is_reset(&e) {
                    CloseReason::ClientReset
                } else {
                    CloseReason::ClientError(e.to_string())
                });
            }
        };
        let hello = match sni::parse_client_hello(&scratch[..n]) {
            Ok(Peek::Complete(hello)) => hello,
            Ok(Peek::Incomplete { .. }) if n < scratch.len() => return ControlFlow::Continue(()),
            Ok(Peek::Incomplete { .. }) => {
                return ControlFlow::Break(CloseReason::SniRefused(
                    "ClientHello larger than the peek buffer".into(),
                ));
            }
            Err(e) => return ControlFlow::Break(CloseReason::SniRefused(e.to_string())),
        };
        let Some(name) = hello.server_name else {
            return ControlFlow::Break(CloseReason::SniRefused("no server name (SNI)".into()));
        };
        let listen_port = self.client.local_addr().map(|a| a.port()).unwrap_or(0);
        match table.choose(&name, listen_port) {
            Some(upstream) => {
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
                self.chosen = Some(upstream);
                self.state = State::Resolving;
                ControlFlow::Continue(())
            }
            None => ControlFlow::Break(CloseReason::SniRefused(format!(
                "server name {name:?} is not allowed"
            ))),
        }
    }

    pub(crate) fn is_relaying(&self) -> bool {
        matches!(self.state, State::Relaying)
    }

    /// The socket reported an error or hang-up: if it carries a pending error (a reset), end
    /// the connection now rather than when an operation would next trip over it. While the
    /// upstream connect is in progress its errors are the connect's, handled there.
    pub(crate) fn on_socket_error(&mut self, upstream: bool) -> ControlFlow<CloseReason> {
        let stream = if upstream {
            if !self.is_relaying() {
                return ControlFlow::Continue(());
            }
            self.upstream.as_ref()
        } else {
            Some(&self.client)
        };
        let error = match stream.map(|s| s.take_error()) {
            Some(Ok(Some(e)) | Err(e)) => e,
            _ => return ControlFlow::Continue(()),
        };
        let reset = crate::direction_io::is_reset(&error);
        ControlFlow::Break(match (upstream, reset) {
            (false, true) => CloseReason::ClientReset,
            (false, false) => CloseReason::ClientError(error.to_string()),
            (true, true) => CloseReason::UpstreamReset,
            (true, false) => CloseReason::UpstreamError(error.to_string()),
        })
    }

    /// Readiness of the client socket.
    pub(crate) fn on_client_event(&mut self, readable: bool, writable: bool) {
        if readable {
            self.up.source_ready();
        }
        if writable {
            self.down.destination_ready();
        }
    }

    /// Readiness of the upstream socket. While connecting, writability means the connect
    /// finished (or failed).
    pub(crate) fn on_upstream_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
        readable: bool,
        writable: bool,
    ) -> ControlFlow<CloseReason> {
        if let State::Connecting { .. } = self.state {
            if !(writable || readable) {
                return ControlFlow::Continue(());
            }
            return self.check_connected(ctx, key);
        }
        if readable {
            self.down.source_ready();
        }
        if writable {
            self.up.destination_ready();
        }
        ControlFlow::Continue(())
    }

    /// The upstream's addresses are known: start connecting.
    pub(crate) fn on_resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
        targets: Arc<[Target]>,
    ) -> ControlFlow<CloseReason> {
        if !matches!(self.state, State::Resolving) {
            return ControlFlow::Continue(());
        }
        let first = self.route.next_target.fetch_add(1, Ordering::Relaxed) % targets.len().max(1);
        self.state = State::Connecting {
            targets,
            first,
            tried: 0,
            attempt_started: ctx.now,
            last_error: None,
        };
        self.connect_next(ctx, key)
    }

    /// Opens a connection to the next untried address.
    fn connect_next(&mut self, ctx: &mut Ctx<'_>, key: usize) -> ControlFlow<CloseReason> {
        let max_attempts = self.route.options.connect_attempts;
        loop {
            let State::Connecting {
                targets,
                first,
                tried,
                attempt_started,
                last_error,
            } = &mut self.state
            else {
                return ControlFlow::Continue(());
            };
            if *tried >= max_attempts.min(targets.len()) {
                let reason = last_error
                    .take()
                    .unwrap_or_else(|| CloseReason::ConnectFailed("no address".into()));
                return ControlFlow::Break(reason);
            }
            let target = targets[(*first + *tried) % targets.len()];
            *tried += 1;
            if let Some(listen) = self.route.loops_back(&target) {
                count(ctx.global, self.route.stats(), |s| &s.self_loops, 1);
                tracing::warn!(
                    target: "spliceway::conn",
                    route = %self.route.name,
                    client = %self.client_addr,
                    upstream = %target.addr,
                    "refusing to connect: upstream {} resolves to {}, this relay's own listener {listen}; \
                     the relay host must resolve the upstream name to the real service (check /etc/hosts)",
                    self.chosen.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                    target.addr,
                );
                *last_error = Some(CloseReason::SelfLoop(target.addr));
                continue;
            }
            match open_upstream(target.addr, &self.route.options) {
                Ok(mut stream) => {
                    if let Err(e) = ctx.registry.register(
                        &mut stream,
                        upstream_token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        *last_error = Some(CloseReason::ConnectFailed(e.to_string()));
                        continue;
                    }
                    *attempt_started = ctx.now;
                    tracing::debug!(
                        target: "spliceway::conn",
                        id = self.id,
                        route = %self.route.name,
                        client = %self.client_addr,
                        upstream = %target.addr,
                        "connecting"
                    );
                    self.upstream = Some(stream);
                    self.upstream_addr = Some(target.addr);
                    return ControlFlow::Continue(());
                }
                Err(e) => {
                    count(
                        ctx.global,
                        self.route.stats(),
                        |s| &s.upstream_connect_failures,
                        1,
                    );
                    tracing::debug!(target: "spliceway::conn", upstream = %target.addr, "connect failed: {e}");
                    *last_error = Some(CloseReason::ConnectFailed(format!("{}: {e}", target.addr)));
                }
            }
        }
    }

    /// Abandons the current attempt (failed or timed out) and tries the next address.
    fn attempt_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
        error: String,
    ) -> ControlFlow<CloseReason> {
        count(
            ctx.global,
            self.route.stats(),
            |s| &s.upstream_connect_failures,
            1,
        );
        let addr = self.upstream_addr.take();
        if let Some(mut stream) = self.upstream.take() {
            let _ = ctx.registry.deregister(&mut stream);
        }
        let message = match addr {
            Some(addr) => format!("{addr}: {error}"),
            None => error,
        };
        tracing::debug!(target: "spliceway::conn", id = self.id, "upstream connect failed: {message}");
        if let State::Connecting { last_error, .. } = &mut self.state {
            *last_error = Some(CloseReason::ConnectFailed(message));
        }
        self.connect_next(ctx, key)
    }

    fn check_connected(&mut self, ctx: &mut Ctx<'_>, key: usize) -> ControlFlow<CloseReason> {
        let Some(stream) = &self.upstream else {
            return ControlFlow::Continue(());
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return self.attempt_failed(ctx, key, e.to_string()),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                return ControlFlow::Continue(());
            }
            Err(e) => return self.attempt_failed(ctx, key, e.to_string()),
        }
        let connect_time = ctx.now.saturating_duration_since(self.accepted_at);
        self.connect_time = Some(connect_time);
        self.state = State::Relaying;
        self.last_activity = ctx.now;
        count(ctx.global, self.route.stats(), |s| &s.upstream_connects, 1);
        count(
            ctx.global,
            self.route.stats(),
            |s| &s.connect_micros_total,
            connect_time.as_micros() as u64,
        );
        ctx.global.connect_latency.observe(connect_time);
        self.route.stats().connect_latency.observe(connect_time);
        tracing::debug!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            upstream = %self.upstream_addr.map(|a| a.to_string()).unwrap_or_default(),
            connect_ms = %Millis(Some(connect_time)),
            "connected"
        );
        ControlFlow::Continue(())
    }

    /// When the connection next needs attention without an event.
    pub(crate) fn deadline(&self) -> Instant {
        let options = &self.route.options;
        match &self.state {
            State::AwaitingHello => match &self.route.upstream {
                Upstream::Sni(table) => self.accepted_at + table.hello_timeout,
                Upstream::Fixed(_) => self.accepted_at + options.connect_timeout,
            },
            State::Resolving => self.accepted_at + options.connect_timeout,
            State::Connecting {
                attempt_started, ..
            } => *attempt_started + options.connect_timeout,
            State::Relaying => {
                let idle = self.last_activity + options.idle_timeout;
                let timeout = match self.half_closed_at {
                    Some(at) => idle.min(at.max(self.last_activity) + options.half_close_timeout),
                    None => idle,
                };
                self.low_water
                    .iter()
                    .filter_map(|lw| lw.flush_at)
                    .fold(timeout, Instant::min)
            }
        }
    }

    /// The deadline has passed.
    pub(crate) fn on_deadline(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
    ) -> ControlFlow<CloseReason> {
        let options = &self.route.options;
        match &self.state {
            State::AwaitingHello => ControlFlow::Break(CloseReason::SniRefused(
                "no complete ClientHello in time".into(),
            )),
            State::Resolving => ControlFlow::Break(CloseReason::ResolveFailed(format!(
                "no answer within {:?}",
                options.connect_timeout
            ))),
            State::Connecting { .. } => {
                let timeout = options.connect_timeout;
                self.attempt_failed(ctx, key, format!("timed out after {timeout:?}"))
            }
            State::Relaying => {
                if self.low_water[0].start_flush(ctx.now) {
                    self.up.source_ready();
                }
                if self.low_water[1].start_flush(ctx.now) {
                    self.down.source_ready();
                }
                if let Some(at) = self.half_closed_at
                    && ctx.now >= at.max(self.last_activity) + options.half_close_timeout
                {
                    return ControlFlow::Break(CloseReason::HalfCloseTimeout);
                }
                if ctx.now >= self.last_activity + options.idle_timeout {
                    return ControlFlow::Break(CloseReason::IdleTimeout);
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// Moves bytes until both directions wait, the connection ends, or `budget` operations
    /// have been spent.
    pub(crate) fn pump(&mut self, ctx: &mut Ctx<'_>, mut budget: usize) -> Pump {
        if !self.is_relaying() {
            return Pump::Idle;
        }
        let before = (self.up.bytes_written(), self.down.bytes_written());
        let read_before = (self.up.bytes_read(), self.down.bytes_read());
        let mut by_splice = 0u64;
        let mut by_copy = 0u64;
        let result = 'pump: loop {
            if budget == 0 {
                break Pump::Again;
            }
            let mut progressed = false;
            for way in [Way::Up, Way::Down] {
                match self.step(ctx, way) {
                    StepDone::Nothing => {}
                    StepDone::Op { written, spliced } => {
                        progressed = true;
                        budget = budget.saturating_sub(1);
                        if spliced {
                            by_splice += written;
                        } else {
                            by_copy += written;
                        }
                    }
                    StepDone::SpliceUnsupported(error) => {
                        if let ControlFlow::Break(reason) = self.fall_back_to_copy(ctx, &error) {
                            break 'pump Pump::Close(reason);
                        }
                        progressed = true;
                    }
                }
            }
            if let Some(reason) = self.finished() {
                break Pump::Close(reason);
            }
            if !progressed {
                break Pump::Idle;
            }
        };
        if let Some(upstream) = &self.upstream {
            self.low_water[0].finish_flush(&self.client, self.up.bytes_read() != read_before.0);
            self.low_water[1].finish_flush(upstream, self.down.bytes_read() != read_before.1);
        }
        let up = self.up.bytes_written() - before.0;
        let down = self.down.bytes_written() - before.1;
        if up + down > 0 {
            self.last_activity = ctx.now;
            let stats = self.route.stats();
            count(ctx.global, stats, |s| &s.bytes_client_to_upstream, up);
            count(ctx.global, stats, |s| &s.bytes_upstream_to_client, down);
            count(ctx.global, stats, |s| &s.bytes_spliced, by_splice);
            count(ctx.global, stats, |s| &s.bytes_copied, by_copy);
        }
        if self.half_closed_at.is_none() && (self.up.is_finished() != self.down.is_finished()) {
            self.half_closed_at = Some(ctx.now);
        }
        result
    }

    /// Performs the operation one direction wants next.
    fn step(&mut self, ctx: &mut Ctx<'_>, way: Way) -> StepDone {
        let Some(upstream) = self.upstream.as_ref() else {
            return StepDone::Nothing;
        };
        let (direction, slot, source, destination, error, low_water) = match way {
            Way::Up => (
                &mut self.up,
                &mut self.up_buffer,
                &self.client,
                upstream,
                &mut self.last_error_up,
                &mut self.low_water[0],
            ),
            Way::Down => (
                &mut self.down,
                &mut self.down_buffer,
                upstream,
                &self.client,
                &mut self.last_error_down,
                &mut self.low_water[1],
            ),
        };
        let options = &self.route.options;
        let mut env = StepEnv {
            pool: ctx.pool,
            splice: self.splice,
            pipe_size: options.pipe_size,
            copy_size: options.copy_buffer_size,
            spliced_any: &mut self.spliced_any,
            degraded: None,
            error,
            low_water,
            low_water_mark: options.bulk_low_water,
            now: ctx.now,
        };
        let done = step_direction(direction, slot, source, destination, &mut env);
        if let Some((kind, why)) = env.degraded {
            count(ctx.global, self.route.stats(), |s| &s.pipe_degradations, 1);
            if ctx.pool.should_log_degradation(ctx.now) {
                let what = match kind {
                    Degradation::SmallerPipe => "smaller pipe",
                    Degradation::CopyBuffer => "copy buffer instead of a pipe",
                };
                tracing::warn!(
                    route = %self.route.name,
                    "{what}: {why} (logged once a minute; see the pipe_degradations counter)"
                );
            }
        }
        done
    }

    /// Splice was refused before any byte of this connection entered a pipe: copy instead, or
    /// end the connection if the route requires splice. Never silent.
    fn fall_back_to_copy(
        &mut self,
        ctx: &mut Ctx<'_>,
        error: &io::Error,
    ) -> ControlFlow<CloseReason> {
        if self.route.options.require_splice {
            tracing::error!(
                target: "spliceway::conn",
                id = self.id,
                route = %self.route.name,
                "splice unsupported for this connection ({error}) and splice is required: resetting it"
            );
            return ControlFlow::Break(CloseReason::SpliceUnsupported(error.to_string()));
        }
        self.splice = false;
        let pipe_size = self.route.options.pipe_size;
        for slot in [&mut self.up_buffer, &mut self.down_buffer] {
            if let Some(buffer) = slot.take() {
                ctx.pool.release(buffer, pipe_size);
            }
        }
        count(ctx.global, self.route.stats(), |s| &s.splice_fallbacks, 1);
        tracing::warn!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            "splice unsupported for this connection ({error}): falling back to copy mode"
        );
        ControlFlow::Continue(())
    }

    /// How the connection ended, if it has.
    fn finished(&self) -> Option<CloseReason> {
        for (direction, way, error) in [
            (&self.up, Way::Up, &self.last_error_up),
            (&self.down, Way::Down, &self.last_error_down),
        ] {
            if let Some(abort) = direction.abort_reason() {
                let client_side = matches!(
                    (way, abort.end),
                    (Way::Up, End::Source) | (Way::Down, End::Destination)
                );
                let message = error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "failed".to_string());
                return Some(match (client_side, abort.reset) {
                    (true, true) => CloseReason::ClientReset,
                    (true, false) => CloseReason::ClientError(message),
                    (false, true) => CloseReason::UpstreamReset,
                    (false, false) => CloseReason::UpstreamError(message),
                });
            }
        }
        if self.up.phase() == Phase::Shut && self.down.phase() == Phase::Shut {
            return Some(CloseReason::Completed);
        }
        None
    }

    /// Closes both sockets — with a reset unless the connection completed — gives the buffers
    /// back, counts and logs the end.
    pub(crate) fn close(mut self, ctx: &mut Ctx<'_>, reason: &CloseReason) {
        let abort = reason.is_abort();
        let sockets = [Some(&mut self.client), self.upstream.as_mut()];
        for stream in sockets.into_iter().flatten() {
            if abort {
                // SO_LINGER 0: close() sends RST and drops unsent bytes, so the peer sees an
                // abort, not an end of stream.
                let _ = SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
            }
            let _ = ctx.registry.deregister(stream);
        }
        let discarded = (self.up.buffered() + self.down.buffered()) as u64;
        let pipe_size = self.route.options.pipe_size;
        for slot in [&mut self.up_buffer, &mut self.down_buffer] {
            if let Some(buffer) = slot.take() {
                ctx.pool.release(buffer, pipe_size);
            }
        }
        let stats = self.route.stats();
        count(ctx.global, stats, |s| &s.bytes_discarded, discarded);
        let counter: Option<fn(&Stats) -> &std::sync::atomic::AtomicU64> = match reason {
            CloseReason::Completed => Some(|s| &s.completed),
            CloseReason::ClientReset | CloseReason::ClientError(_) => Some(|s| &s.client_resets),
            CloseReason::UpstreamReset | CloseReason::UpstreamError(_) => {
                Some(|s| &s.upstream_resets)
            }
            CloseReason::IdleTimeout => Some(|s| &s.idle_timeouts),
            CloseReason::HalfCloseTimeout => Some(|s| &s.half_close_timeouts),
            CloseReason::ConnectFailed(_)
            | CloseReason::ResolveFailed(_)
            | CloseReason::SelfLoop(_) => Some(|s| &s.upstream_unavailable),
            CloseReason::Denied(_) => Some(|s| &s.denied),
            CloseReason::SniRefused(_) => Some(|s| &s.sni_refused),
            CloseReason::Shutdown => Some(|s| &s.drain_resets),
            CloseReason::SpliceUnsupported(_) => None,
        };
        if let Some(counter) = counter {
            count(ctx.global, stats, counter, 1);
        }
        // Last, so that whoever sees `closed` reach n also sees every other counter of those n.
        count(ctx.global, stats, |s| &s.closed, 1);
        let duration = ctx.now.saturating_duration_since(self.accepted_at);
        let upstream = self
            .upstream_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".to_string());
        let refused = matches!(reason, CloseReason::Denied(_) | CloseReason::SniRefused(_));
        macro_rules! closed {
            ($level:ident) => {
                tracing::$level!(
                    target: "spliceway::conn",
                    id = self.id,
                    route = %self.route.name,
                    client = %self.client_addr,
                    sni = self.server_name.as_deref().unwrap_or("-"),
                    upstream = %upstream,
                    bytes_up = self.up.bytes_written(),
                    bytes_down = self.down.bytes_written(),
                    connect_ms = %Millis(self.connect_time),
                    duration_ms = %Millis(Some(duration)),
                    discarded,
                    end = %reason,
                    "closed"
                )
            };
        }
        // Refusals are summarised by the worker (rate-limited) so a scan cannot flood the log.
        if refused {
            closed!(debug);
        } else {
            closed!(info);
        }
    }
}
