//! Bytes a program already read from a socket before it handed the connection over
//! ([`Adoption::client_bytes`](crate::Adoption::client_bytes),
//! [`Adoption::upstream_bytes`](crate::Adoption::upstream_bytes)).
//!
//! They belong in front of whatever the socket still holds, so a direction reads them first:
//! while a direction has handed-over bytes left, its reads take from them instead of from its
//! source socket, into the same buffer (written into the pipe, or copied into the user-space
//! buffer), and its writes move them on like any other bytes. Nothing else changes: the state
//! machine bounds each read by the buffer's free room, so any length is fine, partial writes are
//! the usual partial writes, and the bytes count as payload where they are written. The
//! source's readiness latch starts set and a read that moves bytes never clears it, so the
//! socket is read as soon as the handed-over bytes are gone.

use std::io;

use crate::transfer::buffer::Buffer;
use crate::transfer::splice::Transfer;

/// One direction's handed-over bytes and how many of them are in its buffer already.
#[derive(Debug, Default)]
pub(crate) struct HandedOver {
    bytes: Vec<u8>,
    taken: usize,
}

impl HandedOver {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        HandedOver { bytes, taken: 0 }
    }

    /// Whether every byte has entered the buffer (or there were none): reads go to the socket.
    pub(crate) fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    /// Puts up to `len` of the remaining bytes into `buffer` (bounded by its free room).
    pub(crate) fn fill(&mut self, buffer: &mut Buffer, len: usize) -> io::Result<Transfer> {
        let rest = &self.bytes[self.taken..];
        let len = len.min(buffer.capacity() - buffer.len()).min(rest.len());
        if len == 0 {
            return Ok(Transfer::WouldBlock);
        }
        let chunk = &rest[..len];
        let result = match buffer {
            Buffer::Pipe { pipe, held, .. } => {
                let result = write_to_pipe(pipe.write_end(), chunk)?;
                if let Transfer::Moved(n) = result {
                    *held += n;
                }
                result
            }
            Buffer::Heap(heap) => heap.fill_reporting(&mut &*chunk, len)?.0,
        };
        if let Transfer::Moved(n) = result {
            self.taken += n;
            if self.is_empty() {
                // The memory is the program's handshake leftovers: give it back now.
                self.bytes = Vec::new();
                self.taken = 0;
            }
        }
        Ok(result)
    }
}

/// `write(2)` into a non-blocking pipe: `EAGAIN` (full, in bytes or in page slots) is
/// "nothing now".
fn write_to_pipe(pipe: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> io::Result<Transfer> {
    crate::transfer::splice::retry_interrupted(|| nix::unistd::write(pipe, bytes), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::copy::HeapBuffer;
    use crate::transfer::pipe::Pipe;

    fn pipe_buffer(size: usize) -> Buffer {
        let (pipe, _) = Pipe::new(size).unwrap();
        Buffer::Pipe {
            pipe,
            held: 0,
            full_size: true,
        }
    }

    /// Drains a pipe buffer's bytes with read(2), as the test's stand-in for the destination.
    fn drain(buffer: &mut Buffer) -> Vec<u8> {
        let Buffer::Pipe { pipe, held, .. } = buffer else {
            panic!("a pipe buffer");
        };
        let mut out = vec![0; *held];
        let n = nix::unistd::read(pipe.read_end(), &mut out).unwrap();
        out.truncate(n);
        *held -= n;
        out
    }

    #[test]
    fn bytes_longer_than_the_pipe_come_out_whole_and_in_order() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut handed = HandedOver::new(bytes.clone());
        let mut buffer = pipe_buffer(4096);
        let mut out = Vec::new();
        let mut rounds = 0;
        while !handed.is_empty() {
            rounds += 1;
            assert!(rounds < 1000, "no progress");
            let room = buffer.capacity() - buffer.len();
            match handed.fill(&mut buffer, room).unwrap() {
                Transfer::Moved(n) => assert!(n <= room),
                other => panic!("{other:?} into an empty pipe"),
            }
            out.extend(drain(&mut buffer));
        }
        assert!(rounds > 1, "the pipe is smaller than the bytes");
        assert_eq!(out, bytes);
        assert_eq!(
            handed.fill(&mut buffer, 10).unwrap(),
            Transfer::WouldBlock,
            "nothing left"
        );
    }

    #[test]
    fn a_full_buffer_takes_nothing_and_loses_nothing() {
        let mut handed = HandedOver::new(b"hello, world".to_vec());
        let mut buffer = Buffer::Heap(HeapBuffer::new(5));
        assert_eq!(handed.fill(&mut buffer, 100).unwrap(), Transfer::Moved(5));
        assert_eq!(handed.fill(&mut buffer, 100).unwrap(), Transfer::WouldBlock);
        assert!(!handed.is_empty());
        let mut out = Vec::new();
        let Buffer::Heap(heap) = &mut buffer else {
            unreachable!()
        };
        heap.drain_to(&mut out, 5).unwrap();
        assert_eq!(handed.fill(&mut buffer, 100).unwrap(), Transfer::Moved(5));
        let Buffer::Heap(heap) = &mut buffer else {
            unreachable!()
        };
        heap.drain_to(&mut out, 5).unwrap();
        assert_eq!(handed.fill(&mut buffer, 100).unwrap(), Transfer::Moved(2));
        let Buffer::Heap(heap) = &mut buffer else {
            unreachable!()
        };
        heap.drain_to(&mut out, 5).unwrap();
        assert!(handed.is_empty());
        assert_eq!(out, b"hello, world");
    }
}
