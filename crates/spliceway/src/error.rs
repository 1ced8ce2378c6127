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

    /// The description of the relay is inconsistent (no routes, no listen address, two routes
    /// with the same name, a zero pipe size ...).
    #[error("invalid relay settings: {0}")]
    Invalid(String),

    /// The event loop itself failed (creating the epoll instance, or `epoll_wait`).
    #[error("event loop failed")]
    EventLoop(#[source] io::Error),

    /// A worker thread panicked. This is a bug; the message is the panic's payload.
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
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
