//! A limit on how often one kind of error is logged: a client storm or a descriptor shortage
//! repeats the same failure thousands of times a second, and the log must show it without
//! drowning in it.

use std::time::{Duration, Instant};

/// Lets one report through per period and counts the others.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log an occurrence at `now`: if so, how many were held back since the last
    /// one logged.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// ` (N more since the last report)`, or nothing.
pub fn repeats(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_period_with_a_count_of_the_rest() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(5));
        assert_eq!(throttle.ready(start), Some(0));
        for ms in [1, 100, 4999] {
            assert_eq!(throttle.ready(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.ready(start + Duration::from_secs(5)), Some(3));
        assert_eq!(throttle.ready(start + Duration::from_secs(6)), None);
        assert_eq!(repeats(0), "");
        assert_eq!(repeats(3), " (3 more since the last report)");
    }
}
