//! One upstream's health and counters, shared by every worker thread and the health checker:
//! relaxed atomics only, so that choosing an upstream for a connection takes no lock. A reload
//! hands the same `UpstreamHealth` to the new group when the upstream did not change, so a
//! down upstream stays down (and its counters keep counting) across a reload.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What changed in an upstream's health, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Passive health marked it down (`max_fails` connect failures in a row).
    MarkedDown,
    /// A connection reached it after passive health had marked it down.
    ReachedAgain,
}

/// One upstream's shared state.
#[derive(Debug)]
pub(crate) struct UpstreamHealth {
    /// What times below count from (times are kept as nanoseconds since it, in atomics).
    epoch: Instant,
    /// The active check's verdict (true without active checks).
    checked_up: AtomicBool,
    /// Consecutive connect failures.
    fails: AtomicU32,
    /// Until when passive health keeps it down, in nanoseconds since `epoch`; 0: not down.
    down_until: AtomicU64,
    /// Whether passive health marked it down and no connection has reached it since.
    passive_down: AtomicBool,
    /// Connections open to it now.
    pub(crate) open: AtomicUsize,
    /// Connections established to it, in all.
    pub(crate) connections: AtomicU64,
    /// Connect attempts to it that failed, in all.
    pub(crate) failures: AtomicU64,
}

impl UpstreamHealth {
    pub(crate) fn new(now: Instant) -> UpstreamHealth {
        UpstreamHealth {
            epoch: now,
            checked_up: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            passive_down: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether it may receive new connections at `now`: its active check (if any) says up and
    /// passive health does not hold it down.
    pub(crate) fn is_up(&self, now: Instant) -> bool {
        self.checked_up.load(Ordering::Relaxed) && !self.passively_down(now)
    }

    fn passively_down(&self, now: Instant) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// The active check's verdict.
    pub(crate) fn checked_up(&self) -> bool {
        self.checked_up.load(Ordering::Relaxed)
    }

    /// Records the active check's verdict. A verdict of up also ends a mark of passive health:
    /// the check's `rise` passes are newer evidence than the failures behind the mark.
    pub(crate) fn set_checked_up(&self, up: bool) {
        self.checked_up.store(up, Ordering::Relaxed);
        if up {
            self.down_until.store(0, Ordering::Relaxed);
            self.fails.store(0, Ordering::Relaxed);
            self.passive_down.store(false, Ordering::Relaxed);
        }
    }

    /// A connect to it failed at `now`. With `max_fails` (0: never) failures in a row, it is
    /// marked down until `now + fail_timeout`; `Some(MarkedDown)` when this failure did it.
    pub(crate) fn connect_failed(
        &self,
        now: Instant,
        max_fails: u32,
        fail_timeout: Duration,
    ) -> Option<Change> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let fails = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if max_fails == 0 || fails < max_fails || self.passively_down(now) {
            return None;
        }
        let until = self.nanos(crate::clock::deadline(now, fail_timeout)).max(1);
        self.down_until.store(until, Ordering::Relaxed);
        self.fails.store(0, Ordering::Relaxed);
        let was = self.passive_down.swap(true, Ordering::Relaxed);
        (!was).then_some(Change::MarkedDown)
    }

    /// A connection to it was established: the failures in a row end, and it counts as open
    /// until [`UpstreamHealth::closed`]. `Some(ReachedAgain)` when passive health had marked it
    /// down.
    pub(crate) fn connected(&self) -> Option<Change> {
        self.opened();
        self.reached()
    }

    /// A connection (or a UDP session) to it opened: it counts as open until
    /// [`UpstreamHealth::closed`]. A UDP session opens before anything is known of the
    /// upstream: [`UpstreamHealth::reached`] comes with its first answer.
    pub(crate) fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// It answered (a connect completed, or a UDP session's first answer came): the failures
    /// in a row end. `Some(ReachedAgain)` when passive health had marked it down.
    pub(crate) fn reached(&self) -> Option<Change> {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if self.passive_down.load(Ordering::Relaxed)
            && self.passive_down.swap(false, Ordering::Relaxed)
        {
            self.down_until.store(0, Ordering::Relaxed);
            return Some(Change::ReachedAgain);
        }
        None
    }

    /// A connection counted by [`UpstreamHealth::connected`] closed.
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open to it now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// An active check's verdict over consecutive probes: `fall` failures in a row take an up
/// upstream down, `rise` successes in a row bring a down one up. Pure; the checker owns one per
/// upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RiseFall {
    up: bool,
    /// Consecutive probe results against the current verdict.
    streak: u32,
}

impl RiseFall {
    /// Starts up: an upstream is given traffic until its checks say otherwise (HAProxy's and
    /// nginx's start too), so a relay starting or reloading does not refuse everything for
    /// `rise × interval`.
    pub(crate) fn new(up: bool) -> RiseFall {
        RiseFall { up, streak: 0 }
    }

    #[cfg(test)]
    pub(crate) fn is_up(self) -> bool {
        self.up
    }

    /// Records one probe's result; `Some(new verdict)` when it changed.
    pub(crate) fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<bool> {
        if success == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.up = success;
            self.streak = 0;
            Some(success)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn max_fails_marks_down_for_fail_timeout_and_a_success_clears_it() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(t0);
        let timeout = Duration::from_secs(10);
        assert!(h.is_up(t0));
        assert_eq!(h.connect_failed(t0, 2, timeout), None);
        assert!(h.is_up(t0));
        assert_eq!(h.connect_failed(t0, 2, timeout), Some(Change::MarkedDown));
        assert!(!h.is_up(t0 + Duration::from_secs(9)));
        assert!(h.is_up(t0 + Duration::from_secs(10)));
        assert_eq!(h.connected(), Some(Change::ReachedAgain));
        assert_eq!(h.connected(), None);
        assert_eq!(h.open_connections(), 2);
        h.closed();
        assert_eq!(h.open_connections(), 1);
        assert_eq!(h.failures.load(Ordering::Relaxed), 2);
        // A success between failures restarts the count.
        assert_eq!(h.connect_failed(t0, 2, timeout), None);
        h.connected();
        assert_eq!(h.connect_failed(t0, 2, timeout), None);
        // max_fails 0: never down.
        let never = UpstreamHealth::new(t0);
        for _ in 0..100 {
            assert_eq!(never.connect_failed(t0, 0, timeout), None);
        }
        assert!(never.is_up(t0));
    }

    #[test]
    fn the_active_verdict_gates_too_and_up_ends_a_passive_mark() {
        let t0 = Instant::now();
        let h = UpstreamHealth::new(t0);
        h.set_checked_up(false);
        assert!(!h.is_up(t0));
        h.set_checked_up(true);
        assert!(h.is_up(t0));
        h.connect_failed(t0, 1, Duration::from_secs(10));
        assert!(!h.is_up(t0));
        h.set_checked_up(true);
        assert!(h.is_up(t0), "rise passes end the passive mark");
    }

    proptest! {
        /// The verdict changes exactly when the last `fall` results (when up) or `rise` results
        /// (when down) all disagree with it.
        #[test]
        fn rise_fall_follows_its_model(
            results in proptest::collection::vec(any::<bool>(), 0..200),
            rise in 1u32..5,
            fall in 1u32..5,
        ) {
            let mut machine = RiseFall::new(true);
            let mut up = true;
            let mut streak = 0u32;
            for r in results {
                let change = machine.record(r, rise, fall);
                if r == up { streak = 0; } else { streak += 1; }
                let flip = streak >= if up { fall } else { rise };
                if flip { up = r; streak = 0; }
                prop_assert_eq!(change, flip.then_some(r));
                prop_assert_eq!(machine.is_up(), up);
            }
        }
    }
}
