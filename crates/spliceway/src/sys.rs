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
use std::mem::MaybeUninit;
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
    set_option(
        socket,
        libc::SOL_IPV6,
        libc::IPV6_TRANSPARENT,
        &(1 as libc::c_int),
    )
}

/// Sets `SO_RCVLOWAT`: the socket is reported readable only once this many bytes are queued
/// (or at end of stream / error). Used to move more bytes per wake-up while a transfer is in
/// bulk; it must be lowered again before a small exchange could stall behind it.
pub(crate) fn set_recv_low_water(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    let value: libc::c_int = bytes.clamp(1, libc::c_int::MAX as usize) as libc::c_int;
    set_option(socket, libc::SOL_SOCKET, libc::SO_RCVLOWAT, &value)
}

/// Sets `SO_MAX_PACING_RATE`: the kernel paces what the socket sends to at most `bytes_per_second`
/// (TCP paces on its own since Linux 4.13, without the fq qdisc); `u64::MAX` lifts it. How a
/// connection's own rate limit is enforced when nothing shared limits it (`docs/rate-limits.md`).
pub(crate) fn set_max_pacing_rate(socket: &impl AsFd, bytes_per_second: u64) -> io::Result<()> {
    // The kernel takes an unsigned long here since Linux 4.20 (a u32 before).
    set_option(
        socket,
        libc::SOL_SOCKET,
        libc::SO_MAX_PACING_RATE,
        &bytes_per_second,
    )
}

/// `setsockopt(level, name)` with `value` as the option's bytes: the one place the three
/// options above reach the kernel. `T` is the option's C type (`c_int`, or `u64` for an
/// unsigned long), a plain value with no padding the kernel could read.
fn set_option<T: Copy>(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed from a live socket for the duration of the call; the
    // option value points at a `T` borrowed for the call, and its size is the length we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
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

/// Most datagrams one `recvmmsg`/`sendmmsg` call moves: the headers of a call live in arrays of
/// this size on the stack, so that a batch allocates nothing.
pub(crate) const MAX_BATCH: usize = 32;

/// Most datagrams one `UDP_SEGMENT` send may carry: the kernel's `UDP_MAX_SEGMENTS`, 64 since
/// GSO for UDP came (Linux 4.18; later kernels allow 128, this is the floor of them all).
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Most payload bytes one `UDP_SEGMENT` send may carry, all its datagrams together: the send is
/// built as one IP packet before the kernel cuts it, so its payload obeys one datagram's limit
/// (65,535 bytes of IPv4 packet less 20 of IP header and 8 of UDP header; IPv6 allows 20 more,
/// the smaller bound is kept for both).
pub(crate) const MAX_SEGMENTED_BYTES: usize = 65_507;

/// Parts of one send of [`send_messages`] (iovecs), all messages of a call together.
const MAX_PARTS: usize = 4 * MAX_SEGMENTS;

/// One datagram received by [`recv_datagrams`]: its length in its slot, its sender (for an
/// unconnected socket), whether the kernel cut it to fit the slot, and, for a socket with
/// `UDP_GRO`, the size of the datagrams the kernel coalesced into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) from: Option<SocketAddr>,
    pub(crate) truncated: bool,
    /// Non-zero when the slot holds several datagrams the kernel coalesced (`UDP_GRO`): each
    /// is this long, the last one maybe shorter. Zero: the slot holds one datagram.
    pub(crate) segment: usize,
}

impl Received {
    pub(crate) const EMPTY: Received = Received {
        len: 0,
        from: None,
        truncated: false,
        segment: 0,
    };
}

/// Asks the kernel to coalesce datagrams of one sender into one receive (`UDP_GRO`, Linux
/// 5.0): then a train sent with `UDP_SEGMENT` arrives in one slot, its size in a control
/// message. Fails on kernels without it; the socket then receives one datagram a slot.
pub(crate) fn enable_udp_gro(socket: &impl AsFd) -> io::Result<()> {
    set_option(socket, libc::SOL_UDP, libc::UDP_GRO, &(1 as libc::c_int))
}

/// Whether the kernel sends trains of datagrams on `socket` (`UDP_SEGMENT`, Linux 4.18): asked
/// by setting the socket's default segment size to 0 (none), which changes nothing.
pub(crate) fn supports_udp_segment(socket: &impl AsFd) -> bool {
    set_option(
        socket,
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        &(0 as libc::c_int),
    )
    .is_ok()
}

/// Room for one control message of the relay's own: a `UDP_GRO` segment size received (an
/// `int`) or a `UDP_SEGMENT` size sent (a `u16`): `CMSG_SPACE(4)` is 24 bytes on 64-bit Linux.
/// Aligned as `struct cmsghdr` is, so the kernel may read and write it in place.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 32]);

const ZERO_CONTROL: Control = Control([0; 32]);

/// Bytes of a `struct cmsghdr` (`cmsg_len`, a `size_t`, then level and type, `int`s), which is
/// also where its data begins (`CMSG_DATA`; already aligned).
const CMSG_HEADER: usize = std::mem::size_of::<libc::cmsghdr>();

/// `CMSG_ALIGN`: control messages follow each other at `size_t` boundaries.
const fn cmsg_align(len: usize) -> usize {
    (len + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}

/// The `UDP_GRO` segment size among the first `len` bytes of control messages in `control`, if
/// the kernel wrote one. Read from the bytes (native order, as the kernel wrote them): no
/// pointer into the buffer is made.
fn gro_segment(control: &Control, len: usize) -> Option<usize> {
    let bytes = &control.0[..len.min(control.0.len())];
    let mut at = 0;
    while at + CMSG_HEADER <= bytes.len() {
        let word = std::mem::size_of::<usize>();
        let cmsg_len = usize::from_ne_bytes(bytes[at..at + word].try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(bytes[at + word..at + word + 4].try_into().ok()?);
        let kind = libc::c_int::from_ne_bytes(bytes[at + word + 4..at + word + 8].try_into().ok()?);
        if cmsg_len < CMSG_HEADER || at + cmsg_len > bytes.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == libc::UDP_GRO && cmsg_len >= CMSG_HEADER + 4 {
            let data = &bytes[at + CMSG_HEADER..at + CMSG_HEADER + 4];
            let size = libc::c_int::from_ne_bytes(data.try_into().ok()?);
            return usize::try_from(size).ok().filter(|&size| size > 0);
        }
        at += cmsg_align(cmsg_len);
    }
    None
}

/// Writes a `UDP_SEGMENT` control message for datagrams of `size` bytes into `control`;
/// returns the length to pass as `msg_controllen` (`CMSG_SPACE(2)`).
fn write_segment(control: &mut Control, size: u16) -> usize {
    let word = std::mem::size_of::<usize>();
    // The kernel checks cmsg_len == CMSG_LEN(sizeof(u16)).
    let cmsg_len = CMSG_HEADER + 2;
    control.0 = [0; 32];
    control.0[..word].copy_from_slice(&cmsg_len.to_ne_bytes());
    control.0[word..word + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    control.0[word + 4..word + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    control.0[CMSG_HEADER..CMSG_HEADER + 2].copy_from_slice(&size.to_ne_bytes());
    cmsg_align(cmsg_len)
}

// A zeroed address buffer: valid for every field (all are integers or arrays of them).
// SAFETY: `sockaddr_storage` is plain old data; all-zero bytes are a valid value of it.
const ZERO_STORAGE: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
// SAFETY: `mmsghdr` is plain data (integers and raw pointers); all-zero is a valid value (null
// pointers, zero lengths), and every header passed to the kernel is filled in before the call.
const ZERO_HEADER: libc::mmsghdr = unsafe { std::mem::zeroed() };

/// Receives up to `out.len()` datagrams (at most [`MAX_BATCH`]) with one `recvmmsg(2)`, without
/// blocking: datagram `i` goes to `buffers[i * slot ..][.. slot]` and is described by `out[i]`
/// (with its `UDP_GRO` segment size, on a socket that has it). Returns how many arrived;
/// `WouldBlock` when none is waiting. An error of a connected socket (`ECONNREFUSED`: an ICMP
/// port unreachable came back) is returned as such.
pub(crate) fn recv_datagrams(
    socket: &impl AsFd,
    buffers: &mut [u8],
    slot: usize,
    out: &mut [Received],
) -> io::Result<usize> {
    let n = out.len().min(MAX_BATCH).min(buffers.len() / slot.max(1));
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` entries of each array are filled in and given to the kernel: the
    // cost of a call grows with the datagrams it may take, not with MAX_BATCH.
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovecs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
    let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for (i, chunk) in buffers.chunks_exact_mut(slot).take(n).enumerate() {
        let name: *mut libc::sockaddr_storage = names[i].write(ZERO_STORAGE);
        let iovec: *mut libc::iovec = iovecs[i].write(libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: slot,
        });
        let control: *mut Control = controls[i].write(ZERO_CONTROL);
        let mut header = ZERO_HEADER;
        header.msg_hdr.msg_name = name.cast();
        header.msg_hdr.msg_namelen =
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = control.cast();
        header.msg_hdr.msg_controllen = std::mem::size_of::<Control>() as _;
        headers[i].write(header);
    }
    // SAFETY: `headers[..n]` are filled in above; each points at one iovec of `iovecs`, which
    // points at a distinct `slot`-byte chunk of `buffers` (a live, exclusively borrowed slice),
    // at one `sockaddr_storage` of `names` with its true size, and at one `Control` of
    // `controls` (8-byte aligned, as `cmsghdr` needs) with its true size; all of them outlive
    // the call. The kernel reads only the first `n` headers, and writes at most `iov_len` bytes
    // per chunk, `msg_namelen` bytes per name and `msg_controllen` bytes per control buffer,
    // and the lengths and flags into those headers. No timeout pointer is passed (null is
    // allowed).
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_fd().as_raw_fd(),
            headers.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (rc as usize).min(n);
    for i in 0..got {
        // SAFETY: entries below `n` (and `got <= n`) were written above, and the kernel only
        // wrote valid values into them (lengths, flags, address and control bytes).
        let (header, name, control) = unsafe {
            (
                headers[i].assume_init_ref(),
                names[i].assume_init_ref(),
                controls[i].assume_init_ref(),
            )
        };
        let len = (header.msg_len as usize).min(slot);
        // `size_t` with glibc, `socklen_t` with musl.
        #[allow(clippy::unnecessary_cast)]
        let control_len = header.msg_hdr.msg_controllen as usize;
        let segment = gro_segment(control, control_len)
            .filter(|&size| size < len)
            .unwrap_or(0);
        out[i] = Received {
            len,
            from: socket_addr(name, header.msg_hdr.msg_namelen),
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            segment,
        };
    }
    Ok(got)
}

/// One message of [`send_messages`]: one datagram, or a train of datagrams sent as one
/// `UDP_SEGMENT` send, to `to` (or to the connected peer when `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    /// The bytes, in order, in as many parts as they lie in memory.
    pub(crate) parts: &'a [&'a [u8]],
    /// `Some(size)`: the bytes are datagrams of `size` bytes each, the last one maybe shorter,
    /// and the kernel cuts them (at most [`MAX_SEGMENTS`] and [`MAX_SEGMENTED_BYTES`]).
    /// `None`: the bytes are one datagram.
    pub(crate) segment: Option<u16>,
    pub(crate) to: Option<SocketAddr>,
}

/// Sends `messages` with one `sendmmsg(2)`, without blocking: as many of them, from the first,
/// as fit one call ([`MAX_BATCH`] messages, 256 parts). Returns how many the kernel took;
/// `WouldBlock` when the socket's buffer is full, and the error of the first message when it
/// took none (`EINVAL`, `EIO` or `EMSGSIZE` for a train the socket or its route cannot send
/// segmented).
pub(crate) fn send_messages(socket: &impl AsFd, messages: &[Message<'_>]) -> io::Result<usize> {
    // As for receiving: only the entries used are filled in and given to the kernel.
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut iovecs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PARTS];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
    let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut n = 0;
    let mut parts_used = 0;
    for message in messages.iter().take(MAX_BATCH) {
        let parts = message.parts.len();
        if parts == 0 || parts_used + parts > MAX_PARTS {
            break;
        }
        for (iovec, part) in iovecs[parts_used..].iter_mut().zip(message.parts) {
            // The kernel only reads through a send's iovec; the pointer is `*mut` by its type.
            iovec.write(libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            });
        }
        let mut header = ZERO_HEADER;
        header.msg_hdr.msg_iov = iovecs[parts_used].as_mut_ptr();
        header.msg_hdr.msg_iovlen = parts as _;
        if let Some(to) = message.to {
            let name = names[n].write(ZERO_STORAGE);
            header.msg_hdr.msg_namelen = write_socket_addr(to, name);
            header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        }
        if let Some(size) = message.segment {
            let control = controls[n].write(ZERO_CONTROL);
            header.msg_hdr.msg_controllen = write_segment(control, size) as _;
            header.msg_hdr.msg_control = (control as *mut Control).cast();
        }
        headers[n].write(header);
        parts_used += parts;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `headers[..n]`, filled in above, each point at `msg_iovlen` consecutive iovecs of
    // `iovecs` (filled in above), each describing a live borrowed part (read only by the kernel
    // on send); for a message with an address, at one `sockaddr_storage` of `names` holding it with the length given; for a
    // train, at one aligned `Control` of `controls` holding one `UDP_SEGMENT` message of the
    // length given. Everything outlives the call. The kernel writes only `msg_len` fields.
    let rc = unsafe {
        libc::sendmmsg(
            socket.as_fd().as_raw_fd(),
            headers.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Sends `payloads` (at most [`MAX_BATCH`] of them) as one datagram each with one
/// `sendmmsg(2)`, without blocking, to `to` (or to the connected peer when `None`). Returns how
/// many were sent, from the first; `WouldBlock` when the socket's buffer is full.
#[cfg(test)]
pub(crate) fn send_datagrams(
    socket: &impl AsFd,
    payloads: &[&[u8]],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    let parts: Vec<[&[u8]; 1]> = payloads.iter().map(|p| [*p]).collect();
    let messages: Vec<Message<'_>> = parts
        .iter()
        .map(|parts| Message {
            parts,
            segment: None,
            to,
        })
        .collect();
    send_messages(socket, &messages)
}

/// The address in `storage` (of `len` bytes, as the kernel filled it), if it is IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, the kernel wrote at
            // least its size, and `sockaddr_storage` is aligned for every address type.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `storage` as the kernel expects it; returns its length.
fn write_socket_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let sockaddr = socket2::SockAddr::from(addr);
    let len = sockaddr.len();
    // SAFETY: `sockaddr` holds `len` valid bytes of a socket address, no more than a
    // `sockaddr_storage` (socket2 keeps one inside); `storage` is a distinct, writable
    // `sockaddr_storage`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sockaddr.as_ptr().cast::<u8>(),
            (storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        );
    }
    len
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

    #[test]
    fn datagrams_go_out_and_come_back_in_batches_with_their_sender() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payloads: [&[u8]; 3] = [b"one", b"", &[7u8; 1000]];
        let sent = send_datagrams(&a, &payloads, Some(b.local_addr().unwrap())).unwrap();
        assert_eq!(sent, 3);
        let mut buffers = vec![0u8; 4 * 2048];
        let mut out = [Received::EMPTY; 4];
        let mut got = 0;
        for _ in 0..100 {
            match recv_datagrams(&b, &mut buffers[got * 2048..], 2048, &mut out[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
            if got == 3 {
                break;
            }
        }
        assert_eq!(got, 3);
        for (i, payload) in payloads.iter().enumerate() {
            assert_eq!(out[i].from, Some(a.local_addr().unwrap()));
            assert_eq!(&buffers[i * 2048..][..out[i].len], *payload);
            assert!(!out[i].truncated);
        }
    }

    /// Receives until `want` slots arrived or 2 s passed.
    fn recv_slots(socket: &std::net::UdpSocket, want: usize) -> (Vec<u8>, Vec<Received>) {
        let slot = 65_536;
        let mut buffers = vec![0u8; want * slot];
        let mut out = vec![Received::EMPTY; want];
        let mut got = 0;
        let start = std::time::Instant::now();
        while got < want && start.elapsed() < std::time::Duration::from_secs(2) {
            match recv_datagrams(socket, &mut buffers[got * slot..], slot, &mut out[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
        }
        out.truncate(got);
        (buffers, out)
    }

    #[test]
    fn a_train_arrives_coalesced_on_a_gro_socket_and_as_datagrams_on_another() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if !supports_udp_segment(&a) {
            eprintln!("skipped: this kernel has no UDP_SEGMENT");
            return;
        }
        let gro = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_udp_gro(&gro).unwrap();
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bytes: Vec<u8> = (0..20 * 1000 + 300).map(|i| (i % 251) as u8).collect();
        // Two parts, cut in the middle of a datagram: the kernel cuts by the segment size.
        let parts: [&[u8]; 2] = [&bytes[..1500], &bytes[1500..]];
        for to in [gro.local_addr().unwrap(), plain.local_addr().unwrap()] {
            let message = Message {
                parts: &parts,
                segment: Some(1000),
                to: Some(to),
            };
            assert_eq!(send_messages(&a, &[message]).unwrap(), 1);
        }
        let (buffers, out) = recv_slots(&gro, 1);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].len, out[0].segment), (20_300, 1000), "coalesced");
        assert_eq!(&buffers[..20_300], &bytes[..]);
        let (buffers, out) = recv_slots(&plain, 21);
        assert_eq!(out.len(), 21);
        for (i, received) in out.iter().enumerate() {
            let expected = &bytes[i * 1000..(i * 1000 + 1000).min(bytes.len())];
            assert_eq!(received.segment, 0);
            assert_eq!(
                &buffers[i * 65_536..][..received.len],
                expected,
                "datagram {i}"
            );
        }
    }

    #[test]
    fn control_messages_are_read_and_written_as_the_kernel_lays_them_out() {
        let mut control = ZERO_CONTROL;
        let len = write_segment(&mut control, 1400);
        assert_eq!(len, 24, "CMSG_SPACE(2) on 64-bit Linux");
        assert_eq!(
            gro_segment(&control, len),
            None,
            "UDP_SEGMENT is not UDP_GRO"
        );
        // The same layout with UDP_GRO and an int: what the kernel writes on receive.
        let word = std::mem::size_of::<usize>();
        control.0[word + 4..word + 8].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        control.0[..word].copy_from_slice(&(CMSG_HEADER + 4).to_ne_bytes());
        control.0[CMSG_HEADER..CMSG_HEADER + 4].copy_from_slice(&1400i32.to_ne_bytes());
        assert_eq!(gro_segment(&control, 24), Some(1400));
        assert_eq!(gro_segment(&control, 8), None, "cut short");
    }

    #[test]
    fn a_datagram_larger_than_its_slot_is_marked_truncated() {
        let a = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let b = std::net::UdpSocket::bind("[::1]:0").unwrap();
        a.send_to(&[1u8; 100], b.local_addr().unwrap()).unwrap();
        let mut buffers = vec![0u8; 64];
        let mut out = [Received::EMPTY; 1];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut peek = [0u8; 1];
        b.peek(&mut peek).unwrap();
        assert_eq!(recv_datagrams(&b, &mut buffers, 64, &mut out).unwrap(), 1);
        assert!(out[0].truncated);
        assert_eq!(out[0].from, Some(a.local_addr().unwrap()));
    }
}
