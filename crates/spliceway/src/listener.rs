//! Listening sockets, made with socket2.
//!
//! Each worker has its own listening socket per address, all bound with `SO_REUSEPORT`, so the
//! kernel spreads new connections across workers without a shared accept lock. Because
//! `SO_REUSEPORT` would also let a second relay silently share a port with a first one, the
//! relay first *probes* each address with a plain bind (no `SO_REUSEPORT`): if anything already
//! listens there, the probe fails with "address in use" and the relay refuses to start.
//!
//! IPv6 listeners set `IPV6_V6ONLY`, so `0.0.0.0:443` and `[::]:443` can both be bound, as
//! operators expect from other servers.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending-connection queue length asked for (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 4096;

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    // socket2 creates sockets close-on-exec on Linux.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds a non-blocking listening socket. `reuse_port` lets other workers bind the same address.
///
/// The listener carries `SO_LINGER` 0, which every socket it accepts inherits: a client socket
/// closed by anything but a graceful end (including the process dying: a crash, SIGKILL, the
/// OOM killer) sends a reset, never a FIN that would make a truncated transfer look complete.
/// A connection that completes restores the normal linger just before closing.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool, backlog: i32) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_linger(Some(Duration::ZERO))?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Prepares a listening socket bound by someone else (systemd socket activation, or the
/// process this one replaces in an upgrade) the way [`bind`] prepares its own: non-blocking,
/// `SO_LINGER` 0 for the sockets it accepts. Returns its bound address. A socket that is not
/// a listening TCP socket is refused: accepting on it would fail on every readiness event.
pub(crate) fn adopt(listener: &TcpListener) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(listener);
    if !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket passed is not listening",
        ));
    }
    socket.set_linger(Some(Duration::ZERO))?;
    listener.set_nonblocking(true)?;
    listener.local_addr()
}

/// One listener per worker out of the `sockets` passed for one address: every socket passed
/// is used (an `SO_REUSEPORT` group handed over in an upgrade spreads its clients over all of
/// them, so one left out would strand the clients queued on it), and a worker without one of
/// its own gets a duplicate of one (the same socket; the workers polling it take turns).
pub(crate) fn spread(
    mut sockets: Vec<TcpListener>,
    workers: usize,
) -> io::Result<Vec<TcpListener>> {
    let passed = sockets.len();
    for index in passed..workers {
        let copy = sockets[index % passed].try_clone()?;
        sockets.push(copy);
    }
    Ok(sockets)
}

/// Fails with `AddrInUse` if something already listens on `addr` (even with `SO_REUSEPORT`).
pub(crate) fn probe_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_a_port_but_a_stranger_is_refused() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true, 16).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, true, 16).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let err = probe_free(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn an_adopted_socket_is_prepared_and_spread_over_the_workers() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = adopt(&plain).unwrap();
        assert_eq!(addr, plain.local_addr().unwrap());
        assert_eq!(
            socket2::SockRef::from(&plain).linger().unwrap(),
            Some(Duration::ZERO)
        );
        let spread = spread(vec![plain], 3).unwrap();
        assert_eq!(spread.len(), 3);
        for socket in &spread {
            assert_eq!(socket.local_addr().unwrap(), addr);
        }
        let _client = std::net::TcpStream::connect(addr).unwrap();
        spread[2].set_nonblocking(false).unwrap();
        assert!(
            spread[2].accept().is_ok(),
            "a duplicate accepts from the same queue"
        );

        let unlistened = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        unlistened
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let err = adopt(&unlistened.into()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_coexist() {
        let v4 = bind("0.0.0.0:0".parse().unwrap(), false, 16).unwrap();
        let port = v4.local_addr().unwrap().port();
        match bind(SocketAddr::new("::".parse().unwrap(), port), false, 16) {
            Ok(v6) => assert_eq!(v6.local_addr().unwrap().port(), port),
            // Hosts without IPv6 cannot bind [::]; nothing to check there.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {}
            Err(e) => panic!("binding [::]:{port} next to 0.0.0.0:{port}: {e}"),
        }
    }

    #[test]
    fn accepted_sockets_inherit_linger_zero() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), true, 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(
            socket2::SockRef::from(&accepted).linger().unwrap(),
            Some(Duration::ZERO),
            "the crash-safety of client sockets rests on this inheritance"
        );
    }
}
