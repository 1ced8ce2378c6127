//! The TCP options of a route applied to both sockets of a connection (the accepted client
//! socket and the upstream socket), the non-blocking connect that opens the upstream side, and
//! the check that this process may set a congestion control at all.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::error::CongestionError;
use crate::route::{ConnectionOptions, Source};
use crate::sys;

/// Applies all the route's TCP options to a socket the relay did not accept from one of its own
/// listeners (the upstream socket, an adopted one, or a client accepted while a reload changed
/// the options; see [`apply_listener_options`]).
pub(crate) fn apply_socket_options(
    stream: &TcpStream,
    options: &ConnectionOptions,
) -> io::Result<()> {
    let socket = SockRef::from(stream);
    socket.set_tcp_nodelay(options.nodelay)?;
    if let Some(idle) = options.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    apply_congestion(stream, options);
    Ok(())
}

/// The options a socket accepted from a listener does not inherit: set on each client.
/// (Congestion control is inherited only on some kernels, and only when set on the listener by
/// a process allowed to; it is off by default, so it costs nothing unless configured.)
pub(crate) fn apply_accepted_options(stream: &TcpStream, options: &ConnectionOptions) {
    apply_congestion(stream, options);
}

/// Paces what `socket` sends to at most `bytes_per_second` (`SO_MAX_PACING_RATE`; TCP paces
/// on its own since Linux 4.13), or lifts the pacing when it is 0: how a connection's own
/// `rate_limit` is enforced when nothing shared limits its direction (`ConnectionLimitBy`).
/// A failure leaves the direction unpaced: logged at warn, since the limit is then not held.
pub(crate) fn set_pacing(socket: &TcpStream, bytes_per_second: u64) {
    let rate = if bytes_per_second == 0 {
        u64::MAX
    } else {
        bytes_per_second
    };
    if let Err(e) = sys::set_max_pacing_rate(socket, rate) {
        tracing::warn!("cannot set SO_MAX_PACING_RATE ({bytes_per_second} bytes/s): {e}");
    }
}

/// Sets on a listening socket the options every socket it accepts inherits (the kernel copies
/// the listener's socket when a handshake completes): `TCP_NODELAY`, and `SO_KEEPALIVE` with
/// `TCP_KEEPIDLE`. Set explicitly both ways, so a listener handed over by another process, or
/// kept across a reload, carries exactly the route's values. The test
/// `accepted_sockets_inherit_the_listeners_options` checks the inheritance on the running
/// kernel.
pub(crate) fn apply_listener_options(
    listener: &impl std::os::fd::AsFd,
    options: &ConnectionOptions,
) -> io::Result<()> {
    let socket = SockRef::from(listener);
    socket.set_tcp_nodelay(options.nodelay)?;
    match options.keepalive {
        Some(idle) => socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?,
        None => socket.set_keepalive(false)?,
    }
    Ok(())
}

/// Whether a reload changes an option that accepted sockets inherit from their listener.
pub(crate) fn inherited_options_differ(old: &ConnectionOptions, new: &ConnectionOptions) -> bool {
    old.nodelay != new.nodelay || old.keepalive != new.keepalive
}

fn apply_congestion(stream: &TcpStream, options: &ConnectionOptions) {
    let socket = SockRef::from(stream);
    if let Some(name) = &options.congestion {
        // Checked when the route was built; it can still fail here after a privilege drop
        // (an algorithm outside `tcp_allowed_congestion_control` needs CAP_NET_ADMIN). The
        // connection then keeps the system default rather than failing.
        if let Err(e) = socket.set_tcp_congestion(name.as_bytes()) {
            tracing::debug!("cannot set TCP congestion control {name:?}: {e}");
        }
    }
}

/// Checks that this process may set TCP congestion control `name` on its sockets, by setting it
/// on a socket that is never connected.
///
/// # Errors
///
/// Why not, in words an operator can act on: the name is malformed, the host does not offer the
/// algorithm (`/proc/sys/net/ipv4/tcp_available_congestion_control`), or this user may not set
/// it (`/proc/sys/net/ipv4/tcp_allowed_congestion_control`).
pub fn check_congestion(name: &str) -> Result<(), CongestionError> {
    let name_owned = || name.to_owned();
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CongestionError::InvalidName { name: name_owned() });
    }
    let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|error| {
        CongestionError::Probe {
            name: name_owned(),
            error,
        }
    })?;
    match probe.set_tcp_congestion(name.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(CongestionError::Unavailable { name: name_owned() })
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err(CongestionError::NotAllowed { name: name_owned() })
        }
        Err(error) => Err(CongestionError::Set {
            name: name_owned(),
            error,
        }),
    }
}

/// Starts a non-blocking connect to `addr`, from the source address the route's [`Source`]
/// asks for (`client`: the connection's client, for [`Source::Client`]; `None` when the route
/// leaves the source to the kernel).
pub(crate) fn open_upstream(
    addr: SocketAddr,
    options: &ConnectionOptions,
    client: Option<SocketAddr>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // From its first moment the socket closes with a reset (the process may die at any time);
    // a connection that completes restores the normal linger before it closes.
    socket.set_linger(Some(Duration::ZERO))?;
    if let Some(client) = client {
        bind_source(&socket, options.source, client, addr)?;
    }
    let stream = match socket.connect(&addr.into()) {
        Ok(()) => TcpStream::from_std(socket.into()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => TcpStream::from_std(socket.into()),
        Err(e) => return Err(e),
    };
    apply_socket_options(&stream, options)?;
    Ok(stream)
}

/// Binds the upstream socket's source address as the route's [`Source`] says, before it
/// connects: the client's address (with `IP_TRANSPARENT`, which lets the socket bind an address
/// that is not this host's; `CAP_NET_ADMIN`), or a fixed local address; the port is left to
/// the kernel. A client of the other address family than the upstream cannot be the source.
fn bind_source(
    socket: &Socket,
    source: Source,
    client: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<()> {
    let ip = match source {
        Source::Auto => return Ok(()),
        Source::Address(ip) => ip,
        Source::Client => {
            let ip = match client.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            sys::set_transparent(socket, upstream.is_ipv6())?;
            ip
        }
    };
    if ip.is_ipv4() != upstream.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {ip} and upstream {upstream} are of different address families"),
        ));
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted_from(listener: &std::net::TcpListener) -> std::net::TcpStream {
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.accept().unwrap().0
    }

    /// What `apply_listener_options` rests on, checked on this kernel both ways (so neither a
    /// default nor a leftover passes for inheritance).
    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for (nodelay, keepalive) in [
            (true, Some(Duration::from_secs(77))),
            (false, None),
            (true, Some(Duration::from_secs(1234))),
        ] {
            let options = ConnectionOptions {
                nodelay,
                keepalive,
                ..ConnectionOptions::default()
            };
            apply_listener_options(&listener, &options).unwrap();
            let accepted = accepted_from(&listener);
            let socket = SockRef::from(&accepted);
            assert_eq!(socket.tcp_nodelay().unwrap(), nodelay, "TCP_NODELAY");
            assert_eq!(
                socket.keepalive().unwrap(),
                keepalive.is_some(),
                "SO_KEEPALIVE"
            );
            if let Some(idle) = keepalive {
                assert_eq!(socket.tcp_keepalive_time().unwrap(), idle, "TCP_KEEPIDLE");
            }
        }
    }

    #[test]
    fn only_nodelay_and_keepalive_changes_need_the_listener() {
        let base = ConnectionOptions::default();
        let mut other = base.clone();
        other.idle_timeout = Duration::from_secs(1);
        assert!(!inherited_options_differ(&base, &other));
        other.nodelay = !base.nodelay;
        assert!(inherited_options_differ(&base, &other));
        let mut other = base.clone();
        other.keepalive = Some(Duration::from_secs(60));
        assert!(inherited_options_differ(&base, &other));
    }
}
