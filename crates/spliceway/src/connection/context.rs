//! What the phases of a connection share: the loan the worker makes while it handles an event
//! ([`Ctx`]), who the connection is for logs and counters ([`Identity`]), its sockets' epoll
//! tokens, and what a pump left to do.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::address::UpstreamAddr;
use crate::end::CloseReason;
use crate::route::NameOrigin;
use crate::state::route::RouteState;
use crate::stats::Stats;
use crate::transfer::buffer::BufferPool;

/// Milliseconds with three decimals for log lines, `-` when unknown.
pub(crate) struct Millis(pub(crate) Option<Duration>);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.3}", d.as_secs_f64() * 1e3),
            None => f.write_str("-"),
        }
    }
}

/// A value for log lines, `-` when absent.
pub(crate) struct OrDash<T>(pub(crate) Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
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
    /// Where a client's first bytes are peeked into (a PROXY header, a ClientHello): one
    /// buffer per worker, not per connection.
    pub(crate) scratch: &'a mut [u8],
}

/// The epoll tokens a connection's two sockets are registered with (the worker encodes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketTokens {
    pub(crate) client: Token,
    pub(crate) upstream: Token,
    /// The tokens carry the connection's generation, so an event for them that comes after the
    /// connection is gone cannot be taken for the slot's next connection: the sockets may close
    /// without leaving epoll first.
    pub(crate) generational: bool,
}

/// Readiness seen on a socket before its direction existed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    /// A readable event came (bytes, end of stream or an error may be queued).
    pub(crate) readable: bool,
    /// The peer announced its end of stream (EPOLLRDHUP).
    pub(crate) closing: bool,
}

/// Who a connection is, for the log lines and counters of its phases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity<'a> {
    pub(crate) id: u64,
    pub(crate) route: &'a RouteState,
    pub(crate) client: SocketAddr,
    pub(crate) chosen: Option<&'a UpstreamAddr>,
    /// Where the chosen upstream's name came from (`None` for an IP literal, which is taken
    /// as given): the address policy depends on it.
    pub(crate) origin: Option<NameOrigin>,
}
