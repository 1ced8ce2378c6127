//! A bucket shared by connections on every worker thread (a route's limit, a client's), and
//! a connection's own: the same arithmetic (`bucket.rs`) on an `AtomicU64` or a plain `u64`.
//!
//! Why an atomic bucket rather than per-worker shares rebalanced on a timer: a reservation is
//! one compare-and-swap on one cache line per read (a read moves up to a pipe's worth, 512 KiB
//! by default, so at 10 Gbit/s that is a few thousand a second), it needs no timer of its own
//! and no thread, and the limit holds exactly at every instant instead of per rebalancing
//! period. Per-worker shares would idle a worker's share while its connections wait and
//! another worker's connections could have used it. The measured cost is in
//! `docs/rate-limits.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bucket::{self, Limit};

/// Nanoseconds from `origin` to `now` (0 before it).
fn nanos_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// When a reservation made at `now` (`now_ns` from `origin`) may be read: `now` itself when
/// it may be read at once (no rounding through nanoseconds), else the instant `start_ns` after
/// `origin`.
fn at_or_now(origin: Instant, now: Instant, now_ns: u64, start_ns: u64) -> Instant {
    if start_ns <= now_ns {
        now
    } else {
        crate::clock::deadline(origin, Duration::from_nanos(start_ns))
    }
}

/// A reservation in a [`SharedBucket`]: the state it left the bucket in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserved(u64);

/// A bucket every worker may reserve in, without a lock.
#[derive(Debug)]
pub(crate) struct SharedBucket {
    origin: Instant,
    tat: AtomicU64,
}

impl SharedBucket {
    pub(crate) fn new(origin: Instant) -> Self {
        SharedBucket {
            origin,
            tat: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes`; returns when they may be read, and the reservation (to give
    /// unused bytes back with).
    pub(crate) fn reserve(&self, now: Instant, bytes: u64, limit: Limit) -> (Instant, Reserved) {
        let now_ns = nanos_since(self.origin, now);
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            let (next, start) = bucket::reserve(current, now_ns, bytes, limit);
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return (at_or_now(self.origin, now, now_ns, start), Reserved(next)),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back `unused` bytes of `reserved` at `now`, if no one has reserved since (see
    /// `bucket::refunded`).
    pub(crate) fn refund(&self, reserved: Reserved, now: Instant, unused: u64, limit: Limit) {
        if unused == 0 {
            return;
        }
        let now_ns = nanos_since(self.origin, now);
        let tat = reserved.0;
        if let Some(back) = bucket::refunded(tat, tat, unused, now_ns, limit) {
            // Fails, harmlessly, if someone reserved in the meantime.
            let _ = self
                .tat
                .compare_exchange(tat, back, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// A bucket only its owner reserves in (a connection's own limit, one direction).
#[derive(Debug)]
pub(crate) struct OwnBucket {
    origin: Instant,
    tat: u64,
}

impl OwnBucket {
    pub(crate) fn new(origin: Instant) -> Self {
        OwnBucket { origin, tat: 0 }
    }

    /// Reserves `bytes`; returns when they may be read.
    pub(crate) fn reserve(&mut self, now: Instant, bytes: u64, limit: Limit) -> Instant {
        let now_ns = nanos_since(self.origin, now);
        let (next, start) = bucket::reserve(self.tat, now_ns, bytes, limit);
        self.tat = next;
        at_or_now(self.origin, now, now_ns, start)
    }

    /// Gives back `unused` bytes of its last reservation at `now` (its owner reserves one at
    /// a time, so the last is the only one).
    pub(crate) fn refund(&mut self, now: Instant, unused: u64, limit: Limit) {
        let now_ns = nanos_since(self.origin, now);
        self.tat = bucket::refunded(self.tat, self.tat, unused, now_ns, limit).unwrap_or(self.tat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LIMIT: Limit = Limit {
        rate: 1_000_000,
        burst: 10_000,
    };

    #[test]
    fn own_and_shared_buckets_answer_alike() {
        let origin = Instant::now();
        let now = origin + Duration::from_secs(1);
        let shared = SharedBucket::new(origin);
        let mut own = OwnBucket::new(origin);
        let mut last = None;
        for bytes in [10_000, 3_000, 10_000, 1] {
            let (at, reserved) = shared.reserve(now, bytes, LIMIT);
            assert_eq!(at, own.reserve(now, bytes, LIMIT));
            last = Some(reserved);
        }
        shared.refund(last.unwrap(), now, 5_000, LIMIT);
        own.refund(now, 5_000, LIMIT);
        assert_eq!(shared.reserve(now, 1, LIMIT).0, own.reserve(now, 1, LIMIT));
    }

    /// Four threads reserving at the same instant: every byte is accounted once (the last
    /// reservation is served exactly as late as all of them together take).
    #[test]
    fn concurrent_reservations_are_each_counted_once() {
        let origin = Instant::now();
        let now = origin + Duration::from_secs(1);
        let bucket = Arc::new(SharedBucket::new(origin));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bucket = Arc::clone(&bucket);
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| bucket.reserve(now, 1_000, LIMIT).0)
                        .max()
                        .unwrap()
                })
            })
            .collect();
        let last = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .max()
            .unwrap();
        // 4,000,000 bytes at 1 MB/s with a 10 kB burst: the last may start at 4 s - 10 ms.
        assert_eq!(last, now + Duration::from_millis(3_990));
    }

    #[test]
    fn a_reservation_that_fits_may_be_read_at_once() {
        let origin = Instant::now();
        let now = Instant::now() + Duration::from_secs(5);
        let bucket = SharedBucket::new(origin);
        assert_eq!(bucket.reserve(now, 100, LIMIT).0, now);
    }
}
