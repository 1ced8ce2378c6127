//! Handing the relay a connection the program made itself: [`Adoption`] describes the pair,
//! [`RelayHandle::adopt`] checks it, reserves its place under the limits and posts it to a
//! worker, which relays it like an accepted connection. A refusal ([`AdoptError`]) gives both
//! sockets back.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Type};

use super::handle::RelayHandle;
use crate::address::UpstreamAddr;
use crate::descriptors::PER_CONNECTION;
use crate::end::{ConnectionEnd, ConnectionId, OnEnd};
use crate::error::OptionsError;
use crate::route::{AccessList, AddressPolicy, ConnectionOptions, Resolution, Upstream};
use crate::state::adoption::{Adopted, AdoptedPair};
use crate::state::mailbox::Message;
use crate::state::relay::try_reserve;
use crate::state::route::RouteState;

/// The route name adopted connections without a route of their own are logged under.
const ADOPTED_ROUTE: &str = "adopted";

/// A connected pair for [`RelayHandle::adopt`]: the client socket, the upstream socket, and how
/// to relay them.
///
/// Both are TCP sockets the program has connected (accepted, or connected out) and perhaps
/// used for a handshake of its own; their blocking mode does not matter (the relay makes them
/// non-blocking). Without [`route`](Adoption::route) or [`options`](Adoption::options) the
/// connection gets [`ConnectionOptions::default`].
///
/// ```no_run
/// use std::net::{TcpListener, TcpStream};
///
/// # fn demo(handle: spliceway::RelayHandle) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = TcpListener::bind("127.0.0.1:8080")?;
/// let (client, _) = listener.accept()?;
/// let upstream = TcpStream::connect("127.0.0.1:9000")?;
/// let (done, ended) = std::sync::mpsc::channel();
/// let id = handle.adopt(
///     spliceway::Adoption::new(client, upstream)
///         .client_bytes(b"already read from the client".to_vec())
///         .on_end(move |end| drop(done.send(end))),
/// )?;
/// let end = ended.recv()?; // when the connection is over
/// assert_eq!(end.id(), id);
/// println!("{end}");
/// # Ok(())
/// # }
/// ```
#[must_use = "an Adoption does nothing until it is given to RelayHandle::adopt"]
pub struct Adoption {
    client: TcpStream,
    upstream: TcpStream,
    route: Option<String>,
    options: Option<ConnectionOptions>,
    client_bytes: Vec<u8>,
    upstream_bytes: Vec<u8>,
    on_end: Option<OnEnd>,
}

impl Adoption {
    /// A pair of connected TCP sockets: `client` is the side that asked (its bytes go to
    /// `upstream`), `upstream` the side the program connected it to.
    pub fn new(client: TcpStream, upstream: TcpStream) -> Self {
        Adoption {
            client,
            upstream,
            route: None,
            options: None,
            client_bytes: Vec::new(),
            upstream_bytes: Vec::new(),
            on_end: None,
        }
    }

    /// The same from two descriptors (from another runtime, a C library, systemd...). That
    /// they are connected TCP sockets is checked by [`RelayHandle::adopt`], which refuses
    /// anything else and gives the descriptors back, as `TcpStream`s.
    pub fn from_fds(client: OwnedFd, upstream: OwnedFd) -> Self {
        Adoption::new(TcpStream::from(client), TcpStream::from(upstream))
    }

    /// Relays the pair with route `name`'s connection options, counts it in that route's
    /// counters, and holds a slot of that route's connection limit. The route must exist when
    /// the pair is adopted ([`AdoptRefusal::UnknownRoute`] otherwise); its upstream and access
    /// lists play no part.
    pub fn route(mut self, name: impl Into<String>) -> Self {
        self.route = Some(name.into());
        self
    }

    /// Relays the pair with these options (instead of the route's, if a route is given too).
    /// They are checked as a route's are ([`AdoptRefusal::InvalidOptions`]).
    pub fn options(mut self, options: ConnectionOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Bytes the program already read from the client (during its handshake, past what it
    /// needed): written to the upstream before anything more is read from the client. Any
    /// length; they count as payload (`bytes_client_to_upstream`).
    pub fn client_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.client_bytes = bytes.into();
        self
    }

    /// Bytes the program already read from the upstream: written to the client first.
    pub fn upstream_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.upstream_bytes = bytes.into();
        self
    }

    /// Called once when the connection has ended, however it ended (also when the relay
    /// stops before relaying it, with [`CloseReason::Shutdown`](crate::CloseReason::Shutdown)),
    /// and never if the adoption is refused. It runs on a worker thread while that worker
    /// waits: keep it short and never block in it (send on a channel, set a flag). A panic in
    /// it is caught and logged.
    pub fn on_end(mut self, callback: impl FnOnce(ConnectionEnd) + Send + 'static) -> Self {
        self.on_end = Some(OnEnd::new(callback));
        self
    }

    /// Gives the two sockets back, `(client, upstream)`.
    #[must_use]
    pub fn into_sockets(self) -> (TcpStream, TcpStream) {
        (self.client, self.upstream)
    }
}

impl fmt::Debug for Adoption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adoption")
            .field("client", &self.client)
            .field("upstream", &self.upstream)
            .field("route", &self.route)
            .field("options", &self.options)
            .field("client_bytes", &self.client_bytes.len())
            .field("upstream_bytes", &self.upstream_bytes.len())
            .field("on_end", &self.on_end.is_some())
            .finish()
    }
}

/// Which socket of an [`Adoption`] a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client socket ([`Adoption::new`]'s first).
    Client,
    /// The upstream socket.
    Upstream,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

/// Why [`RelayHandle::adopt`] refused a pair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptRefusal {
    /// The socket is not a TCP socket (a Unix or UDP socket, or no socket at all).
    #[error("the {0} socket is not a TCP socket")]
    NotTcp(Side),
    /// The socket has no peer: never connected, still connecting, listening, or reset
    /// earlier (once its error was read, a reset socket looks never connected).
    #[error("the {0} socket is not connected")]
    NotConnected(Side),
    /// The socket has a pending error: its connection already failed (was reset by its peer,
    /// for example). Reading the error cleared it.
    #[error("the {side} socket's connection has already failed")]
    Closed {
        /// Which socket.
        side: Side,
        /// The error it had (`SO_ERROR`).
        #[source]
        error: io::Error,
    },
    /// [`Adoption::route`] names no route of the relay.
    #[error("no route is named {0:?}")]
    UnknownRoute(String),
    /// The options are out of range (see [`ConnectionOptions::validate`]).
    #[error("invalid connection options: {0}")]
    InvalidOptions(OptionsError),
    /// The relay is draining or stopping (or has stopped).
    #[error("the relay is stopping")]
    Stopping,
    /// The relay holds as many connections as its limit allows
    /// ([`RelayBuilder::max_connections`](crate::RelayBuilder::max_connections)).
    #[error("the relay is at its connection limit")]
    ConnectionLimit,
    /// The route holds as many connections as its limit allows
    /// ([`Route::max_connections`](crate::Route::max_connections)).
    #[error("route {0:?} is at its connection limit")]
    RouteConnectionLimit(String),
    /// The relay's share of the open-file limit is used up (see [`RESERVED_DESCRIPTORS`](crate::limits::RESERVED_DESCRIPTORS)).
    #[error("the relay's descriptors are used up")]
    OutOfDescriptors,
    /// Making a socket non-blocking or setting its linger failed.
    #[error("cannot prepare the {side} socket")]
    Io {
        /// Which socket.
        side: Side,
        /// The system's error.
        #[source]
        error: io::Error,
    },
}

/// A refused [`Adoption`]: why, and both sockets, returned unchanged (open, connected as they
/// were; only [`AdoptRefusal::Io`] may leave one non-blocking). Dropping the error closes them.
///
/// ```no_run
/// # fn demo(handle: spliceway::RelayHandle, adoption: spliceway::Adoption) {
/// match handle.adopt(adoption) {
///     Ok(id) => println!("relaying {id}"),
///     Err(refused) => {
///         eprintln!("not relayed: {refused}");
///         let (client, upstream) = refused.into_sockets(); // serve them another way
///         # drop((client, upstream));
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AdoptError {
    refusal: AdoptRefusal,
    client: TcpStream,
    upstream: TcpStream,
}

impl AdoptError {
    /// Why the pair was refused.
    #[must_use]
    pub fn refusal(&self) -> &AdoptRefusal {
        &self.refusal
    }

    /// The two sockets, `(client, upstream)`.
    #[must_use]
    pub fn into_sockets(self) -> (TcpStream, TcpStream) {
        (self.client, self.upstream)
    }

    /// Why, and the two sockets.
    #[must_use]
    pub fn into_parts(self) -> (AdoptRefusal, TcpStream, TcpStream) {
        (self.refusal, self.client, self.upstream)
    }
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection not adopted: {}", self.refusal)
    }
}

impl std::error::Error for AdoptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.refusal)
    }
}

impl RelayHandle {
    /// Relays an already connected pair on one of the relay's workers, with the same
    /// machinery as an accepted connection: half-close passed on, resets passed on as resets,
    /// bounded buffers, the route's timeouts, counters (`accepted` and `adopted`), drain and
    /// shutdown. It holds a slot of the relay's connection limit (and its route's) and two
    /// descriptors of the relay's budget until it ends. Returns at once, without blocking:
    /// the bytes move on the worker.
    ///
    /// It may be called before [`Relay::run`](crate::Relay::run) (the pair waits for the
    /// workers to start), from any thread; a relay built with no routes at all serves only
    /// adopted connections.
    ///
    /// # Errors
    ///
    /// [`AdoptError`], with both sockets, if a socket is not a connected TCP socket or its
    /// connection already failed, the route is unknown, the options are invalid, the relay is
    /// stopping, or a limit is reached. The sockets are unchanged then.
    pub fn adopt(&self, adoption: Adoption) -> Result<ConnectionId, AdoptError> {
        let Adoption {
            client,
            upstream,
            route,
            options,
            client_bytes,
            upstream_bytes,
            on_end,
        } = adoption;
        let refuse = |refusal, client, upstream| AdoptError {
            refusal,
            client,
            upstream,
        };
        let (client_addr, upstream_addr) = match (
            connected_peer(&client, Side::Client),
            connected_peer(&upstream, Side::Upstream),
        ) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(refusal), _) | (_, Err(refusal)) => return Err(refuse(refusal, client, upstream)),
        };
        let route = match self.adopting_route(route.as_deref(), options, upstream_addr) {
            Ok(route) => route,
            Err(refusal) => return Err(refuse(refusal, client, upstream)),
        };
        if !self.relay.control().accepts() {
            return Err(refuse(AdoptRefusal::Stopping, client, upstream));
        }
        if let Err(refusal) = self.reserve(&route) {
            return Err(refuse(refusal, client, upstream));
        }
        let prepared =
            prepare(&client, Side::Client).and_then(|()| prepare(&upstream, Side::Upstream));
        if let Err(refusal) = prepared {
            self.release(&route);
            return Err(refuse(refusal, client, upstream));
        }

        let id = self.relay.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = (id % self.relay.mailboxes.len() as u64) as usize;
        let pair = AdoptedPair {
            id,
            client,
            client_addr,
            upstream,
            upstream_addr,
            route: Arc::clone(&route),
            client_bytes,
            upstream_bytes,
            on_end,
        };
        match self.relay.mailboxes[worker].post_unless_closed(Message::Adopt(Adopted::new(pair))) {
            Ok(()) => Ok(ConnectionId::new(id)),
            Err(message) => {
                self.release(&route);
                let Message::Adopt(adopted) = message else {
                    unreachable!("post_unless_closed gives back the message it was given")
                };
                let Some(pair) = adopted.take() else {
                    unreachable!("a pair is taken only by the worker")
                };
                // Back as they came: blocking mode as the program had it is not known, so the
                // sockets stay non-blocking; linger back to the system's.
                let _ = SockRef::from(&pair.client).set_linger(None);
                let _ = SockRef::from(&pair.upstream).set_linger(None);
                Err(refuse(AdoptRefusal::Stopping, pair.client, pair.upstream))
            }
        }
    }

    /// The running state an adopted connection uses: its route's (with other options if
    /// given), or one of its own, counted only relay-wide.
    fn adopting_route(
        &self,
        route: Option<&str>,
        options: Option<ConnectionOptions>,
        upstream_addr: SocketAddr,
    ) -> Result<Arc<RouteState>, AdoptRefusal> {
        if let Some(options) = &options {
            options
                .validate(route.unwrap_or(ADOPTED_ROUTE))
                .map_err(AdoptRefusal::InvalidOptions)?;
        }
        let Some(name) = route else {
            return Ok(Arc::new(own_route(
                options.unwrap_or_default(),
                upstream_addr,
            )));
        };
        let routes = self.relay.routes();
        let Some(state) = routes.iter().find(|r| r.name == name) else {
            return Err(AdoptRefusal::UnknownRoute(name.to_string()));
        };
        let Some(options) = options else {
            return Ok(Arc::clone(state));
        };
        // The route's counters and limit, other options.
        Ok(Arc::new(RouteState {
            name: state.name.clone(),
            upstream: state.upstream.clone(),
            options,
            access: state.access.clone(),
            proxy_from: state.proxy_from.clone(),
            resolution: state.resolution.clone(),
            address_policy: state.address_policy.clone(),
            listen: state.listen.clone(),
            configured_listen: state.configured_listen.clone(),
            relay_listeners: Arc::clone(&state.relay_listeners),
            literal_targets: state.literal_targets.clone(),
            counters: Arc::clone(&state.counters),
            max_connections: state.max_connections,
            max_connections_per_client: state.max_connections_per_client,
            next_target: AtomicUsize::new(0),
            group: state.group.clone(),
        }))
    }

    /// Takes the connection's slots: the relay's limit, its route's, two descriptors.
    fn reserve(&self, route: &RouteState) -> Result<(), AdoptRefusal> {
        let relay = &self.relay;
        if !try_reserve(&relay.active, relay.max_connections()) {
            return Err(AdoptRefusal::ConnectionLimit);
        }
        if !try_reserve(route.active(), route.max_connections) {
            relay.active.fetch_sub(1, Ordering::AcqRel);
            return Err(AdoptRefusal::RouteConnectionLimit(route.name.clone()));
        }
        if !relay.descriptors.try_take(PER_CONNECTION) {
            relay.active.fetch_sub(1, Ordering::AcqRel);
            route.active().fetch_sub(1, Ordering::AcqRel);
            return Err(AdoptRefusal::OutOfDescriptors);
        }
        Ok(())
    }

    /// Gives back what [`reserve`](Self::reserve) took.
    fn release(&self, route: &RouteState) {
        self.relay.active.fetch_sub(1, Ordering::AcqRel);
        route.active().fetch_sub(1, Ordering::AcqRel);
        self.relay.descriptors.give_back(PER_CONNECTION);
    }
}

/// The route of an adopted connection that names none: the given options, counters of its
/// own (so only the relay-wide counters show it), no limit of its own.
fn own_route(options: ConnectionOptions, upstream: SocketAddr) -> RouteState {
    RouteState {
        name: ADOPTED_ROUTE.to_string(),
        upstream: Upstream::Fixed(UpstreamAddr::Ip(upstream)),
        options,
        access: AccessList::default(),
        proxy_from: None,
        resolution: Resolution::system(),
        address_policy: AddressPolicy::default(),
        listen: Vec::new(),
        configured_listen: Vec::new(),
        relay_listeners: Arc::from(Vec::new()),
        literal_targets: None,
        counters: Arc::default(),
        max_connections: None,
        max_connections_per_client: None,
        next_target: AtomicUsize::new(0),
        group: None,
    }
}

/// The peer of a connected TCP socket, or why it is not one. Reads (and so clears) a pending
/// socket error.
fn connected_peer(socket: &TcpStream, side: Side) -> Result<SocketAddr, AdoptRefusal> {
    let sock = SockRef::from(socket);
    let is_tcp = matches!(sock.domain(), Ok(d) if d == Domain::IPV4 || d == Domain::IPV6)
        && matches!(sock.r#type(), Ok(t) if t == Type::STREAM)
        && matches!(sock.protocol(), Ok(Some(p)) if p == Protocol::TCP);
    if !is_tcp {
        return Err(AdoptRefusal::NotTcp(side));
    }
    match sock.take_error() {
        Ok(None) => {}
        Ok(Some(error)) => return Err(AdoptRefusal::Closed { side, error }),
        Err(error) => return Err(AdoptRefusal::Io { side, error }),
    }
    match sock.peer_addr().map(|a| a.as_socket()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(AdoptRefusal::NotTcp(side)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(AdoptRefusal::NotConnected(side)),
        Err(error) => Err(AdoptRefusal::Io { side, error }),
    }
}

/// Non-blocking, and `SO_LINGER` 0 from now on, so that a socket dropped anywhere before its
/// connection completes resets its peer (as the relay's own sockets do from their first moment).
fn prepare(socket: &TcpStream, side: Side) -> Result<(), AdoptRefusal> {
    socket
        .set_nonblocking(true)
        .and_then(|()| SockRef::from(socket).set_linger(Some(Duration::ZERO)))
        .map_err(|error| AdoptRefusal::Io { side, error })
}
