//! The one bounded wait of the test suites.

use std::time::{Duration, Instant};

/// Upper bound for any single wait in the tests: long enough that a loaded two-core CI machine
/// does not flake, short enough that a hang fails the test instead of the CI job.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`wait_until`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Checks `condition` every [`POLL_INTERVAL`] until it holds or `timeout` has passed.
///
/// The contract: returns `true` as soon as `condition` returns `true`; returns `false` once
/// `timeout` has passed without it. `condition` is checked at least once (also with a zero
/// timeout) and at most `timeout / POLL_INTERVAL + 2` times, so the loop is bounded in count
/// as well as in time even when the clock or the sleeps misbehave. It never panics: the caller
/// says what it waited for, usually `assert!(wait_until(..), "timed out waiting for ...")`.
#[must_use = "a wait that timed out returns false; assert on it"]
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let max_checks = timeout.as_nanos() / POLL_INTERVAL.as_nanos() + 2;
    for _ in 0..max_checks {
        if condition() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_holds_returns_true_after_one_check() {
        let mut checks = 0;
        assert!(wait_until(Duration::ZERO, || {
            checks += 1;
            true
        }));
        assert_eq!(checks, 1);
    }

    #[test]
    fn a_condition_that_never_holds_returns_false_after_the_timeout_and_a_bounded_count() {
        let mut checks = 0u128;
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || {
            checks += 1;
            false
        }));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!((1..=50 / 5 + 2).contains(&checks), "{checks} checks");
    }

    #[test]
    fn a_condition_that_comes_true_later_is_seen() {
        let start = Instant::now();
        assert!(wait_until(TEST_TIMEOUT, || start.elapsed()
            >= Duration::from_millis(20)));
    }
}
