//! The few system calls that neither std, nix nor socket2 wrap safely.
//!
//! This is the only module of the crate allowed to use `unsafe` (the workspace denies it
//! elsewhere). Each block says why it is sound. Everything else — `splice`, `pipe2`,
//! `F_SETPIPE_SZ`, socket options — goes through nix's and socket2's safe wrappers, which take
//! `AsFd` and return `OwnedFd`, so no descriptor in this crate is ever closed by hand.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

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

/// Sets `SO_MAX_PACING_RATE`: the kernel paces what the socket sends to at most `bytes_per_second`
/// (TCP paces on its own since Linux 4.13, without the fq qdisc). Used only to compare kernel
/// pacing with the relay's token buckets (`docs/rate-limits.md`).
pub(crate) fn set_max_pacing_rate(socket: &impl AsFd, bytes_per_second: u64) -> io::Result<()> {
    // The kernel takes an unsigned long here since Linux 4.20 (a u32 before).
    let value: u64 = bytes_per_second;
    // SAFETY: the descriptor is borrowed from a live socket for the duration of the call; the
    // option value points at a local `u64` whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&value as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
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
    fn the_kernel_takes_a_pacing_rate() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_max_pacing_rate(&socket, 75_000_000).unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(set_max_pacing_rate(&r, 1).is_err(), "not a socket");
    }

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
    fn recv_low_water_is_applied() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(recv_low_water(&stream).unwrap(), 1);
        set_recv_low_water(&stream, 4096).unwrap();
        assert_eq!(recv_low_water(&stream).unwrap(), 4096);
    }
}
