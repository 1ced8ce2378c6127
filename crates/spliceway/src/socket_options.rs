//! The TCP options of a route applied to both sockets of a connection (the accepted client
//! socket and the upstream socket), the non-blocking connect that opens the upstream side, and
//! the check that this process may set a congestion control at all.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::route::ConnectionOptions;

/// Applies the route's TCP options to a socket.
pub(crate) fn apply_socket_options(
    stream: &TcpStream,
    options: &ConnectionOptions,
) -> io::Result<()> {
    let socket = SockRef::from(stream);
    socket.set_tcp_nodelay(options.nodelay)?;
    if let Some(idle) = options.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(name) = &options.congestion {
        // Checked when the route was built; it can still fail here after a privilege drop
        // (an algorithm outside `tcp_allowed_congestion_control` needs CAP_NET_ADMIN). The
        // connection then keeps the system default rather than failing.
        if let Err(e) = socket.set_tcp_congestion(name.as_bytes()) {
            tracing::debug!("cannot set TCP congestion control {name:?}: {e}");
        }
    }
    Ok(())
}

/// Checks that this process may set TCP congestion control `name` on its sockets, by setting it
/// on a socket that is never connected.
///
/// # Errors
///
/// Why not, in words an operator can act on: the name is malformed, the host does not offer the
/// algorithm (`/proc/sys/net/ipv4/tcp_available_congestion_control`), or this user may not set
/// it (`/proc/sys/net/ipv4/tcp_allowed_congestion_control`).
pub fn check_congestion(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "congestion control {name:?} is not a valid name (1 to 15 printable ASCII characters)"
        ));
    }
    let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("cannot open a socket to check congestion control {name:?}: {e}"))?;
    match probe.set_tcp_congestion(name.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(format!(
            "congestion control {name:?} is not available on this host \
             (see /proc/sys/net/ipv4/tcp_available_congestion_control)"
        )),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(format!(
            "congestion control {name:?} is not allowed for this user \
             (see /proc/sys/net/ipv4/tcp_allowed_congestion_control)"
        )),
        Err(e) => Err(format!("cannot set congestion control {name:?}: {e}")),
    }
}

/// Starts a non-blocking connect to `addr`.
pub(crate) fn open_upstream(
    addr: SocketAddr,
    options: &ConnectionOptions,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // From its first moment the socket closes with a reset (the process may die at any time);
    // a connection that completes restores the normal linger before it closes.
    socket.set_linger(Some(Duration::ZERO))?;
    let stream = match socket.connect(&addr.into()) {
        Ok(()) => TcpStream::from_std(socket.into()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => TcpStream::from_std(socket.into()),
        Err(e) => return Err(e),
    };
    apply_socket_options(&stream, options)?;
    Ok(stream)
}
