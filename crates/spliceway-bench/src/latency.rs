//! Latency samples of the request workloads and their percentiles.

use std::time::Duration;

use serde::Serialize;

/// Every request's latency in one run.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    samples: Vec<Duration>,
}

/// Percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
}

impl Latencies {
    /// Room for `n` samples, so recording does not allocate while timing.
    pub(crate) fn with_capacity(n: usize) -> Latencies {
        Latencies {
            samples: Vec::with_capacity(n),
        }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        self.samples.push(latency);
    }

    /// Joins another run's samples (the connect workload's threads).
    pub(crate) fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// p50, p99 and p999 by the nearest-rank method; None without samples.
    pub(crate) fn percentiles(mut self) -> Option<Percentiles> {
        if self.samples.is_empty() {
            return None;
        }
        self.samples.sort_unstable();
        let rank = |q: f64| {
            let n = self.samples.len();
            let index = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            self.samples[index].as_nanos() as f64 / 1e3
        };
        Some(Percentiles {
            p50_us: rank(0.50),
            p99_us: rank(0.99),
            p999_us: rank(0.999),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Latencies::default().percentiles(), None);
        let mut latencies = Latencies::with_capacity(1000);
        // 1..=1000 µs, recorded out of order.
        for i in (1..=1000u64).rev() {
            latencies.record(Duration::from_micros(i));
        }
        let p = latencies.percentiles().unwrap();
        assert_eq!(p.p50_us, 500.0);
        assert_eq!(p.p99_us, 990.0);
        assert_eq!(p.p999_us, 999.0);
        let mut one = Latencies::default();
        one.record(Duration::from_micros(7));
        let mut other = Latencies::default();
        other.record(Duration::from_micros(9));
        one.merge(other);
        assert_eq!(one.len(), 2);
        let p = one.percentiles().unwrap();
        assert_eq!((p.p50_us, p.p999_us), (7.0, 9.0));
    }
}
