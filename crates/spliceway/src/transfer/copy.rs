//! The copy engine: moves bytes socket -> user-space buffer -> socket with `recv`/`send`.
//!
//! It is the fallback when splice is unsupported for a socket and the baseline the benchmark
//! compares splice against (it is what stone, socat and most relays do). It keeps the same
//! contract as [`crate::transfer::splice`]: bounded lengths, [`Transfer`] results, `EINTR` retried, every
//! other error returned for the caller to classify.
//!
//! Sockets are written with `send(MSG_NOSIGNAL)` (what std does on Linux), so a closed peer is an
//! `EPIPE` error, never a `SIGPIPE`, even when the embedding program has not ignored SIGPIPE.

use std::io::{self, Read, Write};

use crate::transfer::splice::Transfer;

/// A fixed-size byte buffer with a filled region `start..end`.
#[derive(Debug)]
pub(crate) struct HeapBuffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

const EINTR_RETRIES: usize = 8;

impl HeapBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        HeapBuffer {
            data: vec![0u8; capacity.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Reads up to `len` bytes from `src` into the free room.
    #[cfg(test)]
    pub(crate) fn fill_from(&mut self, src: &mut impl Read, len: usize) -> io::Result<Transfer> {
        self.fill_reporting(src, len).map(|(transfer, _)| transfer)
    }

    /// Reads up to `len` bytes from `src` into the free room, and tells whether the read
    /// returned fewer bytes than it asked for (the source held no more).
    pub(crate) fn fill_reporting(
        &mut self,
        src: &mut impl Read,
        len: usize,
    ) -> io::Result<(Transfer, bool)> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.data.len() {
            // Compact so the free room is contiguous; at most one buffer's worth, and only when
            // the writer lags behind.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = (self.data.len() - self.end).min(len);
        debug_assert!(room > 0);
        let target = &mut self.data[self.end..self.end + room];
        for _ in 0..EINTR_RETRIES {
            return match src.read(target) {
                Ok(0) => Ok((Transfer::EndOfStream, false)),
                Ok(n) => {
                    self.end += n;
                    Ok((Transfer::Moved(n), n < room))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Ok((Transfer::WouldBlock, false))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
        Ok((Transfer::WouldBlock, false))
    }

    /// Writes up to `len` buffered bytes to `dst`.
    pub(crate) fn drain_to(&mut self, dst: &mut impl Write, len: usize) -> io::Result<Transfer> {
        let len = len.min(self.len());
        let source = &self.data[self.start..self.start + len];
        for _ in 0..EINTR_RETRIES {
            return match dst.write(source) {
                Ok(0) => Ok(Transfer::WouldBlock),
                Ok(n) => {
                    self.start += n;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    Ok(Transfer::Moved(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Transfer::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
        Ok(Transfer::WouldBlock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes in chunks and then would block or end.
    struct Chunks {
        data: Vec<u8>,
        chunk: usize,
        then_end: bool,
    }

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return if self.then_end {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.chunk).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    /// A writer that accepts a limited number of bytes per call.
    struct Slow {
        out: Vec<u8>,
        per_call: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.per_call == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_come_out_in_order_across_compaction() {
        let input: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut src = Chunks {
            data: input.clone(),
            chunk: 700,
            then_end: true,
        };
        let mut dst = Slow {
            out: Vec::new(),
            per_call: 300,
        };
        let mut buf = HeapBuffer::new(1024);
        let mut ended = false;
        for _ in 0..10_000 {
            if !ended && buf.len() < buf.capacity() {
                let room = buf.capacity() - buf.len();
                if buf.fill_from(&mut src, room).unwrap() == Transfer::EndOfStream {
                    ended = true;
                }
            }
            if buf.len() > 0 {
                buf.drain_to(&mut dst, usize::MAX).unwrap();
            }
            if ended && buf.len() == 0 {
                break;
            }
        }
        assert!(ended);
        assert_eq!(dst.out, input);
    }

    #[test]
    fn would_block_is_not_an_error() {
        let mut src = Chunks {
            data: vec![],
            chunk: 1,
            then_end: false,
        };
        let mut buf = HeapBuffer::new(16);
        assert_eq!(buf.fill_from(&mut src, 16).unwrap(), Transfer::WouldBlock);
        let mut dst = Slow {
            out: vec![],
            per_call: 0,
        };
        src.data = vec![1, 2, 3];
        assert_eq!(buf.fill_from(&mut src, 16).unwrap(), Transfer::Moved(1));
        assert_eq!(buf.drain_to(&mut dst, 16).unwrap(), Transfer::WouldBlock);
        assert_eq!(buf.len(), 1);
    }
}
