//! Fewer wake-ups for bulk transfers: the receive low-water mark (`SO_RCVLOWAT`).
//!
//! At link speed a relay's cost is wake-ups, not bytes: without help, epoll reports a socket
//! readable for every segment or two that arrives, and each wake-up costs a few system calls
//! to move a few KiB. Once a direction has carried [`BULK_AFTER_BYTES`] since it was last
//! quiet, the relay raises its source socket's `SO_RCVLOWAT`, so the kernel reports it readable
//! only when that many bytes are queued (or at end of stream, or on a reset): each wake-up then
//! moves tens of KiB.
//!
//! A low-water mark must never strand bytes: when the sender pauses with fewer bytes queued
//! than the mark, no readiness comes. So whenever a read in bulk mode finds the socket empty,
//! a flush is armed [`FLUSH_DELAY`] later; when it fires the relay reads whatever is queued
//! (splice and recv on a non-blocking socket return what is there, whatever the mark). If the
//! flush finds nothing at all, the transfer has gone quiet: the mark goes back to 1 byte, so
//! the next small exchange (a TLS record, an HTTP response) wakes the relay at once.
//!
//! Small exchanges such as a TLS handshake never reach bulk mode, so they are never delayed;
//! the cost is at most [`FLUSH_DELAY`] added to the tail of a bulk transfer that pauses without
//! ending, and at most `1 / FLUSH_DELAY` timer wake-ups a second while bulk bytes trickle.
//!
//! Off by default (`bulk_low_water = 0`): on the project's emulated 116 Mbit/s links the link
//! shaper already delivers data in bursts of tens of KiB, the mark removed under 10% of the
//! wake-ups, and the flush timer cost more CPU than that saved (figures in
//! `docs/benchmark-results.md`, "Moving more bytes per wake-up").

use std::time::{Duration, Instant};

use crate::clock::deadline;
use mio::net::TcpStream;

/// Bytes a direction must carry (since it was last quiet) before its low-water mark is raised.
pub const BULK_AFTER_BYTES: u64 = 256 * 1024;

/// How long after a read found the socket empty a bulk direction reads again anyway.
pub const FLUSH_DELAY: Duration = Duration::from_millis(10);

/// One direction's low-water state.
#[derive(Debug, Default)]
pub(crate) struct LowWater {
    /// The source socket's `SO_RCVLOWAT` is raised.
    bulk: bool,
    /// Bytes read since the direction was last quiet.
    since_quiet: u64,
    /// When to read again without an event.
    pub(crate) flush_at: Option<Instant>,
    /// A flush is under way: if it reads nothing, leave bulk mode.
    flushing: bool,
    /// Setting the option failed once (not a TCP socket?): do not try again.
    disabled: bool,
}

impl LowWater {
    /// A read moved `n` bytes from `source`; `mark` is the low-water mark to use in bulk (0:
    /// the feature is off).
    pub(crate) fn on_bytes(&mut self, source: &TcpStream, n: usize, mark: usize) {
        self.since_quiet += n as u64;
        if self.bulk || self.disabled || mark <= 1 || self.since_quiet < BULK_AFTER_BYTES {
            return;
        }
        match crate::sys::set_recv_low_water(source, mark) {
            Ok(()) => self.bulk = true,
            Err(e) => {
                tracing::debug!("cannot set SO_RCVLOWAT: {e}");
                self.disabled = true;
            }
        }
    }

    /// A read found the source empty.
    pub(crate) fn on_empty(&mut self, now: Instant) {
        if self.bulk {
            self.flush_at = Some(deadline(now, FLUSH_DELAY));
        }
    }

    /// The flush is due: returns true if the direction should read again now.
    pub(crate) fn start_flush(&mut self, now: Instant) -> bool {
        match self.flush_at {
            Some(at) if at <= now => {
                self.flush_at = None;
                self.flushing = true;
                true
            }
            _ => false,
        }
    }

    /// After a pump: if a flush read nothing, the transfer went quiet: back to a 1-byte mark.
    pub(crate) fn finish_flush(&mut self, source: &TcpStream, read_anything: bool) {
        if !std::mem::take(&mut self.flushing) || read_anything {
            return;
        }
        if self.bulk {
            let _ = crate::sys::set_recv_low_water(source, 1);
            self.bulk = false;
            self.flush_at = None;
        }
        self.since_quiet = 0;
    }

    /// Whether the mark is raised.
    #[cfg(test)]
    pub(crate) fn is_bulk(&self) -> bool {
        self.bulk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, TcpStream::from_std(b))
    }

    #[test]
    fn bulk_after_enough_bytes_and_quiet_after_an_empty_flush() {
        let (_peer, socket) = pair();
        let mut lw = LowWater::default();
        let t0 = Instant::now();
        lw.on_bytes(&socket, 100_000, 65536);
        assert!(!lw.is_bulk(), "not yet bulk");
        lw.on_empty(t0);
        assert!(lw.flush_at.is_none(), "no flush outside bulk mode");
        lw.on_bytes(&socket, 200_000, 65536);
        assert!(lw.is_bulk());
        lw.on_empty(t0);
        assert!(!lw.start_flush(t0), "not due yet");
        assert!(lw.start_flush(t0 + FLUSH_DELAY));
        lw.finish_flush(&socket, true);
        assert!(lw.is_bulk(), "the flush found bytes: still bulk");
        lw.on_empty(t0);
        assert!(lw.start_flush(t0 + FLUSH_DELAY));
        lw.finish_flush(&socket, false);
        assert!(!lw.is_bulk(), "the flush found nothing: quiet again");
        assert!(lw.flush_at.is_none());
    }

    #[test]
    fn zero_mark_turns_it_off() {
        let (_peer, socket) = pair();
        let mut lw = LowWater::default();
        lw.on_bytes(&socket, 10 << 20, 0);
        assert!(!lw.is_bulk());
    }
}
