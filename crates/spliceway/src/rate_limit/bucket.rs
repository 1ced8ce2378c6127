//! The token bucket, as arithmetic on one number (no I/O, no clock: the time is passed in).
//!
//! A bucket of rate `r` bytes/s and burst `b` bytes is kept as its *theoretical arrival time*
//! (`tat`, the generic cell rate algorithm's form of a token bucket): the instant at which the
//! bucket would be full again if nothing more were taken. The bucket holds
//! `b - (tat - now) * r` tokens at `now`, so nothing needs refilling: the refill is the
//! passing of time, computed when a reservation is made (lazily). Being one integer, the same
//! state can be an `AtomicU64` shared by every worker (`shared.rs`) and changed with one
//! compare-and-swap, without a lock.
//!
//! A direction *reserves* the bytes it is about to read: the reservation always succeeds and
//! says when the bytes may be read (`now`, or later when the bucket holds too little). Readers
//! that wait are served in the order they reserved, which shares a route's or a client's
//! limit fairly between its connections; bytes reserved but not read are given back
//! ([`refunded`]). Whatever the interleaving, no more than `r * t + b` bytes may be read in any
//! interval of length `t` (give or take the bytes of a nanosecond, which times are rounded to),
//! as long as no reservation is larger than the burst (the callers cap them at the burst):
//! the property test below checks it over random interleavings of readers.

/// A rate and burst as the arithmetic uses them. Both non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Bytes per second.
    pub(crate) rate: u64,
    /// Bytes.
    pub(crate) burst: u64,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

impl Limit {
    /// The time `bytes` take at this rate, in nanoseconds, rounded up: rounding always makes
    /// the bucket stricter, never looser.
    pub(crate) fn cost(self, bytes: u64) -> u64 {
        let rate = u128::from(self.rate.max(1));
        let nanos = (u128::from(bytes) * NANOS_PER_SECOND).div_ceil(rate);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The time `bytes` take, rounded down: what a refund gives back and what the burst is
    /// worth (both stricter rounded down).
    fn time_floor(self, bytes: u64) -> u64 {
        let nanos = u128::from(bytes) * NANOS_PER_SECOND / u128::from(self.rate.max(1));
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The burst as time, rounded down (stricter).
    fn burst_time(self) -> u64 {
        self.time_floor(self.burst)
    }

    /// The largest reservation that keeps the bound: the burst (at least one byte).
    pub(crate) fn largest_reservation(self) -> u64 {
        self.burst.max(1)
    }
}

/// Reserves `bytes` in a bucket whose state is `tat` at time `now` (both in nanoseconds from
/// the bucket's origin). Returns the new state and the time from which the bytes may be read
/// (`now` or later).
pub(crate) fn reserve(tat: u64, now: u64, bytes: u64, limit: Limit) -> (u64, u64) {
    let new_tat = tat.max(now).saturating_add(limit.cost(bytes));
    let start = new_tat.saturating_sub(limit.burst_time()).max(now);
    (new_tat, start)
}

/// The state after `unused` bytes of the reservation that left the bucket at `reserved_tat`
/// are given back at `now`; `None` when the bucket is no longer at `reserved_tat` (someone
/// reserved since), and then nothing is given back.
///
/// Only the last reservation may give bytes back: its time is the end of the bucket's
/// timeline, so shortening it overlaps no one's. Taking time off the end while a later
/// reservation is there would move that one's time over the earlier one's and let both
/// through together (the property test found exactly that). A direction that reads less than
/// it reserved while others wait behind it simply loses the rest, which only ever makes the
/// limit stricter. Never below `now`: a refund cannot fill the bucket beyond full.
pub(crate) fn refunded(
    tat: u64,
    reserved_tat: u64,
    unused: u64,
    now: u64,
    limit: Limit,
) -> Option<u64> {
    (tat == reserved_tat).then(|| {
        tat.saturating_sub(limit.time_floor(unused))
            .max(tat.min(now))
    })
}

/// Tokens the bucket holds at `now` (for tests and for `check`-style reporting).
#[cfg(test)]
pub(crate) fn tokens(tat: u64, now: u64, limit: Limit) -> u64 {
    let debt = tat.saturating_sub(now);
    let slack = limit.burst_time().saturating_sub(debt);
    (u128::from(slack) * u128::from(limit.rate) / NANOS_PER_SECOND) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn limit(rate: u64, burst: u64) -> Limit {
        Limit { rate, burst }
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_at_once_then_paces() {
        let l = limit(1_000_000, 10_000); // 1 MB/s, 10 kB burst
        let t0 = 5 * SEC; // long idle: full
        let (tat, start) = reserve(0, t0, 10_000, l);
        assert_eq!(start, t0);
        // The next 10 kB wait 10 ms (the time they take at 1 MB/s).
        let (tat, start) = reserve(tat, t0, 10_000, l);
        assert_eq!(start, t0 + 10 * MS);
        // A reader that waits behind it is served after it: first come, first served.
        let (_, start) = reserve(tat, t0 + MS, 5_000, l);
        assert_eq!(start, t0 + 15 * MS);
    }

    #[test]
    fn refills_lazily_and_never_beyond_the_burst() {
        let l = limit(1_000_000, 10_000);
        let (tat, _) = reserve(0, SEC, 10_000, l);
        assert_eq!(tokens(tat, SEC, l), 0);
        assert_eq!(tokens(tat, SEC + 5 * MS, l), 5_000);
        assert_eq!(tokens(tat, SEC + 10 * MS, l), 10_000);
        assert_eq!(tokens(tat, 100 * SEC, l), 10_000);
    }

    #[test]
    fn bytes_given_back_can_be_reserved_again() {
        let l = limit(1_000_000, 10_000);
        let (tat, _) = reserve(0, SEC, 10_000, l);
        let back = refunded(tat, tat, 4_000, SEC, l).unwrap();
        assert_eq!(tokens(back, SEC, l), 4_000);
        // Not once someone else has reserved after it.
        let (later, _) = reserve(tat, SEC, 1, l);
        assert_eq!(refunded(later, tat, 4_000, SEC, l), None);
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let l = limit(u64::MAX, u64::MAX);
        let (tat, start) = reserve(u64::MAX - 1, u64::MAX - 1, u64::MAX, l);
        assert!(tat >= start);
        let slow = limit(1, 1);
        let (tat, start) = reserve(0, 0, u64::MAX, slow);
        assert_eq!(tat, u64::MAX);
        assert!(start > 0);
    }

    /// One step of a reader: after `gap` ns it reserves `want` bytes (at most the burst), waits
    /// until it may read, then reads `used` of them (at most what it reserved), giving the
    /// rest back. Several readers interleave on one bucket, as a route's connections do.
    #[derive(Debug, Clone)]
    struct Op {
        reader: usize,
        gap: u64,
        want: u64,
        used_per_mille: u64,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            (0usize..4, 0u64..20 * MS, 1u64..200_000, 0u64..=1000).prop_map(
                |(reader, gap, want, used_per_mille)| Op {
                    reader,
                    gap,
                    want,
                    used_per_mille,
                },
            ),
            1..120,
        )
    }

    proptest! {
        /// Never more than `rate * t + burst` bytes in any interval `t`, whatever the
        /// interleaving of readers, their waits and their refunds.
        #[test]
        fn never_more_than_rate_times_time_plus_burst(
            rate in 1_000u64..200_000_000,
            burst in 1u64..300_000,
            ops in ops(),
        ) {
            let l = limit(rate, burst);
            let mut tat = 0u64;
            let mut now = 0u64;
            // (may read from, reader, reserved bytes, share of them used, state it left)
            let mut waiting: Vec<(u64, usize, u64, u64, u64)> = Vec::new();
            // (when, bytes read)
            let mut reads: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                now += op.gap;
                // Readers whose time has come read then (the worker's deadline wakes them at
                // their start), earliest first, and give back what they did not use.
                waiting.sort_by_key(|w| w.0);
                while let Some(&(from, _, reserved, per_mille, left)) = waiting.first() {
                    if from > now {
                        break;
                    }
                    waiting.remove(0);
                    let used = reserved * per_mille / 1000;
                    reads.push((from, used));
                    tat = refunded(tat, left, reserved - used, from, l).unwrap_or(tat);
                }
                if waiting.iter().any(|w| w.1 == op.reader) {
                    continue; // a reader holds one reservation at a time
                }
                let want = op.want.min(l.largest_reservation());
                let (new_tat, from) = reserve(tat, now, want, l);
                prop_assert!(from >= now);
                tat = new_tat;
                waiting.push((from, op.reader, want, op.used_per_mille, new_tat));
            }
            for &(from, _, reserved, _, _) in &waiting {
                reads.push((from, reserved));
            }
            reads.sort_by_key(|r| r.0);
            for i in 0..reads.len() {
                let mut total = 0u128;
                for j in i..reads.len() {
                    total += u128::from(reads[j].1);
                    let span = u128::from(reads[j].0 - reads[i].0);
                    // total <= rate * span + burst, in exact integers (nanoseconds), give or
                    // take what the rate moves in the two nanoseconds times are rounded to.
                    prop_assert!(
                        total * 1_000_000_000
                            <= u128::from(rate) * (span + 2) + u128::from(burst) * 1_000_000_000,
                        "{total} bytes in {span} ns at {rate} B/s, burst {burst}"
                    );
                }
            }
        }

        /// A reader alone, always wanting more, gets the rate: over a long run it reads no less
        /// than `rate * t` less 0.1 % (each reservation's time is rounded up to the next
        /// nanosecond) and one reservation, so the limit is not stricter than asked.
        #[test]
        fn a_busy_reader_gets_the_whole_rate(
            rate in 10_000u64..200_000_000,
            burst in 1_000u64..300_000,
            want in 1_000u64..300_000,
        ) {
            let l = limit(rate, burst);
            let want = want.min(l.largest_reservation());
            let (mut tat, mut now, mut read) = (0u64, 0u64, 0u128);
            let end = 10 * SEC;
            while now < end {
                let (new_tat, from) = reserve(tat, now, want, l);
                tat = new_tat;
                now = from;
                read += u128::from(want);
            }
            let expected = u128::from(rate) * u128::from(end) / 1_000_000_000;
            prop_assert!(read + u128::from(want) >= expected * 999 / 1000, "{read} < {expected}");
            prop_assert!(read <= expected + u128::from(burst) + u128::from(want));
        }
    }
}
