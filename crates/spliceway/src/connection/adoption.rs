//! A connection the program handed over: it starts in the relaying phase, with the two
//! connected sockets it came with, the bytes the program had already read from them, and the
//! callback that tells the program how it ended. From there it is a connection like any other
//! (the same directions, pump, timeouts, limits, counters, drain and close).

use std::io;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry};

use super::relaying::Relaying;
use super::{Connection, SocketTokens, State};
use crate::address::UpstreamAddr;
use crate::socket_options::apply_socket_options;
use crate::state::adoption::AdoptedPair;

impl Connection {
    /// A connection relaying an adopted pair (sockets already non-blocking, with
    /// `SO_LINGER` 0).
    pub(crate) fn adopted(pair: AdoptedPair, tokens: SocketTokens, now: Instant) -> Self {
        let AdoptedPair {
            id,
            client,
            client_addr,
            upstream,
            upstream_addr,
            route,
            client_bytes,
            upstream_bytes,
            on_end,
        } = pair;
        // Handed over by the program, not accepted by the route: counted among its client's
        // connections (and their shared rate limit) whatever the per-client limit.
        let slot = route.counters.limits.join(client_addr.ip());
        let mut relaying = Relaying::new(
            TcpStream::from_std(upstream),
            upstream_addr,
            &route.options,
            &slot,
            now,
        );
        relaying.hand_over(client_bytes, upstream_bytes);
        let mut connection = Connection::new(
            id,
            route,
            TcpStream::from_std(client),
            client_addr,
            tokens,
            now,
        );
        connection.chosen = Some(UpstreamAddr::Ip(upstream_addr));
        connection.origin = None;
        connection.state = State::Relaying(relaying);
        connection.on_end = on_end;
        connection.client_slot = Some(slot);
        connection
    }

    /// Sets the route's TCP options on both sockets and registers them.
    pub(crate) fn register_adopted(&mut self, registry: &Registry) -> io::Result<()> {
        self.register_client(registry, true)?;
        let State::Relaying(relaying) = &mut self.state else {
            return Ok(());
        };
        apply_socket_options(relaying.upstream(), &self.route.options)?;
        registry.register(
            relaying.upstream_mut(),
            self.tokens.upstream,
            Interest::READABLE | Interest::WRITABLE,
        )
    }
}
