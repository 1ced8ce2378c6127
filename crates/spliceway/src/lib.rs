//! # spliceway: a zero-copy TCP relay engine for Linux
//!
//! spliceway accepts TCP connections and relays each to an upstream, moving the bytes kernel to
//! kernel with `splice(2)` through a pipe per direction, so that payload never enters user
//! space. It is driven by epoll through [mio], one event loop per worker thread.
//!
//! It was written to let a host stand in for a remote endpoint (an EC2 instance standing in for
//! the S3 endpoint, reached over Direct Connect) without the relay becoming the bottleneck the
//! way copying relays do on small instances.
//!
//! ## Embedding the relay
//!
//! ```no_run
//! use std::time::Duration;
//! use spliceway::{ConnectionOptions, Relay, Route, UpstreamAddr, parse_listen_addr};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut options = ConnectionOptions::default();
//!     options.idle_timeout = Duration::from_secs(300);
//!     let route = Route::new("s3", UpstreamAddr::parse("s3-ap-northeast-1.amazonaws.com:443")?)
//!         .listen(parse_listen_addr("0.0.0.0:443")?)
//!         .options(options);
//!     let relay = Relay::builder().route(route).threads(0).build()?; // binds, resolves once
//!     let handle = relay.handle();
//!
//!     // Stop it from another thread whenever you like; read its counters meanwhile.
//!     std::thread::spawn(move || {
//!         std::thread::sleep(Duration::from_secs(60));
//!         println!("bytes spliced: {}", handle.snapshot().stats.bytes_spliced);
//!         handle.shutdown(); // stop accepting, drain, return from run()
//!     });
//!
//!     relay.run()?; // blocks this thread until the relay has stopped
//!     Ok(())
//! }
//! ```
//!
//! ## Relaying connections the program made itself
//!
//! A program that accepts and handshakes on its own (a SOCKS or HTTP CONNECT proxy, a bastion
//! choosing the upstream per user, a tokio service) hands the two connected sockets to a running
//! relay with [`RelayHandle::adopt`] and an [`Adoption`]: bytes it already read are written
//! first, the end ([`ConnectionEnd`]) comes back through a callback, and the connection counts
//! in the stats, limits, drain and shutdown like an accepted one. A relay may have no routes at
//! all, only for adopted connections. A refusal ([`AdoptError`]) gives both sockets back. The
//! crate's `examples/` directory has a port forwarder, an HTTP CONNECT proxy and a tokio program.
//!
//! ## Threads, blocking calls, `Send` and `Sync`
//!
//! - The relay owns its threads: [`Relay::run`] runs worker 0 on the calling thread, **blocks**
//!   it until the relay has stopped, and starts one more thread per extra worker
//!   ([`RelayBuilder::threads`]; 0 means one per CPU). Name resolution runs on a few threads of
//!   its own (at most 16), never on a worker. There is no async runtime; the
//!   relay runs beside any (tokio, async-std, none).
//! - [`RelayBuilder::build`] blocks while it resolves upstream names once and binds.
//! - [`RelayHandle`] is `Clone + Send + Sync` and cheap to clone: its methods can be called from
//!   any thread, including the callback of an adopted connection. `snapshot`, `shutdown*` and
//!   [`adopt`](RelayHandle::adopt) never block on the workers (they read counters or post to a
//!   worker's mailbox). [`reload`](RelayHandle::reload) blocks while it resolves and binds the
//!   new routes, and reloads from several threads run one at a time.
//! - [`Relay`] is `Send` (build it on one thread, run it on another) but not meant to be shared:
//!   `run` takes it by value.
//! - The [`Adoption::on_end`] callback runs on a worker thread: keep it short (send on a channel)
//!   because the worker's other connections wait while it runs.
//!
//! ## What it guarantees
//!
//! - **Bounded memory.** Each direction holds at most one pipe (or, in copy mode, one buffer)
//!   of the configured size, and only while bytes are in flight; a slow reader stops the
//!   relay reading from the writer (backpressure) instead of growing a buffer.
//! - **Half-close.** End of stream from one side becomes `shutdown(SHUT_WR)` towards the other
//!   once that direction's pipe has drained; the other direction keeps flowing.
//! - **Aborts propagate.** A reset, a failed write or a timeout resets *both* sides
//!   (`SO_LINGER` 0), so a truncated transfer never looks complete to either peer.
//! - **No silent fallback.** If splice is unsupported for a socket the connection falls back to
//!   copying, with a warning and a counter; [`ConnectionOptions::require_splice`] makes it an
//!   error instead.
//! - **No process-global state.** Several relays can run in one process; signal handling is left
//!   to the program (see the `spliceway` CLI).
//!
//! ## Where things are
//!
//! | module | job |
//! | --- | --- |
//! | `relay/` | [`RelayBuilder`], [`Relay`], [`RelayHandle`], reload |
//! | `event_loop/` | one worker: the mio loop, accepting, timers, draining, lookups carried out |
//! | `connection/` | one connection: advances itself through PROXY header, SNI, resolve, connect; pumps bytes; closes |
//! | `end/` | how a connection ended ([`CloseReason`], [`ConnectionEnd`]) |
//! | `transfer/` | the byte-moving engine: the per-direction state machine (no I/O), splice(2) through a pipe or recv/send through a buffer, the pipe pool, the bulk low-water mark |
//! | `resolver` | upstream name resolution off the event loop, with a cache |
//! | `proxy_protocol` | PROXY protocol v1/v2 headers: read from clients, written to upstreams |
//! | `udp/` | UDP routes: sessions per client address, batched `recvmmsg`/`sendmmsg` |
//! | `sys` | the only `unsafe` code: the socket calls nix does not wrap |
//!
//! The full map is `docs/architecture.md` in the repository.
//!
//! The configuration file of `spliceway run` (TOML, with located errors, and its DNS client) is
//! the crate `spliceway-config`, built on this crate's public API only.

// The public API is held to what a Rust programmer expects of a library: every item documented,
// results that mean something marked `#[must_use]`, errors and panics stated in the docs.
#![warn(missing_docs)]
#![warn(
    clippy::must_use_candidate,
    clippy::return_self_not_must_use,
    clippy::missing_errors_doc,
    clippy::missing_panics_doc
)]

mod address;
mod balance;
mod clock;
mod connection;
mod descriptors;
mod end;
mod error;
mod event_loop;
mod health_check;
pub mod http_connect;
mod listener;
pub mod observe;
pub mod proxy_protocol;
mod rate_limit;
mod relay;
mod resolver;
mod route;
pub mod sni;
mod socket_options;
mod state;
pub mod stats;
mod sys;
mod transfer;
mod udp;

pub use address::{UpstreamAddr, parse_listen_addr};
pub use end::{CloseReason, ConnectionEnd, ConnectionId};
pub use error::{
    AccessDenied, AddressError, Error, ModeError, OptionsError, SettingsError, SourceError,
};
pub use relay::{
    AdoptError, AdoptRefusal, Adoption, Relay, RelayBuilder, RelayHandle, ReloadSummary,
    RouteOverview, Side,
};
pub use route::{
    AccessList, AddressPolicy, Balance, ConnectTable, ConnectionOptions, GroupError, HealthCheck,
    LookupWithTtl, Mode, NameOrigin, NegativeAnswer, PassiveHealth, Probe, Protocol, Rate,
    RateLimit, Resolution, Route, SniEntry, SniTable, Source, UdpOptions, Upstream, UpstreamGroup,
    UpstreamServer,
};
pub use stats::StatsSnapshot;
pub use transfer::buffer::PoolLimits;

// The README's example is compiled as a doctest, so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The default values of [`ConnectionOptions`] and [`RelayBuilder`], for programs that show
/// them (a command line's `--help`, a configuration file's documentation).
pub mod defaults {
    pub use crate::relay::DEFAULT_DRAIN_TIMEOUT;
    pub use crate::route::{
        DEFAULT_BULK_LOW_WATER_BYTES, DEFAULT_BURST_TIME, DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_COPY_BUFFER_BYTES, DEFAULT_HALF_CLOSE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
        DEFAULT_PIPE_SIZE_BYTES, DEFAULT_PROXY_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
        DEFAULT_UDP_IDLE_TIMEOUT, MIN_DEFAULT_BURST,
    };
    pub use crate::route::{DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS};
}

/// Fixed limits of the relay: what it keeps for itself and how it bounds its resolver. They
/// are not settings; they are here so that a program can explain what it sees.
pub mod limits {
    pub use crate::descriptors::RESERVED_DESCRIPTORS;
    pub use crate::resolver::{
        MAX_PENDING_LOOKUPS_PER_CLIENT, MAX_PENDING_LOOKUPS_PER_ROUTE,
        MAX_RUNNING_LOOKUPS_PER_ROUTE,
    };
    pub use crate::route::{MAX_PROBE_BYTES, MAX_RISE_FALL, MAX_UPSTREAMS_PER_GROUP, MAX_WEIGHT};
}

/// Checks a configuration reader runs before it builds a relay, so that it can point at the
/// line at fault: what the kernel takes, and whether an upstream is one of the relay's own
/// listening addresses. [`RelayBuilder::build`] runs the same checks.
pub mod check {
    pub use crate::error::{CongestionError, KeepaliveError};
    pub use crate::relay::reached_listener;
    pub use crate::route::check_keepalive;
    pub use crate::socket_options::check_congestion;
}

/// Not part of the stable interface: the parsers of untrusted input and the per-direction
/// state machine, public only for the crate's own model tests and fuzz targets. Anything here
/// may change or disappear in any release, without a note in the changelog.
#[doc(hidden)]
pub mod internal {
    /// The per-direction state machine, without I/O.
    pub mod direction {
        pub use crate::transfer::direction::{
            Abort, Direction, End, Phase, ReadOutcome, Step, WriteOutcome,
        };
    }
    /// The TLS ClientHello parser.
    pub mod sni {
        pub use crate::sni::client_hello::{
            ClientHello, MAX_CLIENT_HELLO_BYTES, Peek, SniError, parse_client_hello,
        };
    }
    /// Test-only (feature `fault-injection`): the worker panics once a connection with these
    /// options has relayed `bytes`, to prove that a panic resets every connection.
    #[cfg(feature = "fault-injection")]
    pub fn set_panic_after_bytes(options: &mut crate::ConnectionOptions, bytes: Option<u64>) {
        options.panic_after_bytes = bytes;
    }

    /// The HTTP CONNECT request parser.
    pub mod http_connect {
        pub use crate::http_connect::request::{
            ConnectTarget, MAX_REQUEST_BYTES, Parsed, RequestError, parse_request,
        };
    }

    pub use crate::route::ConnectionLimitBy;

    /// Measurement only: how the per-connection `rate_limit` is enforced, the kernel's
    /// `SO_MAX_PACING_RATE` on each direction's sending socket or the relay's token bucket
    /// (`spliceway relay --rate-limit-by`, for `docs/rate-limits.md`). The default,
    /// [`ConnectionLimitBy::Auto`], is what a relay should run with.
    pub fn set_connection_limit_by(options: &mut crate::ConnectionOptions, by: ConnectionLimitBy) {
        options.connection_limit_by = by;
    }

    /// The PROXY protocol header parser and writer.
    pub mod proxy_protocol {
        pub use crate::proxy_protocol::encode::encode;
        pub use crate::proxy_protocol::header::{
            MAX_V1_HEADER_BYTES, MAX_V2_HEADER_BYTES, Parsed, ProxyHeader, ProxyHeaderError,
            V1_PREFIX, V2_SIGNATURE,
        };
        pub use crate::proxy_protocol::parse::parse;
    }
}
