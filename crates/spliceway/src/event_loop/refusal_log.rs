//! Summarises refused connections (access lists, SNI) in the log: the first refusal of a
//! period is logged with its reason, the rest are counted and reported once the period ends,
//! so a port scan or a misconfigured client cannot flood the log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::end::CloseReason;

/// Length of a refusal-log period.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// One worker's refusal summary.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    period_start: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    pub(crate) fn record(
        &mut self,
        now: Instant,
        route: &str,
        client: SocketAddr,
        reason: &CloseReason,
    ) {
        match self.period_start {
            Some(start) if now.duration_since(start) < REFUSAL_LOG_PERIOD => self.suppressed += 1,
            _ => {
                self.flush(now);
                self.period_start = Some(now);
                self.suppressed = 0;
                // log: rate limited (the first refusal of a period; period_start).
                tracing::info!(target: "spliceway::conn", route = %route, client = %client, "connection {reason}");
            }
        }
    }

    /// When the summary of the current period is due: only while refusals were held back.
    pub(crate) fn flush_at(&self) -> Option<Instant> {
        match (self.period_start, self.suppressed) {
            (Some(start), 1..) => Some(start + REFUSAL_LOG_PERIOD),
            _ => None,
        }
    }

    /// Logs the summary of a period that has ended, at once rather than at the next refusal
    /// (hostile testing saw a summary printed 13 minutes after its refusals). Returns how many
    /// refusals it reported.
    pub(crate) fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self.flush_at().is_some_and(|at| at <= now);
        if !due {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.period_start = None;
        // log: rate limited (one summary per period; period_start).
        tracing::info!(
            "{suppressed} more connections refused in the last {REFUSAL_LOG_PERIOD:?} (see the denied, sni_refused and client_limit_refused counters)"
        );
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_due_when_its_period_ends() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let client = "127.0.0.1:1".parse().unwrap();
        let reason = CloseReason::Denied("test".into());
        log.record(t0, "r", client, &reason);
        assert_eq!(log.flush_at(), None, "one refusal, logged at once");
        for i in 1..5 {
            log.record(t0 + Duration::from_millis(i), "r", client, &reason);
        }
        assert_eq!(log.flush_at(), Some(t0 + REFUSAL_LOG_PERIOD));
        assert_eq!(log.flush(t0 + Duration::from_secs(5)), None, "not yet");
        assert_eq!(log.flush(t0 + REFUSAL_LOG_PERIOD), Some(4));
        assert_eq!(log.flush_at(), None);
        assert_eq!(
            log.flush(t0 + REFUSAL_LOG_PERIOD * 2),
            None,
            "reported once"
        );
        // The next refusal starts a new period and is logged at once.
        log.record(t0 + REFUSAL_LOG_PERIOD * 3, "r", client, &reason);
        assert_eq!(log.flush_at(), None);
    }
}
