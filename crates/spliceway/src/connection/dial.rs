//! Connecting to the upstream: one resolved address after another (the order and the self-loop
//! check are [`ConnectAttempts`]'), each a non-blocking connect bounded by the connect timeout.
//! An address that is any of the relay's listeners (of any route) is refused: two routes that
//! relay to each other would otherwise grow one client connection into a chain of hundreds.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::attempts::{ConnectAttempts, NextAttempt};
use super::context::{Ctx, Identity};
use crate::clock::deadline;
use crate::end::CloseReason;
use crate::resolver::Target;
use crate::route::ConnectionOptions;
use crate::route::Source;
use crate::socket_options::open_upstream;
use crate::stats::count;

/// The connecting phase of a connection.
#[derive(Debug)]
pub(crate) struct Dial {
    attempts: ConnectAttempts,
    /// The connect in progress, and where to.
    pending: Option<(TcpStream, SocketAddr)>,
    attempt_started: Instant,
}

impl Dial {
    /// Starts connecting to `targets` (rotating over them with the route's counter).
    pub(crate) fn start(
        targets: Arc<[Target]>,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        token: Token,
    ) -> Result<Dial, CloseReason> {
        let route = who.route;
        let rotation = route.next_target.fetch_add(1, Ordering::Relaxed);
        let mut dial = Dial {
            attempts: ConnectAttempts::new(targets, rotation, route.options.connect_attempts),
            pending: None,
            attempt_started: ctx.now,
        };
        match dial.connect_next(ctx, who, token) {
            ControlFlow::Continue(()) => Ok(dial),
            ControlFlow::Break(reason) => Err(reason),
        }
    }

    /// When the attempt in progress times out.
    pub(crate) fn deadline(&self, options: &ConnectionOptions) -> Instant {
        deadline(self.attempt_started, options.connect_timeout)
    }

    /// The address of the attempt in progress.
    pub(crate) fn upstream_addr(&self) -> Option<SocketAddr> {
        self.pending.as_ref().map(|(_, addr)| *addr)
    }

    /// The socket of the attempt in progress (to close it with the connection).
    pub(crate) fn pending_stream(&mut self) -> Option<&mut TcpStream> {
        self.pending.as_mut().map(|(stream, _)| stream)
    }

    /// Opens a connection to the next untried address.
    fn connect_next(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        token: Token,
    ) -> ControlFlow<CloseReason> {
        let route = who.route;
        loop {
            let policy = who.origin.map(|origin| (&route.address_policy, origin));
            let addr = match self.attempts.next(&route.relay_listeners, policy) {
                NextAttempt::Exhausted(reason) => return ControlFlow::Break(reason),
                NextAttempt::Refused { upstream, reason } => {
                    count(
                        ctx.global,
                        route.stats(),
                        |s| &s.upstream_refused_address_policy,
                        1,
                    );
                    // log: rate limited (UPSTREAM_REFUSAL_LOG_PERIOD per route): SNI names are the client's.
                    if let Some(held_back) = route.counters.admit_upstream_refusal_log(ctx.now) {
                        tracing::warn!(
                            target: "spliceway::conn",
                            id = who.id,
                            route = %route.name,
                            client = %who.client,
                            upstream = %upstream,
                            held_back,
                            "refusing to connect: {} resolved to {upstream}, which is {reason} \
                             (the address policy; a route admits ranges with upstream_allow; \
                             at most one such line a second per route, held_back = refusals \
                             since the last line; see spliceway_upstream_refused_total)",
                            who.chosen.map(|c| c.to_string()).unwrap_or_default(),
                        );
                    }
                    continue;
                }
                NextAttempt::SelfLoop { upstream, listen } => {
                    count(ctx.global, route.stats(), |s| &s.self_loops, 1);
                    // log: rate limited (UPSTREAM_REFUSAL_LOG_PERIOD per route): SNI names are the client's.
                    if let Some(held_back) = route.counters.admit_upstream_refusal_log(ctx.now) {
                        tracing::warn!(
                            target: "spliceway::conn",
                            route = %route.name,
                            client = %who.client,
                            upstream = %upstream,
                            held_back,
                            "refusing to connect: upstream {} resolves to {upstream}, this relay's own listener {listen}; \
                             the relay host must resolve the upstream name to the real service (check /etc/hosts; \
                             at most one such line a second per route, held_back = refusals since the last line; \
                             see spliceway_connections_self_loop_total)",
                            who.chosen.map(|c| c.to_string()).unwrap_or_default(),
                        );
                    }
                    continue;
                }
                NextAttempt::Connect(addr) => addr,
            };
            // The client's address (or a fixed one) as the source, when the route says so.
            let client = (route.options.source != Source::Auto).then_some(who.client);
            match open_upstream(addr, &route.options, client) {
                Ok(mut stream) => {
                    if let Err(e) = ctx.registry.register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.attempts
                            .failed(CloseReason::ConnectFailed(e.to_string()));
                        continue;
                    }
                    self.attempt_started = ctx.now;
                    tracing::debug!(
                        target: "spliceway::conn",
                        id = who.id,
                        route = %route.name,
                        client = %who.client,
                        upstream = %addr,
                        "connecting"
                    );
                    self.pending = Some((stream, addr));
                    return ControlFlow::Continue(());
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // No other address would do better: this host is out of descriptors.
                    return ControlFlow::Break(CloseReason::OutOfDescriptors(format!(
                        "cannot open a socket to {addr}: {e}"
                    )));
                }
                Err(e) => {
                    count(
                        ctx.global,
                        route.stats(),
                        |s| &s.upstream_connect_failures,
                        1,
                    );
                    tracing::debug!(target: "spliceway::conn", upstream = %addr, "connect failed: {e}");
                    self.attempts
                        .failed(CloseReason::ConnectFailed(format!("{addr}: {e}")));
                }
            }
        }
    }

    /// Abandons the current attempt (failed or timed out) and tries the next address.
    pub(crate) fn attempt_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        token: Token,
        error: String,
    ) -> ControlFlow<CloseReason> {
        count(
            ctx.global,
            who.route.stats(),
            |s| &s.upstream_connect_failures,
            1,
        );
        let message = match self.pending.take() {
            Some((mut stream, addr)) => {
                let _ = ctx.registry.deregister(&mut stream);
                format!("{addr}: {error}")
            }
            None => error,
        };
        tracing::debug!(target: "spliceway::conn", id = who.id, "upstream connect failed: {message}");
        self.attempts.failed(CloseReason::ConnectFailed(message));
        self.connect_next(ctx, who, token)
    }

    /// The upstream socket signalled: `Ok(Some(..))` once connected, `Ok(None)` while the
    /// connect is still in progress (or a later attempt started), `Err` when every attempt
    /// failed. `connected`: the event was EPOLLOUT without EPOLLERR or EPOLLHUP, which for a
    /// connecting socket means the handshake completed (`tcp_poll` reports nothing in
    /// SYN-SENT), so `SO_ERROR` and `getpeername` are only asked otherwise. The event is this
    /// attempt's: a failed attempt's socket is deregistered before it closes, and a token of
    /// another connection carries another generation.
    pub(crate) fn check_connected(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        token: Token,
        connected: bool,
    ) -> Result<Option<(TcpStream, SocketAddr)>, CloseReason> {
        let Some((stream, _)) = &self.pending else {
            return Ok(None);
        };
        if connected {
            return Ok(self.pending.take());
        }
        let failure = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.to_string()),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
                Err(e) => Some(e.to_string()),
            },
        };
        match failure {
            Some(error) => match self.attempt_failed(ctx, who, token, error) {
                ControlFlow::Continue(()) => Ok(None),
                ControlFlow::Break(reason) => Err(reason),
            },
            None => Ok(self.pending.take()),
        }
    }
}
