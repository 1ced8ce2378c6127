//! Typed errors of the library.
//!
//! Errors that stop a relay from starting (a bad address, a port in use, an upstream that does
//! not resolve) are [`Error`]s returned by [`RelayBuilder::build`](crate::RelayBuilder::build).
//! Once a relay runs, a failure of one connection is never an error of the relay: it is logged,
//! counted and ends only that connection.
//!
//! Following the Rust API guidelines, an error's `Display` describes it alone and its cause is
//! reachable through `source()`; print the whole chain (anyhow's `{:#}`) for users.

use std::io;
use std::net::SocketAddr;

/// Why a relay could not be built or could not keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address given as text could not be understood.
    #[error(transparent)]
    Address(#[from] AddressError),

    /// A listening socket could not be created or bound (for example the port is in use, or
    /// binding a port below 1024 needs privileges).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// An upstream host name did not resolve at start-up.
    #[error("cannot resolve upstream {upstream}")]
    Resolve {
        /// The upstream as given, `host:port`.
        upstream: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },

    /// A route's upstream is the relay's own listening address: every connection would loop
    /// back into the relay.
    #[error("route {route:?}: upstream {upstream} is the relay's own listening address {listen}")]
    SelfLoop {
        /// The route's name.
        route: String,
        /// The upstream address.
        upstream: SocketAddr,
        /// The listening address it equals.
        listen: SocketAddr,
    },

    /// The description of the relay is inconsistent (a route without a listen address, two
    /// routes with the same name, a zero pipe size ...): which, is the [`SettingsError`].
    #[error("invalid relay settings: {0}")]
    Invalid(SettingsError),

    /// The event loop itself failed (creating the epoll instance, or `epoll_wait`).
    #[error("event loop failed")]
    EventLoop(#[source] io::Error),

    /// A worker thread panicked. This is a bug; the message is the panic's payload.
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
}

/// What is inconsistent in the description of a relay ([`Error::Invalid`]). The message names
/// the route and is meant for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// Two routes have the same name (names key reloads, metrics and logs).
    #[error("two routes are named {route:?}")]
    DuplicateRoute {
        /// The name used twice.
        route: String,
    },
    /// A route has no address to listen on.
    #[error("route {route:?} has no listen address")]
    NoListenAddress {
        /// The route's name.
        route: String,
    },
    /// The same listen address is given twice (in one route or in two).
    #[error("{addr} is listed twice")]
    ListenedTwice {
        /// The address.
        addr: SocketAddr,
    },
    /// A route that routes by server name has no entries.
    #[error("route {route:?} has an empty SNI table")]
    EmptySniTable {
        /// The route's name.
        route: String,
    },
    /// A route's connection options are out of range.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A route's group of upstreams cannot work (empty, a weight out of range, only backups,
    /// bad health-check settings ...).
    #[error("route {route:?}: {problem}")]
    Group {
        /// The route's name.
        route: String,
        /// What is wrong (its text is part of this error's).
        problem: GroupError,
    },
    /// A route's congestion control cannot be used on this host.
    #[error("route {route:?}: {problem}")]
    Congestion {
        /// The route's name.
        route: String,
        /// Why (its text is part of this error's).
        problem: CongestionError,
    },
    /// A route reads PROXY headers but says from whom it believes them: otherwise any client
    /// could claim any address, to the access lists, the log and the upstream.
    #[error(
        "route {route:?} accepts PROXY protocol headers but names no peers allowed to send them: \
         set accept_proxy_from to the load balancers' addresses (anyone, \
         [\"0.0.0.0/0\", \"::/0\"], lets every client choose its address)"
    )]
    ProxyPeersMissing {
        /// The route's name.
        route: String,
    },
    /// A route's `accept_proxy_from` is empty: no connection could be accepted.
    #[error("route {route:?}: accept_proxy_from is empty, so no connection could be accepted")]
    ProxyPeersEmpty {
        /// The route's name.
        route: String,
    },
    /// A listening socket was passed in (socket activation, an upgrade) for an address no
    /// route listens on.
    #[error("a listening socket was passed for {addr}, which is no route's listen address")]
    PassedSocketUnrouted {
        /// The socket's address.
        addr: SocketAddr,
    },
    /// A route whose client chooses the destination (original destination, HTTP CONNECT) has
    /// no `upstream_allow`: it would be an open relay.
    #[error(
        "route {route:?} relays to destinations its clients choose but has no upstream_allow: \
         list the ranges it may reach (e.g. the S3 prefix list's), or it is an open relay"
    )]
    UpstreamAllowMissing {
        /// The route's name.
        route: String,
    },
    /// An HTTP CONNECT route allows no name.
    #[error(
        "route {route:?} answers HTTP CONNECT but has an empty connect_allow: list the names it \
         may reach, e.g. \"*.amazonaws.com:443\""
    )]
    ConnectAllowEmpty {
        /// The route's name.
        route: String,
    },
    /// An HTTP CONNECT route's request timeout is zero.
    #[error("route {route:?}: the CONNECT request timeout must be more than zero")]
    RequestTimeout {
        /// The route's name.
        route: String,
    },
    /// A reload was asked of a relay that is draining or stopping.
    #[error("the relay is stopping")]
    Stopping,
    /// A UDP route was given something only TCP routes have.
    #[error("route {route:?}: a UDP route cannot have {what}")]
    UdpUnsupported {
        /// The route's name.
        route: String,
        /// What it was given, in words.
        what: &'static str,
    },
    /// A UDP route's session setting is out of range (a zero timeout or limit).
    #[error("route {route:?}: {key} must be {bound}")]
    UdpOption {
        /// The route's name.
        route: String,
        /// The setting (`udp_idle_timeout`, `max_sessions`, `max_sessions_per_client`).
        key: &'static str,
        /// What it must be, in words.
        bound: &'static str,
    },
}

impl From<SettingsError> for Error {
    fn from(e: SettingsError) -> Self {
        Error::Invalid(e)
    }
}

/// Why a textual address (`ip:port`, `host:port`, `[v6]:port`) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} address {input:?}: {reason}")]
#[non_exhaustive]
pub struct AddressError {
    /// Which address it was meant to be ("listen", "upstream").
    pub what: &'static str,
    /// The text as given.
    pub input: String,
    /// Why it was rejected, in words meant for the user.
    pub reason: String,
}

impl AddressError {
    pub(crate) fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        AddressError {
            what,
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why [`ConnectionOptions::validate`](crate::ConnectionOptions::validate) refused a route's
/// options. The message names the route and is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `pipe_size` is zero or more than 1 GiB.
    #[error("route {route:?}: pipe size must be between 1 byte and 1 GiB")]
    PipeSize {
        /// The route's name.
        route: String,
    },
    /// `copy_buffer_size` is zero or more than 1 GiB.
    #[error("route {route:?}: copy buffer size must be between 1 byte and 1 GiB")]
    CopyBufferSize {
        /// The route's name.
        route: String,
    },
    /// `connect_timeout` is zero.
    #[error("route {route:?}: connect timeout must be more than zero")]
    ConnectTimeout {
        /// The route's name.
        route: String,
    },
    /// `idle_timeout` is zero.
    #[error("route {route:?}: idle timeout must be more than zero")]
    IdleTimeout {
        /// The route's name.
        route: String,
    },
    /// `half_close_timeout` is zero.
    #[error("route {route:?}: half-close timeout must be more than zero")]
    HalfCloseTimeout {
        /// The route's name.
        route: String,
    },
    /// `proxy_timeout` is zero.
    #[error("route {route:?}: PROXY protocol timeout must be more than zero")]
    ProxyTimeout {
        /// The route's name.
        route: String,
    },
    /// `connect_attempts` is zero.
    #[error("route {route:?}: connect attempts must be at least 1")]
    ConnectAttempts {
        /// The route's name.
        route: String,
    },
    /// `keepalive` is a time the kernel does not take.
    #[error("route {route:?}: keepalive: {problem}")]
    Keepalive {
        /// The route's name.
        route: String,
        /// What is wrong with the time (its text is part of this error's).
        problem: KeepaliveError,
    },
    /// A rate limit's burst is zero: no byte could ever pass.
    #[error("route {route:?}: a rate limit's burst must be more than zero")]
    RateLimitBurst {
        /// The route's name.
        route: String,
    },
}

/// Why [`check_keepalive`](crate::check::check_keepalive) refused a keepalive idle time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeepaliveError {
    /// The time is under a second or over 32,767 seconds (`TCP_KEEPIDLE`'s range).
    #[error(
        "a keepalive idle time of {idle:?} is outside what the kernel takes \
         (TCP_KEEPIDLE: 1s to 32767s, about 9 hours)"
    )]
    OutOfRange {
        /// The time given.
        idle: std::time::Duration,
    },
}

/// Why [`check_congestion`](crate::check::check_congestion) refused a congestion control.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CongestionError {
    /// The name is not 1 to 15 printable ASCII characters.
    #[error("congestion control {name:?} is not a valid name (1 to 15 printable ASCII characters)")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The kernel does not have it (not in `tcp_available_congestion_control`).
    #[error(
        "congestion control {name:?} is not available on this host \
         (see /proc/sys/net/ipv4/tcp_available_congestion_control)"
    )]
    Unavailable {
        /// The name given.
        name: String,
    },
    /// This process may not use it (not in `tcp_allowed_congestion_control`).
    #[error(
        "congestion control {name:?} is not allowed for this user \
         (see /proc/sys/net/ipv4/tcp_allowed_congestion_control)"
    )]
    NotAllowed {
        /// The name given.
        name: String,
    },
    /// The probe socket could not be opened.
    #[error("cannot open a socket to check congestion control {name:?}: {error}")]
    Probe {
        /// The name given.
        name: String,
        /// The operating-system error (its text is part of this error's).
        error: io::Error,
    },
    /// Setting it on the probe socket failed otherwise.
    #[error("cannot set congestion control {name:?}: {error}")]
    Set {
        /// The name given.
        name: String,
        /// The operating-system error (its text is part of this error's).
        error: io::Error,
    },
}

/// Why a [`Mode`](crate::Mode) was not understood from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {given:?} (expected splice or copy)")]
#[non_exhaustive]
pub struct ModeError {
    /// The text given.
    pub given: String,
}

/// Why a [`Source`](crate::Source) could not be read from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid source {given:?} (expected \"client\", \"auto\" or an IP address)")]
#[non_exhaustive]
pub struct SourceError {
    /// The text given.
    pub given: String,
}

/// Why an [`AccessList`](crate::AccessList) refused a client: the rule, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessDenied {
    /// A deny entry contains the address.
    #[error("{ip} is in deny {net}")]
    Denied {
        /// The client's address (IPv4-mapped addresses as IPv4).
        ip: std::net::IpAddr,
        /// The deny entry that contains it.
        net: ipnet::IpNet,
    },
    /// There are allow entries and none contains the address.
    #[error("{ip} is not in the allow list")]
    NotAllowed {
        /// The client's address (IPv4-mapped addresses as IPv4).
        ip: std::net::IpAddr,
    },
}

/// Why [`UpstreamGroup::validate`](crate::UpstreamGroup::validate) refused a group. The message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The group has no upstream.
    #[error("the list of upstreams is empty")]
    Empty,
    /// More than [`MAX_UPSTREAMS_PER_GROUP`](crate::limits::MAX_UPSTREAMS_PER_GROUP) upstreams.
    #[error("{0} upstreams; a group holds at most 64")]
    TooMany(usize),
    /// A weight of 0 or above [`MAX_WEIGHT`](crate::limits::MAX_WEIGHT).
    #[error("upstream {upstream}: weight must be from 1 to 1000, not {weight}")]
    Weight {
        /// The upstream.
        upstream: String,
        /// The weight given.
        weight: u32,
    },
    /// The same address twice.
    #[error("upstream {0} is listed twice")]
    Duplicate(String),
    /// Every upstream is a backup: nothing would be used while all is well.
    #[error("every upstream is a backup; at least one must be a primary")]
    OnlyBackups,
    /// The health check's settings make no sense.
    #[error("health check: {0}")]
    HealthCheck(String),
}
