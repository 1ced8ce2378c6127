//! The splice engine: moves bytes socket -> pipe -> socket without copying them to user space.
//!
//! Each call asks for a bounded length — the pipe's free room, or what it holds — never
//! `usize::MAX`: newer kernels answer such lengths with `EINVAL`, which a relay would take for
//! "splice unsupported" and fall back to copying (the bug that kept another Rust relay copying
//! for months). Both calls pass `SPLICE_F_NONBLOCK` (the pipe never blocks) on top of the
//! sockets' own `O_NONBLOCK`, and `SPLICE_F_MOVE` (a hint; pages are moved where the kernel can).
//!
//! Results are a [`Transfer`], not raw integers; `EINTR` is retried here; every other error is
//! returned for `direction_io.rs` to classify (reset, unsupported, failure).

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{SpliceFFlags, splice};

use crate::transfer::pipe::Pipe;

/// What one read or write moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// This many bytes (never zero).
    Moved(usize),
    /// Nothing now: the source is empty, or the destination (socket or pipe) is full.
    WouldBlock,
    /// The source reached end of stream (reads only).
    EndOfStream,
}

/// How many times an interrupted call is retried before we give the event loop a turn.
const EINTR_RETRIES: usize = 8;

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Splices up to `len` bytes from `socket` into `pipe`.
pub(crate) fn socket_to_pipe(socket: &impl AsFd, pipe: &Pipe, len: usize) -> io::Result<Transfer> {
    debug_assert!(len > 0 && len <= pipe.capacity());
    retry_interrupted(
        || splice(socket, None, pipe.write_end(), None, len, flags()),
        true,
    )
}

/// Splices up to `len` bytes (at most what the pipe holds) from `pipe` into `socket`.
pub(crate) fn pipe_to_socket(pipe: &Pipe, socket: &impl AsFd, len: usize) -> io::Result<Transfer> {
    debug_assert!(len > 0 && len <= pipe.capacity());
    retry_interrupted(
        || splice(pipe.read_end(), None, socket, None, len, flags()),
        false,
    )
}

/// Runs a pipe or splice call, retrying `EINTR` a bounded number of times and mapping its
/// result onto a [`Transfer`]: `EAGAIN` is "nothing now".
pub(crate) fn retry_interrupted(
    mut call: impl FnMut() -> nix::Result<usize>,
    zero_is_end: bool,
) -> io::Result<Transfer> {
    for _ in 0..EINTR_RETRIES {
        return match call() {
            Ok(0) if zero_is_end => Ok(Transfer::EndOfStream),
            // A write of zero bytes only happens if the pipe was empty, which the caller never
            // asks for; report it as "nothing now" rather than loop on it.
            Ok(0) => Ok(Transfer::WouldBlock),
            Ok(n) => Ok(Transfer::Moved(n)),
            Err(Errno::EAGAIN) => Ok(Transfer::WouldBlock),
            Err(Errno::EINTR) => continue,
            Err(errno) => Err(io::Error::from(errno)),
        };
    }
    Ok(Transfer::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn moves_bytes_through_the_pipe_and_reports_end_of_stream() {
        let (pipe, _) = Pipe::new(64 * 1024).unwrap();
        let (mut client, relay_in) = socket_pair();
        let (relay_out, mut server) = socket_pair();
        assert_eq!(
            socket_to_pipe(&relay_in, &pipe, pipe.capacity()).unwrap(),
            Transfer::WouldBlock
        );
        client.write_all(b"hello, splice").unwrap();
        let mut moved = 0;
        for _ in 0..1000 {
            if let Transfer::Moved(n) = socket_to_pipe(&relay_in, &pipe, pipe.capacity()).unwrap() {
                moved += n;
            }
            if moved == 13 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(moved, 13);
        assert_eq!(pipe.unread_bytes().unwrap(), 13);
        assert_eq!(
            pipe_to_socket(&pipe, &relay_out, 13).unwrap(),
            Transfer::Moved(13)
        );
        server.set_nonblocking(false).unwrap();
        let mut got = [0u8; 13];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, splice");

        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut end = None;
        for _ in 0..1000 {
            match socket_to_pipe(&relay_in, &pipe, pipe.capacity()).unwrap() {
                Transfer::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => {
                    end = Some(other);
                    break;
                }
            }
        }
        assert_eq!(end, Some(Transfer::EndOfStream));
    }

    #[test]
    fn writing_to_a_reset_peer_is_an_error() {
        let (pipe, _) = Pipe::new(64 * 1024).unwrap();
        let (mut client, relay_in) = socket_pair();
        let (relay_out, server) = socket_pair();
        socket2::SockRef::from(&server)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(server);
        client.write_all(&[7u8; 1000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(matches!(
            socket_to_pipe(&relay_in, &pipe, pipe.capacity()).unwrap(),
            Transfer::Moved(_)
        ));
        let err = pipe_to_socket(&pipe, &relay_out, 1000).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ECONNRESET) | Some(libc::EPIPE)
            ),
            "{err}"
        );
    }
}
