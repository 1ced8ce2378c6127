//! The connection's phases and the decisions that move it through the early ones, free of I/O.
//!
//! A connection goes through its phases in one order, skipping those its route does not have:
//!
//! ```text
//!   accepted --(accept_proxy)--> [ AwaitingHeader ] --header whole, client allowed--+
//!      |                                                                             |
//!      +--(SNI route)----------> [ AwaitingHello ] <---------------(SNI route)-------+
//!      |                              | ClientHello names an allowed server          |
//!      +--(CONNECT route)------> [ AwaitingRequest ] <-----------(CONNECT route)-----+
//!      |                              | CONNECT names an allowed target, consumed    |
//!      +--(fixed route)--------> [ Resolving ] <---------------------(fixed route)---+
//!                                     | addresses known (literal, cache or resolver)
//!                                [ Connecting ] --connected--> [ Relaying ] --end of stream--> [ HalfClosed ]
//! ```
//!
//! [`Connection::advance`](super::Connection::advance) performs the reads and the dial; this
//! module decides, from the phase and what the client's socket said, what comes next
//! ([`next_action`]) and which phase follows which ([`first_phase`], [`after_header`]), so the
//! order can be tested without sockets (the tests below), the way `transfer/direction.rs` is.

use crate::end::CloseReason;

/// Where a connection is: what `spliceway connections` lists for each live connection. Read
/// with [`Connection::phase`](super::Connection::phase), which costs a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Routes that accept PROXY protocol: waiting for the whole header.
    AwaitingHeader,
    /// SNI routes: waiting for the whole TLS ClientHello.
    AwaitingHello,
    /// HTTP CONNECT routes: waiting for the whole CONNECT request.
    AwaitingRequest,
    /// The upstream is chosen; its addresses are being looked up.
    Resolving,
    /// Connecting to one resolved address after another.
    Connecting,
    /// Both directions open, bytes moving.
    Relaying,
    /// Relaying, and one direction has passed end of stream on (the other still flows).
    HalfClosed,
}

impl Phase {
    /// The public name of the phase (`observe.rs`).
    pub(crate) fn public(self) -> crate::observe::ConnectionPhase {
        use crate::observe::ConnectionPhase as P;
        match self {
            Phase::AwaitingHeader => P::AwaitingHeader,
            Phase::AwaitingHello => P::AwaitingHello,
            Phase::AwaitingRequest => P::AwaitingRequest,
            Phase::Resolving => P::Resolving,
            Phase::Connecting => P::Connecting,
            Phase::Relaying => P::Relaying,
            Phase::HalfClosed => P::HalfClosed,
        }
    }
}

/// What the worker must do for a connection after it advanced: the connection's own I/O is
/// done; what remains needs the worker's lookup service or its table of connections.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing more now: wait for the sockets' readiness or the connection's deadline (and pump
    /// it if it is relaying).
    Wait,
    /// Look up the chosen upstream's name
    /// ([`Connection::chosen_upstream`](super::Connection::chosen_upstream)) and feed the answer
    /// back with [`Connection::resolved`](super::Connection::resolved); or, if the lookup
    /// runs on the resolver's threads, give the connection its ticket
    /// ([`Connection::wait_for_lookup`](super::Connection::wait_for_lookup)).
    Resolve,
    /// Close the connection, for this reason.
    Close(CloseReason),
}

/// The shape of a connection's route that decides its phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteShape {
    /// The route reads a PROXY protocol header first (`accept_proxy`).
    pub(crate) accepts_proxy: bool,
    /// The upstream is chosen by the ClientHello's server name.
    pub(crate) sni: bool,
    /// The upstream is the target of the client's HTTP CONNECT request.
    pub(crate) connect: bool,
}

/// The phase an accepted connection starts in.
pub(crate) fn first_phase(route: RouteShape) -> Phase {
    if route.accepts_proxy {
        Phase::AwaitingHeader
    } else {
        after_header(route)
    }
}

/// The phase that follows a whole PROXY header (or that a route without one starts in).
pub(crate) fn after_header(route: RouteShape) -> Phase {
    if route.sni {
        Phase::AwaitingHello
    } else if route.connect {
        Phase::AwaitingRequest
    } else {
        Phase::Resolving
    }
}

/// What the client's latest event said, as far as the early phases care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ClientEvent {
    pub(crate) readable: bool,
    /// The client ended its side.
    pub(crate) read_closed: bool,
}

/// The early-phase work a connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Read the PROXY header so far.
    ReadHeader,
    /// Peek at the ClientHello so far.
    ReadHello,
    /// Peek at the CONNECT request so far.
    ReadRequest,
    /// Resolve the chosen upstream (an IP literal at once; a name by the worker).
    Resolve,
    /// Nothing to do before the next event.
    Wait,
}

/// What to do next in `phase`, given the client's event and whether a lookup is already out.
///
/// A header is read on end of stream too (a client that sends half a header and ends its side
/// is refused at once, not at the timeout); a ClientHello only when there are bytes. A
/// resolving connection asks once: the answer comes back through the worker. Connecting and
/// relaying are driven by the sockets' events, not from here.
pub(crate) fn next_action(phase: Phase, client: ClientEvent, lookup_pending: bool) -> Action {
    match phase {
        Phase::AwaitingHeader if client.readable || client.read_closed => Action::ReadHeader,
        Phase::AwaitingHello if client.readable => Action::ReadHello,
        // Like a header: a client that ends its side mid-request is answered at once.
        Phase::AwaitingRequest if client.readable || client.read_closed => Action::ReadRequest,
        Phase::Resolving if !lookup_pending => Action::Resolve,
        _ => Action::Wait,
    }
}

/// A ClientHello was routed: whether the connection may go on to resolve. A client that also
/// ended its side cannot complete a TLS handshake, so its upstream is not resolved.
pub(crate) fn after_hello(client: ClientEvent) -> Result<Phase, CloseReason> {
    if client.read_closed {
        Err(CloseReason::ClientLeft)
    } else {
        Ok(Phase::Resolving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: [RouteShape; 4] = [
        RouteShape {
            accepts_proxy: false,
            sni: false,
            connect: false,
        },
        RouteShape {
            accepts_proxy: false,
            sni: true,
            connect: false,
        },
        RouteShape {
            accepts_proxy: true,
            sni: false,
            connect: false,
        },
        RouteShape {
            accepts_proxy: true,
            sni: true,
            connect: false,
        },
    ];

    const READABLE: ClientEvent = ClientEvent {
        readable: true,
        read_closed: false,
    };

    /// Walks a connection of `route` through its early phases the way `Connection::advance`
    /// does, every read completing at once: the phases it passes, in order.
    fn walk(route: RouteShape) -> Vec<Phase> {
        let mut phase = first_phase(route);
        let mut seen = vec![phase];
        for _ in 0..8 {
            phase = match next_action(phase, READABLE, false) {
                Action::ReadHeader => after_header(route),
                Action::ReadHello => after_hello(READABLE).unwrap(),
                Action::ReadRequest => Phase::Resolving,
                Action::Resolve => Phase::Connecting,
                Action::Wait => break,
            };
            seen.push(phase);
        }
        seen
    }

    #[test]
    fn a_fixed_route_starts_resolving_at_accept() {
        let fixed = SHAPES[0];
        assert_eq!(first_phase(fixed), Phase::Resolving);
        assert_eq!(walk(fixed), [Phase::Resolving, Phase::Connecting]);
    }

    #[test]
    fn an_sni_route_waits_for_the_hello_before_it_resolves() {
        assert_eq!(
            walk(SHAPES[1]),
            [Phase::AwaitingHello, Phase::Resolving, Phase::Connecting]
        );
    }

    #[test]
    fn a_proxy_route_reads_the_header_first_then_the_hello_on_an_sni_route() {
        assert_eq!(
            walk(SHAPES[2]),
            [Phase::AwaitingHeader, Phase::Resolving, Phase::Connecting]
        );
        assert_eq!(
            walk(SHAPES[3]),
            [
                Phase::AwaitingHeader,
                Phase::AwaitingHello,
                Phase::Resolving,
                Phase::Connecting
            ]
        );
    }

    #[test]
    fn a_connect_route_reads_the_request_then_resolves_its_target() {
        for accepts_proxy in [false, true] {
            let route = RouteShape {
                accepts_proxy,
                sni: false,
                connect: true,
            };
            let mut expected = vec![Phase::AwaitingRequest, Phase::Resolving, Phase::Connecting];
            if accepts_proxy {
                expected.insert(0, Phase::AwaitingHeader);
            }
            assert_eq!(walk(route), expected);
        }
        let closed = ClientEvent {
            readable: false,
            read_closed: true,
        };
        assert_eq!(
            next_action(Phase::AwaitingRequest, closed, false),
            Action::ReadRequest
        );
        assert_eq!(
            next_action(Phase::AwaitingRequest, ClientEvent::default(), false),
            Action::Wait
        );
    }

    #[test]
    fn every_route_passes_its_phases_in_order_and_reaches_connecting() {
        for route in SHAPES {
            let phases = walk(route);
            assert!(
                phases.windows(2).all(|pair| pair[0] < pair[1]),
                "{route:?}: {phases:?}"
            );
            assert_eq!(phases.last(), Some(&Phase::Connecting), "{route:?}");
        }
    }

    #[test]
    fn a_header_is_read_on_end_of_stream_too_but_a_hello_only_when_readable() {
        let closed = ClientEvent {
            readable: false,
            read_closed: true,
        };
        assert_eq!(
            next_action(Phase::AwaitingHeader, closed, false),
            Action::ReadHeader
        );
        assert_eq!(
            next_action(Phase::AwaitingHello, closed, false),
            Action::Wait
        );
        for phase in [Phase::AwaitingHeader, Phase::AwaitingHello] {
            assert_eq!(
                next_action(phase, ClientEvent::default(), false),
                Action::Wait
            );
        }
    }

    #[test]
    fn a_client_that_ends_its_side_with_its_hello_is_not_resolved() {
        let left = ClientEvent {
            readable: true,
            read_closed: true,
        };
        assert!(matches!(after_hello(left), Err(CloseReason::ClientLeft)));
        assert_eq!(after_hello(READABLE).unwrap(), Phase::Resolving);
    }

    #[test]
    fn a_resolving_connection_asks_once_then_waits_for_the_answer() {
        for client in [ClientEvent::default(), READABLE] {
            assert_eq!(
                next_action(Phase::Resolving, client, false),
                Action::Resolve
            );
            assert_eq!(next_action(Phase::Resolving, client, true), Action::Wait);
        }
    }

    #[test]
    fn connecting_and_relaying_are_driven_by_socket_events_not_by_advance() {
        for phase in [Phase::Connecting, Phase::Relaying, Phase::HalfClosed] {
            for client in [
                ClientEvent::default(),
                READABLE,
                ClientEvent {
                    readable: true,
                    read_closed: true,
                },
            ] {
                assert_eq!(next_action(phase, client, false), Action::Wait);
            }
        }
    }
}
