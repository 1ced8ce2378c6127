//! A log line allowed at most once a period, shared by every worker: a flood of bad input on
//! one route (a misconfigured balancer, a scan) costs one line a second, not one per
//! connection, and says how many it stood for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The period of the PROXY protocol error log of a route.
pub(crate) const PROXY_ERROR_LOG_PERIOD: Duration = Duration::from_secs(1);

/// When the line was last logged, and how many were held back since.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// Whether a line may be logged now (with how many were held back since the last one), or
    /// `None`: held back and counted.
    pub(crate) fn admit(&self, now: Instant, period: Duration) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < period => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_period_and_the_count_of_the_rest() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        assert_eq!(limit.admit(t0, period), Some(0));
        for ms in 1..=5 {
            assert_eq!(
                limit.admit(t0 + Duration::from_millis(ms * 100), period),
                None
            );
        }
        assert_eq!(limit.admit(t0 + period, period), Some(5));
        assert_eq!(limit.admit(t0 + period, period), None);
    }
}
