//! Options of a route's connections, and their defaults (each chosen by measurement where it
//! says so). A description only: nothing here opens a socket; the relay checks what needs the
//! kernel (the congestion control) when it builds or reloads.

use std::time::Duration;

use super::rate_limit::{ConnectionLimitBy, RateLimit};
use crate::error::{KeepaliveError, ModeError, OptionsError, SourceError};

/// Default pipe size per direction. Chosen by measurement (`cargo bench -p spliceway-microbench
/// --bench engine` and `spliceway bench --peer`, see `docs/benchmark-results.md`): 512 KiB cost
/// 15-20% less relay CPU per GiB than 256 KiB, and 1 MiB no less than 512 KiB; 512 KiB also
/// leaves room for 128 busy pipes under the kernel's default per-user pipe allowance
/// (`pipe-user-pages-soft`, 64 MiB) when the relay does not run as root.
pub const DEFAULT_PIPE_SIZE_BYTES: usize = 512 * 1024;
/// Default user-space buffer per direction in copy mode.
pub const DEFAULT_COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Default time allowed to resolve the upstream and establish the TCP connection to it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent in both directions before it is reset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time one direction may stay silent after the other has ended.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default low-water mark for bulk transfers (see `ConnectionOptions::bulk_low_water`): off.
/// Measured on shaped veth links it saved no CPU (data already arrives in bursts of ~45 KiB
/// per wake-up) and cost some on loopback; see `docs/benchmark-results.md`.
pub const DEFAULT_BULK_LOW_WATER_BYTES: usize = 0;
/// Default number of upstream addresses tried before the client is closed.
pub const DEFAULT_CONNECT_ATTEMPTS: usize = 3;

/// Default time a client of a route with [`ConnectionOptions::accept_proxy`] has to send its
/// whole PROXY protocol header (HAProxy's and nginx's default is the same order: a balancer
/// sends the header with, or just before, the first payload).
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time a client of an HTTP CONNECT route has to send its whole request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time a client of an SNI route has to send its TLS ClientHello.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest keepalive idle time Linux takes (`TCP_KEEPIDLE`, `MAX_TCP_KEEPIDLE` in the
/// kernel): 32,767 seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;

/// Checks a keepalive idle time ([`ConnectionOptions::keepalive`]) against what the kernel
/// takes: `TCP_KEEPIDLE` counts whole seconds from 1 to 32,767 (about 9 hours). Outside that
/// range setting it fails with `EINVAL` on every connection. (The relay sets only the idle
/// time; the probe interval and count, `TCP_KEEPINTVL` and `TCP_KEEPCNT`, stay the system's,
/// `net.ipv4.tcp_keepalive_intvl` and `tcp_keepalive_probes`.) The error is in words meant
/// for the user.
///
/// ```
/// use std::time::Duration;
/// use spliceway::check::check_keepalive;
/// assert!(check_keepalive(Duration::from_secs(60)).is_ok());
/// assert!(check_keepalive(Duration::from_secs(40_000)).is_err());
/// assert!(check_keepalive(Duration::from_millis(500)).is_err());
/// ```
///
/// # Errors
///
/// The time is under a second or over 32,767 seconds.
pub fn check_keepalive(idle: Duration) -> Result<(), KeepaliveError> {
    if idle < Duration::from_secs(1) || idle > Duration::from_secs(MAX_KEEPALIVE_SECS) {
        return Err(KeepaliveError::OutOfRange { idle });
    }
    Ok(())
}

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
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "splice" => Ok(Mode::Splice),
            "copy" => Ok(Mode::Copy),
            other => Err(ModeError {
                given: other.to_string(),
            }),
        }
    }
}

/// The source address of a route's upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Source {
    /// Whatever the kernel picks (the default).
    #[default]
    Auto,
    /// The client's own address (HAProxy's `usesrc clientip`): the upstream socket is made
    /// `IP_TRANSPARENT` (needs `CAP_NET_ADMIN`) and bound to the client's address and an
    /// ephemeral port before it connects, so the upstream sees the real client. The upstream's
    /// answers must come back through the relay (policy routing with a mark;
    /// docs/operations.md).
    Client,
    /// This local address (stone's `-I host`), with an ephemeral port.
    Address(std::net::IpAddr),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Auto => f.write_str("auto"),
            Source::Client => f.write_str("client"),
            Source::Address(ip) => write!(f, "{ip}"),
        }
    }
}

impl std::str::FromStr for Source {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Source::Auto),
            "client" => Ok(Source::Client),
            other => other.parse().map(Source::Address).map_err(|_| SourceError {
                given: other.to_owned(),
            }),
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
    /// TCP congestion control (`TCP_CONGESTION`, e.g. `"cubic"`) on both sockets; `None`
    /// keeps the system's default (`net.ipv4.tcp_congestion_control`). The relay sends on both
    /// sockets, so this is the algorithm of both of its hops' sending sides. On a host whose
    /// default is BBR, `"cubic"` halved the relay's CPU per GiB over loopback, where BBR's
    /// pacing timers cost more than they help (measured in `docs/benchmark-results.md`).
    pub congestion: Option<String>,
    /// How long resolved upstream addresses are reused before resolving again.
    pub resolve_cache_ttl: Duration,
    /// `SO_RCVLOWAT` set on a direction's source once it carries a bulk transfer, in bytes
    /// (0 or 1: off). Fewer, larger wake-ups at link speed; see `low_water.rs`.
    pub bulk_low_water: usize,
    /// Read a PROXY protocol header (of these versions) from each client before anything else
    /// (off by default). The address in it becomes the connection's client address for the
    /// access lists, the log and [`send_proxy`](Self::send_proxy); a connection without a valid
    /// header is reset and counted. See [`proxy_protocol`](crate::proxy_protocol).
    pub accept_proxy: Option<crate::proxy_protocol::Accept>,
    /// Time a client has to send its whole PROXY protocol header
    /// ([`DEFAULT_PROXY_TIMEOUT`]).
    pub proxy_timeout: Duration,
    /// Write a PROXY protocol header of this version to the upstream before any payload, with
    /// the client's address (from an accepted header when there is one) and the address it
    /// connected to (off by default). The header's bytes are not counted as payload.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// The source address of upstream connections ([`Source::Auto`]: the kernel's choice).
    pub source: Source,
    /// Listen with `IP_TRANSPARENT` (needs `CAP_NET_ADMIN`): the route's listeners accept
    /// connections that nftables `TPROXY` delivers to them, addressed to other hosts; the
    /// accepted socket's local address is then the address the client dialled
    /// ([`Upstream::OriginalDestination`](crate::Upstream::OriginalDestination)).
    pub transparent: bool,
    /// A bandwidth limit of each connection, per direction (off by default). A limited
    /// direction reads no more than its token bucket holds (a splice asks for no more: zero
    /// copy is kept) and waits on a deadline of its worker when the bucket is empty. A reload
    /// applies a change to open connections too.
    pub rate_limit: Option<RateLimit>,
    /// A bandwidth limit shared by all connections of one client address (an IPv6 client by its
    /// /64; the address a trusted PROXY header gives when there is one), per direction.
    pub client_rate_limit: Option<RateLimit>,
    /// A bandwidth limit shared by every connection of the route, across worker threads, per
    /// direction.
    pub route_rate_limit: Option<RateLimit>,
    /// How [`rate_limit`](Self::rate_limit) is enforced: the kernel's pacing or the relay's
    /// bucket ([`ConnectionLimitBy`]; `Auto` unless measuring the two, `docs/rate-limits.md`).
    /// Not part of the interface: set with `internal::set_connection_limit_by`.
    pub(crate) connection_limit_by: ConnectionLimitBy,
    /// Test-only (feature `fault-injection`): the worker panics once a connection of this
    /// route has relayed this many bytes, to prove that a panic resets every connection. Not
    /// part of the interface: set with `internal::set_panic_after_bytes`.
    #[cfg(feature = "fault-injection")]
    pub(crate) panic_after_bytes: Option<u64>,
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
            congestion: None,
            resolve_cache_ttl: Duration::from_secs(10),
            bulk_low_water: DEFAULT_BULK_LOW_WATER_BYTES,
            accept_proxy: None,
            proxy_timeout: DEFAULT_PROXY_TIMEOUT,
            send_proxy: None,
            source: Source::Auto,
            transparent: false,
            rate_limit: None,
            client_rate_limit: None,
            route_rate_limit: None,
            connection_limit_by: ConnectionLimitBy::Auto,
            #[cfg(feature = "fault-injection")]
            panic_after_bytes: None,
        }
    }
}

impl ConnectionOptions {
    /// Which directions' [`rate_limit`](Self::rate_limit) the kernel paces on the sending
    /// socket (`SO_MAX_PACING_RATE`) rather than the relay's token bucket, as `(up, down)`: a
    /// direction whose only limit is the connection's own, when that limit names no `burst`
    /// (the kernel's pacing is as precise and cheaper, but cannot be shared and has no burst;
    /// `docs/rate-limits.md`).
    #[must_use]
    pub fn kernel_paced(&self) -> (bool, bool) {
        let Some(own) = self.rate_limit else {
            return (false, false);
        };
        let shared = |limit: Option<RateLimit>, up: bool| {
            limit.is_some_and(|l| if up { l.up.is_some() } else { l.down.is_some() })
        };
        let paced = |rate: Option<super::Rate>, up: bool| {
            rate.is_some()
                && match self.connection_limit_by {
                    ConnectionLimitBy::Auto => {
                        own.burst.is_none()
                            && !shared(self.client_rate_limit, up)
                            && !shared(self.route_rate_limit, up)
                    }
                    ConnectionLimitBy::Bucket => false,
                    ConnectionLimitBy::KernelPacing => true,
                }
        };
        (paced(own.up, true), paced(own.down, false))
    }

    /// Checks the values of the options as [`RelayBuilder::build`](crate::RelayBuilder::build)
    /// does for route `route`: the error, in words meant for the user, names the route. (What
    /// only the kernel can answer, whether this process may set the congestion control, is
    /// [`check_congestion`](crate::check::check_congestion).)
    ///
    /// # Errors
    ///
    /// A size or a time out of range, a keepalive time the kernel refuses
    /// ([`check_keepalive`]).
    pub fn validate(&self, route: &str) -> Result<(), OptionsError> {
        let route = route.to_owned();
        if self.pipe_size == 0 || self.pipe_size > (1 << 30) {
            return Err(OptionsError::PipeSize { route });
        }
        if self.copy_buffer_size == 0 || self.copy_buffer_size > (1 << 30) {
            return Err(OptionsError::CopyBufferSize { route });
        }
        if self.connect_timeout.is_zero() {
            return Err(OptionsError::ConnectTimeout { route });
        }
        if self.idle_timeout.is_zero() {
            return Err(OptionsError::IdleTimeout { route });
        }
        if self.half_close_timeout.is_zero() {
            return Err(OptionsError::HalfCloseTimeout { route });
        }
        if self.proxy_timeout.is_zero() {
            return Err(OptionsError::ProxyTimeout { route });
        }
        if self.connect_attempts == 0 {
            return Err(OptionsError::ConnectAttempts { route });
        }
        if let Some(idle) = self.keepalive
            && let Err(problem) = check_keepalive(idle)
        {
            return Err(OptionsError::Keepalive { route, problem });
        }
        for limit in [
            &self.rate_limit,
            &self.client_rate_limit,
            &self.route_rate_limit,
        ]
        .into_iter()
        .flatten()
        {
            if limit.burst == Some(0) {
                return Err(OptionsError::RateLimitBurst { route });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_burst_is_refused() {
        let rate = super::super::Rate::bytes_per_second(1000);
        let options = ConnectionOptions {
            route_rate_limit: Some(RateLimit::new(rate, None).with_burst(0)),
            ..ConnectionOptions::default()
        };
        let e = options.validate("r").unwrap_err().to_string();
        assert!(e.contains("route \"r\"") && e.contains("burst"), "{e}");
    }

    /// Hostile input 5: `keepalive` above 32,767 s was accepted, then every connection failed
    /// with "Invalid argument" when the kernel refused `TCP_KEEPIDLE`.
    #[test]
    fn keepalive_beyond_the_kernels_range_is_refused() {
        let with = |idle| ConnectionOptions {
            keepalive: Some(idle),
            ..ConnectionOptions::default()
        };
        for secs in [1, 60, 32_767] {
            assert_eq!(with(Duration::from_secs(secs)).validate("r"), Ok(()));
        }
        for idle in [Duration::from_secs(32_768), Duration::from_millis(999)] {
            let e = with(idle).validate("r").unwrap_err().to_string();
            assert!(
                e.contains("route \"r\": keepalive") && e.contains("32767s"),
                "{e}"
            );
        }
    }
}
