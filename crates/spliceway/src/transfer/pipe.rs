//! Kernel pipes: the buffers that splice(2) moves socket data through.
//!
//! Invariants:
//!
//! - both ends are created non-blocking and close-on-exec (`pipe2(O_NONBLOCK | O_CLOEXEC)`), and
//!   are `OwnedFd`s from the moment they exist, so they close exactly once, when the [`Pipe`] is
//!   dropped;
//! - the capacity is read back with `F_GETPIPE_SZ` after `F_SETPIPE_SZ`, because the kernel
//!   rounds the size up to a power-of-two number of pages and may refuse to grow it;
//! - a pipe that still holds bytes is never handed to another connection (see
//!   [`crate::transfer::buffer`]): the bytes would leak from one connection into another.
//!
//! Growing a pipe fails with `EPERM` once the user owns more pipe pages than
//! `/proc/sys/fs/pipe-user-pages-soft` (and `EINVAL` above `/proc/sys/fs/pipe-max-size`); the pipe
//! then keeps its default or smaller size. That is not an error of the connection: the caller
//! logs it once, counts it and relays with the smaller pipe.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Smallest pipe we ask for: one page. Pipes never hold less.
pub(crate) const MIN_PIPE_SIZE_BYTES: usize = 4096;

/// A pipe: a read end and a write end, with the capacity the kernel granted.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    /// Page slots (`capacity` / page size): the most segments the pipe can hold.
    slots: usize,
}

/// How the pipe's size request went.
#[derive(Debug)]
pub(crate) enum Sizing {
    /// The kernel granted at least the requested size.
    Granted,
    /// The kernel refused to grow the pipe; it has `capacity` bytes instead.
    Refused {
        /// Why `F_SETPIPE_SZ` failed.
        error: io::Error,
    },
}

impl Pipe {
    /// Creates a non-blocking, close-on-exec pipe of (at least) `requested` bytes.
    ///
    /// # Errors
    ///
    /// Only if no pipe can be created at all (`EMFILE`, `ENFILE`). A refused resize is reported
    /// as [`Sizing::Refused`] next to a working, smaller pipe.
    pub(crate) fn new(requested: usize) -> io::Result<(Pipe, Sizing)> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let requested = requested.clamp(MIN_PIPE_SIZE_BYTES, i32::MAX as usize);
        let sizing = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(requested as libc::c_int)) {
            Ok(_) => Sizing::Granted,
            Err(errno) => Sizing::Refused {
                error: io::Error::from(errno),
            },
        };
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)? as usize;
        // glibc answers from the auxiliary vector, no system call. Should it fail, one slot:
        // then no read is ever taken for a drained socket (see `Pipe::had_room_after`).
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .filter(|&p| p > 0)
            .unwrap_or(capacity);
        Ok((
            Pipe {
                read,
                write,
                capacity,
                slots: (capacity / page).max(1),
            },
            sizing,
        ))
    }

    /// Capacity in bytes, as the kernel reports it. Splicing from a socket can fill the pipe's
    /// page slots with less than a page each, so the pipe may refuse bytes before it holds this
    /// many; the engine therefore treats this as an upper bound, not a promise.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether a pipe holding `held` bytes after a splice into it cannot have run out of page
    /// slots: each occupied slot holds at least one byte, so fewer bytes than slots leaves a
    /// slot free. A splice from a socket that stopped short of what it was asked for with a
    /// slot still free stopped because the socket had nothing more (a non-blocking TCP splice
    /// takes everything queued in one pass unless the pipe fills).
    pub(crate) fn had_room_after(&self, held: usize) -> bool {
        held < self.slots
    }

    /// The end data is spliced out of.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The end data is spliced into.
    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Bytes the kernel says the pipe holds (`FIONREAD`); for checks, not for the hot path.
    #[cfg(test)]
    pub(crate) fn unread_bytes(&self) -> io::Result<usize> {
        crate::sys::unread_bytes(&self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_is_resized_and_read_back() {
        let (pipe, sizing) = Pipe::new(256 * 1024).unwrap();
        assert!(matches!(sizing, Sizing::Granted), "{sizing:?}");
        assert_eq!(pipe.capacity(), 256 * 1024);
        assert_eq!(pipe.unread_bytes().unwrap(), 0);
    }

    #[test]
    fn slots_are_pages() {
        let (pipe, _) = Pipe::new(64 * 1024).unwrap();
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .unwrap()
            .unwrap() as usize;
        let slots = pipe.capacity() / page;
        assert!(pipe.had_room_after(slots - 1));
        assert!(!pipe.had_room_after(slots));
    }

    #[test]
    fn odd_sizes_round_up_to_pages() {
        let (pipe, _) = Pipe::new(100_000).unwrap();
        assert!(pipe.capacity() >= 100_000);
        assert_eq!(pipe.capacity() % 4096, 0);
    }

    #[test]
    fn ends_are_nonblocking_and_cloexec() {
        let (pipe, _) = Pipe::new(MIN_PIPE_SIZE_BYTES).unwrap();
        for fd in [pipe.read_end(), pipe.write_end()] {
            let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
            assert!(fl.contains(OFlag::O_NONBLOCK));
            let fdfl =
                nix::fcntl::FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(fdfl.contains(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
    }
}
