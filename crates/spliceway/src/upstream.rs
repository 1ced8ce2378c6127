//! Opening the upstream side of a connection: a non-blocking connect with the route's TCP
//! options, and the same options on accepted client sockets.

use std::io;
use std::net::SocketAddr;

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
    Ok(())
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
    let stream = match socket.connect(&addr.into()) {
        Ok(()) => TcpStream::from_std(socket.into()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => TcpStream::from_std(socket.into()),
        Err(e) => return Err(e),
    };
    apply_socket_options(&stream, options)?;
    Ok(stream)
}
