//! What a relay does: routes (listen addresses, an upstream) and the options of their connections.

use std::net::SocketAddr;
use std::time::Duration;

use crate::address::UpstreamAddr;

/// Default pipe size per direction. Chosen by measurement (`cargo bench -p spliceway-benches`,
/// see `docs/benchmarks.md`): 256 KiB moved a 512 MiB loopback upload with the least relay CPU per
/// GiB; larger pipes gained nothing and cost more memory per busy connection.
pub const DEFAULT_PIPE_SIZE_BYTES: usize = 256 * 1024;
/// Default user-space buffer per direction in copy mode.
pub const DEFAULT_COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Default time allowed to resolve the upstream and establish the TCP connection to it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent in both directions before it is reset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time one direction may stay silent after the other has ended.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of upstream addresses tried before the client is closed.
pub const DEFAULT_CONNECT_ATTEMPTS: usize = 3;

/// How bytes are moved between the two sockets of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Kernel to kernel with splice(2) through a pipe per direction (the default).
    #[default]
    Splice,
    /// Through a user-space buffer with `recv`/`send`: what copying relays (stone, socat) do.
    Copy,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Splice => "splice",
            Mode::Copy => "copy",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "splice" => Ok(Mode::Splice),
            "copy" => Ok(Mode::Copy),
            other => Err(format!("unknown mode {other:?} (expected splice or copy)")),
        }
    }
}

/// Options of every connection of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Splice (default) or copy.
    pub mode: Mode,
    /// Requested pipe size per direction in splice mode, in bytes (rounded up by the kernel to a
    /// power-of-two number of pages).
    pub pipe_size: usize,
    /// User-space buffer per direction in copy mode, in bytes.
    pub copy_buffer_size: usize,
    /// If splice turns out to be unsupported for a connection's sockets, reset the connection
    /// instead of falling back to copying.
    pub require_splice: bool,
    /// Time allowed to resolve the upstream and connect to it (per address tried).
    pub connect_timeout: Duration,
    /// Upstream addresses tried (in turn, starting from a rotating one) before giving up.
    pub connect_attempts: usize,
    /// A connection with no byte moving in either direction for this long is reset.
    pub idle_timeout: Duration,
    /// After one direction has ended, the other may stay silent this long before the
    /// connection is reset.
    pub half_close_timeout: Duration,
    /// `TCP_NODELAY` on both sockets (default on: a relay must not add Nagle delays).
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets (off by default).
    pub keepalive: Option<Duration>,
    /// How long resolved upstream addresses are reused before resolving again.
    pub resolve_cache_ttl: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            mode: Mode::Splice,
            pipe_size: DEFAULT_PIPE_SIZE_BYTES,
            copy_buffer_size: DEFAULT_COPY_BUFFER_BYTES,
            require_splice: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            half_close_timeout: DEFAULT_HALF_CLOSE_TIMEOUT,
            nodelay: true,
            keepalive: None,
            resolve_cache_ttl: Duration::from_secs(10),
        }
    }
}

impl ConnectionOptions {
    pub(crate) fn validate(&self, route: &str) -> Result<(), String> {
        let fail = |what: &str| Err(format!("route {route:?}: {what}"));
        if self.pipe_size == 0 || self.pipe_size > (1 << 30) {
            return fail("pipe size must be between 1 byte and 1 GiB");
        }
        if self.copy_buffer_size == 0 || self.copy_buffer_size > (1 << 30) {
            return fail("copy buffer size must be between 1 byte and 1 GiB");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect timeout must be more than zero");
        }
        if self.idle_timeout.is_zero() {
            return fail("idle timeout must be more than zero");
        }
        if self.half_close_timeout.is_zero() {
            return fail("half-close timeout must be more than zero");
        }
        if self.connect_attempts == 0 {
            return fail("connect attempts must be at least 1");
        }
        Ok(())
    }
}

/// A route: where to listen, where to relay to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) upstream: UpstreamAddr,
    pub(crate) options: ConnectionOptions,
    pub(crate) max_connections: Option<usize>,
}

impl Route {
    /// A route named `name` relaying to `upstream`; add listen addresses with
    /// [`Route::listen`].
    pub fn new(name: impl Into<String>, upstream: UpstreamAddr) -> Self {
        Route {
            name: name.into(),
            listen: Vec::new(),
            upstream,
            options: ConnectionOptions::default(),
            max_connections: None,
        }
    }

    /// Adds a listen address (port 0 picks a free port; see
    /// [`Relay::local_addrs`](crate::Relay::local_addrs)).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Replaces the connection options.
    pub fn options(mut self, options: ConnectionOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the mode (splice or copy).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Sets the pipe size per direction, in bytes.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.options.pipe_size = bytes;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.idle_timeout = timeout;
        self
    }

    /// Sets the half-close timeout.
    pub fn half_close_timeout(mut self, timeout: Duration) -> Self {
        self.options.half_close_timeout = timeout;
        self
    }

    /// Limits the connections this route holds at once; at the limit it stops accepting and
    /// new clients wait in the kernel's backlog.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured listen addresses.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The upstream.
    pub fn upstream(&self) -> &UpstreamAddr {
        &self.upstream
    }

    /// The connection options.
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.options
    }
}
