//! Deadlines that cannot overflow.
//!
//! `Instant + Duration` panics when the sum does not fit ("overflow when adding duration to
//! instant"), and the durations here come from users: hostile testing found that an idle
//! timeout of 400,000,000,000 years was accepted and made the first connection panic. Every
//! deadline in the engine is computed with [`deadline`], which saturates at an instant about a
//! century away instead: later than any relay runs, and so the same as "never".

use std::time::{Duration, Instant};

/// How far "never" is: a century, well inside what `Instant` can hold on Linux.
const NEVER_SECS: u64 = 100 * 365 * 24 * 3600;

/// `from + after`, or an instant a century after `from` when the sum would overflow (or be
/// further away than that).
pub(crate) fn deadline(from: Instant, after: Duration) -> Instant {
    let capped = after.min(Duration::from_secs(NEVER_SECS));
    from.checked_add(capped).unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let never = deadline(now, Duration::MAX);
        assert!(never > now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert_eq!(never, deadline(now, Duration::from_secs(u64::MAX / 2)));
        // Comparisons against it work as "not yet".
        assert!(Instant::now() < never);
    }
}
