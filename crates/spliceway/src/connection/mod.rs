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
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

use crate::address::UpstreamAddr;
use crate::buffer::{Buffer, BufferPool, Degradation};
pub use crate::close_reason::CloseReason;

mod connect;
mod hello;
mod pump;
use crate::direction::Direction;
use crate::low_water::LowWater;
use crate::resolver::Target;
use crate::route::{Mode, Upstream};
use crate::state::RouteState;
use crate::stats::{Stats, count};
use crate::upstream::apply_socket_options;

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
