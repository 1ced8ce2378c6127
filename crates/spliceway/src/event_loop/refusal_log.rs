//! Summarises refused connections (access lists, SNI) in the log: the first refusal of a
//! period is logged with its reason, the rest are counted and reported once the period ends,
//! so a port scan or a misconfigured client cannot flood the log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::connection::CloseReason;

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
                if self.suppressed > 0 {
                    tracing::info!(
                        "{} more connections refused in the last {REFUSAL_LOG_PERIOD:?} (see the denied and sni_refused counters)",
                        self.suppressed
                    );
                }
                self.period_start = Some(now);
                self.suppressed = 0;
                tracing::info!(target: "spliceway::conn", route, client = %client, "refused: {reason}");
            }
        }
    }
}
