//! The per-direction state machine, free of I/O.
//!
//! A connection has two directions: client -> upstream and upstream -> client. Each moves bytes
//! from a source socket into a buffer (a pipe, or a user-space buffer in copy mode) and from the
//! buffer into a destination socket. This module decides *what to do next* from what is known
//! (readiness seen, bytes buffered, end of stream, failures) and learns from the outcome of each
//! operation; the connection module (`connection/` and `direction_io.rs`) performs the
//! operations. Keeping the two apart lets the decisions be tested exhaustively without sockets
//! (see the tests here and the model-based tests in `tests/direction_model.rs`).
//!
//! ```text
//!            read n / write n                 write n (buffered > 0)
//!            +-------------+                  +-------------+
//!            v             |                  v             |
//!   ---> [ Open ] --end of stream--> [ Draining ] ----------+
//!            |                            |  buffered == 0: shutdown(SHUT_WR) on the destination
//!            |                            v
//!            |                        [ Shut ]   (this direction is finished)
//!            |
//!            +--- reset / write failure (any state) ---> [ Aborted ]
//! ```
//!
//! Rules that keep edge-triggered readiness from being lost and memory bounded:
//!
//! - readiness is a latch: set by an event, cleared only by an operation that answers
//!   "would block" (mio's rule for edge-triggered epoll);
//! - a read that would block while the buffer holds bytes may mean the pipe is full in page
//!   slots rather than the socket empty, so it does not clear the source's readiness: reading is
//!   only paused (`read_stalled`) until a write frees room;
//! - reads never ask for more than the buffer's free room, so a direction holds at most one
//!   buffer's worth of bytes whatever the peers do;
//! - writes come before reads when both are possible, so bytes leave as soon as they arrive and
//!   the buffer empties (and can be returned to the pool) as often as possible;
//! - `shutdown(SHUT_WR)` is sent only once the buffer is empty after end of stream;
//! - a read that the I/O half knows took everything the source held (it returned less than
//!   asked while the buffer still had room: [`Direction::source_drained`]) clears the source's
//!   readiness without the extra read that would answer "would block": under edge-triggered
//!   epoll the next arrival raises a new event. Except once the peer announced its end of stream
//!   (`EPOLLRDHUP`, [`Direction::source_closing`]): the end of stream may already be queued
//!   behind the bytes just read, and no further event would announce it, so the direction
//!   keeps reading until it reads the end.

/// Where a direction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Moving bytes; the source has not ended.
    Open,
    /// The source ended; bytes still buffered are being written out.
    Draining,
    /// End of stream was passed on (`shutdown(SHUT_WR)` on the destination). Finished.
    Shut,
    /// A peer reset or an operation failed. Finished; the connection is reset on both sides.
    Aborted,
}

/// The next operation a direction wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read at most `room` bytes from the source into the buffer.
    Read {
        /// Free room in the buffer, in bytes (never zero).
        room: usize,
    },
    /// Write at most `len` buffered bytes to the destination.
    Write {
        /// Bytes buffered (never zero).
        len: usize,
    },
    /// Send end of stream to the destination (`shutdown(SHUT_WR)`).
    Shutdown,
    /// Nothing to do until a readiness event arrives.
    Wait,
    /// The direction is finished ([`Phase::Shut`] or [`Phase::Aborted`]).
    Finished,
}

/// Which end of a direction an outcome concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The socket bytes are read from.
    Source,
    /// The socket bytes are written to.
    Destination,
}

/// How a direction was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    /// The end whose operation failed.
    pub end: End,
    /// Whether the failure was the peer resetting (or having gone: `EPIPE`), as opposed to
    /// another error (timeout, out of memory ...).
    pub reset: bool,
}

/// What a read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes entered the buffer (never zero).
    Moved(usize),
    /// Nothing to read now, or the buffer refused more.
    WouldBlock,
    /// The source sent end of stream.
    EndOfStream,
    /// The read failed; `reset` as in [`Abort`].
    Failed {
        /// The peer reset the connection.
        reset: bool,
    },
}

/// What a write (or a shutdown) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// This many bytes left the buffer (never zero; zero for a completed shutdown).
    Moved(usize),
    /// The destination's send buffer is full.
    WouldBlock,
    /// The write failed; `reset` as in [`Abort`].
    Failed {
        /// The peer reset the connection or had gone (`EPIPE`).
        reset: bool,
    },
}

/// One direction of a relayed connection: the decisions, none of the I/O.
#[derive(Debug, Clone)]
pub struct Direction {
    phase: Phase,
    source_ready: bool,
    destination_ready: bool,
    read_stalled: bool,
    /// The peer announced its end of stream (`EPOLLRDHUP`): never clear the source latch on
    /// a short read, only on "would block" or the end itself.
    source_closing: bool,
    buffered: usize,
    capacity: usize,
    bytes_read: u64,
    bytes_written: u64,
    abort: Option<Abort>,
}

impl Direction {
    /// A new direction whose buffer holds up to `capacity` bytes. Both ends start as ready:
    /// readiness that arrived before the direction started must not be lost, and a wrong guess
    /// costs one operation that answers "would block".
    ///
    /// # Panics
    ///
    /// If `capacity` is 0: a direction that can hold nothing could never move a byte.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "a direction needs a buffer of at least one byte"
        );
        Direction {
            phase: Phase::Open,
            source_ready: true,
            destination_ready: true,
            read_stalled: false,
            source_closing: false,
            buffered: 0,
            capacity,
            bytes_read: 0,
            bytes_written: 0,
            abort: None,
        }
    }

    /// The next operation to perform.
    #[must_use]
    pub fn next_step(&self) -> Step {
        match self.phase {
            Phase::Shut | Phase::Aborted => Step::Finished,
            Phase::Open => {
                if self.buffered > 0 && self.destination_ready {
                    Step::Write { len: self.buffered }
                } else if self.source_ready && !self.read_stalled && self.buffered < self.capacity {
                    Step::Read {
                        room: self.capacity - self.buffered,
                    }
                } else {
                    Step::Wait
                }
            }
            Phase::Draining => {
                if self.buffered == 0 {
                    Step::Shutdown
                } else if self.destination_ready {
                    Step::Write { len: self.buffered }
                } else {
                    Step::Wait
                }
            }
        }
    }

    /// A readiness event said the source may be readable (or has ended, or failed).
    pub fn source_ready(&mut self) {
        self.source_ready = true;
    }

    /// The source is known to hold nothing more: the last read returned fewer bytes than asked
    /// for while the buffer had room for more (so it was not the buffer that stopped it), or
    /// the socket has had no readable event since it was registered. Under edge-triggered
    /// readiness the next arrival raises a new event, so the latch is cleared without the read
    /// that would answer "would block" — unless the peer announced its end of stream
    /// ([`Direction::source_closing`]), which may be queued behind the bytes just read with no
    /// event still to come.
    pub fn source_drained(&mut self) {
        if !self.source_closing {
            self.source_ready = false;
        }
    }

    /// A readiness event said the peer has ended its side (`EPOLLRDHUP`): from now on only
    /// "would block" or the end of stream itself clears the source's readiness.
    pub fn source_closing(&mut self) {
        self.source_closing = true;
        self.source_ready = true;
    }

    /// A readiness event said the destination may be writable (or failed).
    pub fn destination_ready(&mut self) {
        self.destination_ready = true;
    }

    /// The buffer changed capacity (a pipe may be granted less than asked for). Only allowed
    /// while it is empty, when a buffer is taken from the pool.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (and, in debug builds, if the buffer is not empty).
    pub fn set_capacity(&mut self, capacity: usize) {
        debug_assert_eq!(self.buffered, 0);
        assert!(capacity > 0);
        self.capacity = capacity;
    }

    /// Learns from a read.
    pub fn on_read(&mut self, outcome: ReadOutcome) {
        if self.phase != Phase::Open {
            return;
        }
        match outcome {
            ReadOutcome::Moved(n) => {
                debug_assert!(n > 0 && self.buffered + n <= self.capacity);
                self.buffered += n;
                self.bytes_read += n as u64;
            }
            ReadOutcome::WouldBlock if self.buffered > 0 => self.read_stalled = true,
            ReadOutcome::WouldBlock => self.source_ready = false,
            ReadOutcome::EndOfStream => {
                self.source_ready = false;
                self.phase = Phase::Draining;
            }
            ReadOutcome::Failed { reset } => self.abort(End::Source, reset),
        }
    }

    /// Learns from a write.
    pub fn on_write(&mut self, outcome: WriteOutcome) {
        if !matches!(self.phase, Phase::Open | Phase::Draining) {
            return;
        }
        match outcome {
            WriteOutcome::Moved(n) => {
                debug_assert!(n > 0 && n <= self.buffered);
                self.buffered -= n;
                self.bytes_written += n as u64;
                self.read_stalled = false;
            }
            WriteOutcome::WouldBlock => self.destination_ready = false,
            WriteOutcome::Failed { reset } => self.abort(End::Destination, reset),
        }
    }

    /// Learns from `shutdown(SHUT_WR)` on the destination.
    pub fn on_shutdown(&mut self, outcome: WriteOutcome) {
        if self.phase != Phase::Draining {
            return;
        }
        match outcome {
            WriteOutcome::Failed { reset } => self.abort(End::Destination, reset),
            WriteOutcome::Moved(_) | WriteOutcome::WouldBlock => self.phase = Phase::Shut,
        }
    }

    /// Aborts the direction from outside (the other direction failed, a timeout fired). Bytes
    /// still buffered are discarded; [`Direction::buffered`] tells how many.
    pub fn abort(&mut self, end: End, reset: bool) {
        if matches!(self.phase, Phase::Open | Phase::Draining) {
            self.phase = Phase::Aborted;
            self.abort = Some(Abort { end, reset });
        }
    }

    /// Where the direction is.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the direction is finished (shut or aborted).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Shut | Phase::Aborted)
    }

    /// Whether the source has ended (end of stream was read).
    #[must_use]
    pub fn source_ended(&self) -> bool {
        matches!(self.phase, Phase::Draining | Phase::Shut)
    }

    /// Why the direction was aborted, if it was aborted by its own I/O.
    #[must_use]
    pub fn abort_reason(&self) -> Option<Abort> {
        self.abort
    }

    /// Bytes in the buffer now.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Capacity of the buffer in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes read from the source so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Bytes written to the destination so far.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_then_writes_then_waits() {
        let mut d = Direction::new(100);
        assert_eq!(d.next_step(), Step::Read { room: 100 });
        d.on_read(ReadOutcome::Moved(30));
        assert_eq!(d.next_step(), Step::Write { len: 30 });
        d.on_write(WriteOutcome::Moved(30));
        assert_eq!(d.next_step(), Step::Read { room: 100 });
        d.on_read(ReadOutcome::WouldBlock);
        assert_eq!(d.next_step(), Step::Wait);
        d.source_ready();
        assert_eq!(d.next_step(), Step::Read { room: 100 });
    }

    #[test]
    fn full_buffer_stops_reading_until_a_write_frees_room() {
        let mut d = Direction::new(100);
        d.on_write(WriteOutcome::WouldBlock);
        d.on_read(ReadOutcome::Moved(100));
        assert_eq!(
            d.next_step(),
            Step::Wait,
            "buffer full, destination blocked"
        );
        d.destination_ready();
        assert_eq!(d.next_step(), Step::Write { len: 100 });
        d.on_write(WriteOutcome::Moved(40));
        d.on_write(WriteOutcome::WouldBlock);
        assert_eq!(d.next_step(), Step::Read { room: 40 });
    }

    #[test]
    fn would_block_with_bytes_buffered_keeps_the_source_ready() {
        // The pipe may be full in page slots: the socket may still hold data, and no new edge
        // will come for it. The read must be retried once a write frees room.
        let mut d = Direction::new(100);
        d.on_write(WriteOutcome::WouldBlock);
        d.on_read(ReadOutcome::Moved(10));
        d.on_read(ReadOutcome::WouldBlock);
        assert_eq!(d.next_step(), Step::Wait);
        d.destination_ready();
        d.on_write(WriteOutcome::Moved(10));
        assert_eq!(
            d.next_step(),
            Step::Read { room: 100 },
            "read retried without a new event"
        );
    }

    #[test]
    fn a_drained_source_waits_for_its_next_event() {
        let mut d = Direction::new(100);
        d.on_read(ReadOutcome::Moved(10));
        d.on_write(WriteOutcome::Moved(10));
        d.source_drained();
        assert_eq!(d.next_step(), Step::Wait, "no read that would only block");
        d.source_ready();
        assert_eq!(d.next_step(), Step::Read { room: 100 });
    }

    #[test]
    fn a_closing_source_is_read_until_its_end() {
        // The peer's FIN came with the event that announced the bytes: after reading them, the
        // end of stream is queued and no event will come for it.
        let mut d = Direction::new(100);
        d.source_closing();
        d.on_read(ReadOutcome::Moved(10));
        d.source_drained();
        d.on_write(WriteOutcome::Moved(10));
        assert_eq!(d.next_step(), Step::Read { room: 100 });
        d.on_read(ReadOutcome::EndOfStream);
        assert_eq!(d.next_step(), Step::Shutdown);
    }

    #[test]
    fn end_of_stream_drains_before_shutdown() {
        let mut d = Direction::new(100);
        d.on_read(ReadOutcome::Moved(50));
        d.on_read(ReadOutcome::EndOfStream);
        assert_eq!(d.phase(), Phase::Draining);
        assert_eq!(d.next_step(), Step::Write { len: 50 });
        d.on_write(WriteOutcome::Moved(20));
        d.on_write(WriteOutcome::WouldBlock);
        assert_eq!(
            d.next_step(),
            Step::Wait,
            "no shutdown while bytes are buffered"
        );
        d.destination_ready();
        d.on_write(WriteOutcome::Moved(30));
        assert_eq!(d.next_step(), Step::Shutdown);
        d.on_shutdown(WriteOutcome::Moved(0));
        assert_eq!(d.phase(), Phase::Shut);
        assert_eq!(d.next_step(), Step::Finished);
        assert_eq!((d.bytes_read(), d.bytes_written()), (50, 50));
    }

    #[test]
    fn failures_abort_and_keep_the_buffered_count() {
        let mut d = Direction::new(100);
        d.on_read(ReadOutcome::Moved(70));
        d.on_write(WriteOutcome::Failed { reset: true });
        assert_eq!(d.phase(), Phase::Aborted);
        assert_eq!(
            d.abort_reason(),
            Some(Abort {
                end: End::Destination,
                reset: true
            })
        );
        assert_eq!(d.buffered(), 70, "discarded bytes stay countable");
        assert_eq!(d.next_step(), Step::Finished);
        // Later outcomes change nothing.
        d.on_read(ReadOutcome::Moved(1));
        d.on_write(WriteOutcome::Moved(1));
        assert_eq!(d.buffered(), 70);
    }

    #[test]
    fn read_failure_names_the_source() {
        let mut d = Direction::new(10);
        d.on_read(ReadOutcome::Failed { reset: false });
        assert_eq!(
            d.abort_reason(),
            Some(Abort {
                end: End::Source,
                reset: false
            })
        );
    }

    #[test]
    fn shutdown_failure_is_an_abort() {
        let mut d = Direction::new(10);
        d.on_read(ReadOutcome::EndOfStream);
        assert_eq!(d.next_step(), Step::Shutdown);
        d.on_shutdown(WriteOutcome::Failed { reset: true });
        assert_eq!(d.phase(), Phase::Aborted);
    }

    #[test]
    fn outside_abort_after_shut_changes_nothing() {
        let mut d = Direction::new(10);
        d.on_read(ReadOutcome::EndOfStream);
        d.on_shutdown(WriteOutcome::Moved(0));
        d.abort(End::Source, true);
        assert_eq!(d.phase(), Phase::Shut);
        assert_eq!(d.abort_reason(), None);
    }
}
