//! How a connection ends, told to whoever must know: the reason it closed ([`CloseReason`],
//! logged and counted for every connection), and what a program that handed a connection over
//! ([`RelayHandle::adopt`](crate::RelayHandle::adopt)) learns about it: its id, and how it ended
//! ([`ConnectionEnd`]), through a callback the connection carries ([`OnEnd`]) and calls exactly
//! once.
//!
//! Below `connection/` and `state/`: the adoption message in `state/` tells the program a
//! dropped connection's end without importing the connection.

mod close_reason;

use std::fmt;
use std::time::Duration;

pub use close_reason::CloseReason;

/// A connection's number, unique within its relay: the `id` field of the relay's log lines
/// (`target: "spliceway::conn"`), so a program can find the lines of a connection it adopted.
///
/// ```
/// # fn id(handle: &spliceway::RelayHandle, adoption: spliceway::Adoption) {
/// if let Ok(id) = handle.adopt(adoption) {
///     println!("relaying as connection {id} (log lines with id={})", id.get());
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    pub(crate) fn new(id: u64) -> Self {
        ConnectionId(id)
    }

    /// The number, as logged.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How an adopted connection ended: what [`Adoption::on_end`](crate::Adoption::on_end) is given.
///
/// The byte counts are what was *written* to each side, the bytes handed over with
/// [`Adoption::client_bytes`](crate::Adoption::client_bytes) and
/// [`Adoption::upstream_bytes`](crate::Adoption::upstream_bytes) included; on an aborted
/// connection, bytes read but not yet written are not in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEnd {
    id: ConnectionId,
    reason: CloseReason,
    bytes_client_to_upstream: u64,
    bytes_upstream_to_client: u64,
    duration: Duration,
}

impl ConnectionEnd {
    pub(crate) fn new(
        id: u64,
        reason: CloseReason,
        (bytes_client_to_upstream, bytes_upstream_to_client): (u64, u64),
        duration: Duration,
    ) -> Self {
        ConnectionEnd {
            id: ConnectionId(id),
            reason,
            bytes_client_to_upstream,
            bytes_upstream_to_client,
            duration,
        }
    }

    /// The connection, as [`RelayHandle::adopt`](crate::RelayHandle::adopt) returned it.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// How it ended; [`CloseReason::Completed`] is the only clean end (every other one reset
    /// both sockets).
    #[must_use]
    pub fn reason(&self) -> &CloseReason {
        &self.reason
    }

    /// Bytes written to the upstream.
    #[must_use]
    pub fn bytes_client_to_upstream(&self) -> u64 {
        self.bytes_client_to_upstream
    }

    /// Bytes written to the client.
    #[must_use]
    pub fn bytes_upstream_to_client(&self) -> u64 {
        self.bytes_upstream_to_client
    }

    /// From the moment a worker took the connection to its end.
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection {}: {} ({} bytes up, {} down, {:?})",
            self.id,
            self.reason,
            self.bytes_client_to_upstream,
            self.bytes_upstream_to_client,
            self.duration
        )
    }
}

/// The callback an adopted connection calls when it ends.
pub(crate) struct OnEnd(Box<dyn FnOnce(ConnectionEnd) + Send>);

impl OnEnd {
    pub(crate) fn new(callback: impl FnOnce(ConnectionEnd) + Send + 'static) -> Self {
        OnEnd(Box::new(callback))
    }

    /// Calls the callback. It runs on a worker thread: a panic in it is caught and logged, so
    /// that the program's mistake ends no other connection.
    pub(crate) fn call(self, end: ConnectionEnd) {
        let id = end.id;
        let callback = self.0;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(end))).is_err() {
            // log: not client input: the embedding program's callback panicked.
            tracing::error!(
                target: "spliceway::conn",
                id = id.get(),
                "the end callback of an adopted connection panicked (caught; the relay goes on)"
            );
        }
    }
}

impl fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnEnd(..)")
    }
}
