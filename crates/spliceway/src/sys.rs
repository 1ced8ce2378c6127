//! The few system calls that neither std, nix nor socket2 wrap safely, and the socket options
//! of interception, which they wrap only in part (`SO_ORIGINAL_DST` and `IP_TRANSPARENT` are
//! theirs; `IPV6_TRANSPARENT` is ours).
//!
//! This is the only module of the crate allowed to use `unsafe` (the workspace denies it
//! elsewhere). Each block says why it is sound. Everything else — `splice`, `pipe2`,
//! `F_SETPIPE_SZ`, socket options — goes through nix's and socket2's safe wrappers, which take
//! `AsFd` and return `OwnedFd`, so no descriptor in this crate is ever closed by hand.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{getsockopt, sockopt};

/// The address a connection redirected by nftables/iptables `REDIRECT` or `DNAT` was
/// originally sent to, from connection tracking: `SO_ORIGINAL_DST` for an IPv4 socket,
/// `IP6T_SO_ORIGINAL_DST` for an IPv6 one (`ipv6`: the accepted socket's family). Fails with
/// `ENOENT` when the connection is not tracked (no nat rule has seen it).
pub(crate) fn original_destination(socket: &impl AsFd, ipv6: bool) -> io::Result<SocketAddr> {
    if ipv6 {
        let raw = getsockopt(socket, sockopt::Ip6tOriginalDst)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            std::net::Ipv6Addr::from(raw.sin6_addr.s6_addr),
            u16::from_be(raw.sin6_port),
            u32::from_be(raw.sin6_flowinfo),
            raw.sin6_scope_id,
        )))
    } else {
        let raw = getsockopt(socket, sockopt::OriginalDst)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            std::net::Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
            u16::from_be(raw.sin_port),
        )))
    }
}

/// Sets `IP_TRANSPARENT` (and, on an IPv6 socket, `IPV6_TRANSPARENT`; needs `CAP_NET_ADMIN`):
/// a listener then accepts what `TPROXY` delivers to it, and an upstream socket may bind an
/// address that is not the host's (the client's).
pub(crate) fn set_transparent(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if !ipv6 {
        return socket2::SockRef::from(socket).set_ip_transparent_v4(true);
    }
    let value: libc::c_int = 1;
    // SAFETY: the descriptor is borrowed from a live socket for the duration of the call; the
    // option value points at a local `c_int` whose size we pass, as IPV6_TRANSPARENT expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `SO_RCVLOWAT`: the socket is reported readable only once this many bytes are queued
/// (or at end of stream / error). Used to move more bytes per wake-up while a transfer is in
/// bulk; it must be lowered again before a small exchange could stall behind it.
pub(crate) fn set_recv_low_water(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    let value: libc::c_int = bytes.clamp(1, libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: the descriptor is borrowed from a live socket for the duration of the call; the
    // option value points at a local `c_int` whose size we pass, as SO_RCVLOWAT expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes waiting to be read from a descriptor (`FIONREAD`): for a pipe, how much it holds.
/// Only used to check the engine's own accounting in tests.
#[cfg(test)]
pub(crate) fn unread_bytes(fd: &impl AsFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    // SAFETY: the descriptor is borrowed from a live object; FIONREAD writes one `c_int` through
    // the pointer, which points at a local of that type.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut value) };
    if rc == 0 {
        Ok(value.max(0) as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unread_bytes_counts_pipe_contents() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"hello").unwrap();
        assert_eq!(unread_bytes(&r).unwrap(), 5);
    }

    fn recv_low_water(socket: &impl AsFd) -> io::Result<usize> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both pointers point at locals of the sizes the kernel is told.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value as usize)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[test]
    fn an_untracked_connection_has_no_original_destination() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Without a nat rule conntrack may not track the flow at all (ENOENT), or track it
        // unchanged (then the original destination is the listener itself): never another.
        match original_destination(&accepted, false) {
            Ok(addr) => assert_eq!(addr, listener.local_addr().unwrap()),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
    }

    #[test]
    fn transparent_is_set_or_refused_for_want_of_the_capability() {
        for (addr, ipv6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let Ok(listener) = std::net::TcpListener::bind(addr) else {
                continue; // no IPv6 on this host
            };
            match set_transparent(&listener, ipv6) {
                Ok(()) if ipv6 => {}
                Ok(()) => assert!(
                    socket2::SockRef::from(&listener)
                        .ip_transparent_v4()
                        .unwrap()
                ),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
            }
        }
    }

    #[test]
    fn recv_low_water_is_applied() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(recv_low_water(&stream).unwrap(), 1);
        set_recv_low_water(&stream, 4096).unwrap();
        assert_eq!(recv_low_water(&stream).unwrap(), 4096);
    }
}
