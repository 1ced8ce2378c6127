//! Bandwidth limits as a route describes them: a rate per direction and a burst. Plain data;
//! the buckets that enforce them are `crate::rate_limit`.

use std::fmt;
use std::time::Duration;

/// A rate in bytes per second (never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// `bytes` bytes per second, `None` for zero (a zero rate would never let a byte through:
    /// leave the limit out instead).
    #[must_use]
    pub const fn bytes_per_second(bytes: u64) -> Option<Rate> {
        if bytes == 0 { None } else { Some(Rate(bytes)) }
    }

    /// `bits` bits per second, rounded down to whole bytes; `None` below 8 bits per second.
    #[must_use]
    pub const fn bits_per_second(bits: u64) -> Option<Rate> {
        Rate::bytes_per_second(bits / 8)
    }

    /// Bytes per second.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The burst a limit of this rate allows when it names none: [`DEFAULT_BURST_TIME`] of the
    /// rate, at least [`MIN_DEFAULT_BURST`].
    #[must_use]
    pub fn default_burst(self) -> u64 {
        let of_rate = (u128::from(self.0) * DEFAULT_BURST_TIME.as_nanos() / 1_000_000_000) as u64;
        of_rate.max(MIN_DEFAULT_BURST)
    }
}

impl fmt::Display for Rate {
    /// In bits per second with a decimal unit, as operators write link speeds
    /// (`600 Mbit/s`); exact rates keep their digits (`1.5 Gbit/s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0 as f64 * 8.0;
        for (unit, scale) in [("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)] {
            if bits >= scale {
                let value = bits / scale;
                // Up to two decimals, without trailing zeros: 600 Mbit/s, 1.5 Gbit/s, 2.35 Gbit/s.
                let text = format!("{value:.2}");
                let text = text.trim_end_matches('0').trim_end_matches('.');
                return write!(f, "{text} {unit}");
            }
        }
        write!(f, "{bits} bit/s")
    }
}

/// How much of a limit's rate a burst defaults to: 10 ms, long enough that a limited
/// direction wakes at most about 100 times a second, short enough that a burst is not
/// noticed on a shared link.
pub const DEFAULT_BURST_TIME: Duration = Duration::from_millis(10);

/// The smallest default burst, 64 KiB: below it, a slow limit would wake the relay for every
/// few segments.
pub const MIN_DEFAULT_BURST: u64 = 64 * 1024;

/// How a connection's own limit (`rate_limit`) is enforced in each direction.
///
/// The kernel's `SO_MAX_PACING_RATE` on the direction's sending socket is as precise as the
/// relay's token bucket and costs 20-30 % less relay CPU (the relay never waits on a timer:
/// the socket's send queue fills and the splice into it waits for room, docs/rate-limits.md).
/// But it paces one socket only: it cannot be shared by a client or a route, and it has no
/// burst. So by default ([`Auto`](Self::Auto)) a direction is paced by the kernel when its only
/// limit is the connection's own and that limit names no `burst`; otherwise the bucket counts
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ConnectionLimitBy {
    /// The kernel when nothing shared limits the direction and no burst is named, else the
    /// bucket.
    #[default]
    Auto,
    /// Always the relay's token bucket (so that its waits are counted in the throttled-time
    /// and held-back metrics).
    Bucket,
    /// Always the kernel's pacing, beside any shared limit's bucket.
    KernelPacing,
}

/// A bandwidth limit with a rate for each direction: `up` is client → upstream, `down` is
/// upstream → client. A direction without a rate is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub struct RateLimit {
    /// Client → upstream.
    pub up: Option<Rate>,
    /// Upstream → client.
    pub down: Option<Rate>,
    /// The bytes a direction may send at once after being idle; `None`: each direction's
    /// [`Rate::default_burst`].
    pub burst: Option<u64>,
}

impl RateLimit {
    /// A limit of `up` and `down` with the default burst.
    #[must_use]
    pub fn new(up: Option<Rate>, down: Option<Rate>) -> Self {
        RateLimit {
            up,
            down,
            burst: None,
        }
    }

    /// The same limit with an explicit burst, in bytes.
    #[must_use]
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Whether it limits either direction.
    #[must_use]
    pub fn limits_anything(&self) -> bool {
        self.up.is_some() || self.down.is_some()
    }

    /// The burst of `rate` under this limit.
    #[must_use]
    pub fn burst_of(&self, rate: Rate) -> u64 {
        self.burst.unwrap_or_else(|| rate.default_burst())
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side =
            |rate: Option<Rate>| rate.map_or_else(|| "unlimited".to_owned(), |r| r.to_string());
        write!(f, "up {}, down {}", side(self.up), side(self.down))?;
        if let Some(burst) = self.burst {
            write!(f, ", burst {burst} bytes")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_and_print_as_operators_write_them() {
        assert_eq!(Rate::bytes_per_second(0), None);
        assert_eq!(Rate::bits_per_second(7), None);
        let r = Rate::bits_per_second(600_000_000).unwrap();
        assert_eq!(r.bytes(), 75_000_000);
        assert_eq!(r.to_string(), "600 Mbit/s");
        assert_eq!(
            Rate::bits_per_second(1_500_000_000).unwrap().to_string(),
            "1.5 Gbit/s"
        );
        assert_eq!(Rate::bytes_per_second(1).unwrap().to_string(), "8 bit/s");
    }

    #[test]
    fn the_default_burst_is_ten_milliseconds_but_at_least_64_kib() {
        let fast = Rate::bits_per_second(1_000_000_000).unwrap();
        assert_eq!(fast.default_burst(), 1_250_000);
        let slow = Rate::bits_per_second(1_000_000).unwrap();
        assert_eq!(slow.default_burst(), 64 * 1024);
        let limit = RateLimit::new(Some(fast), None);
        assert_eq!(limit.burst_of(fast), 1_250_000);
        assert_eq!(limit.with_burst(4096).burst_of(fast), 4096);
        assert_eq!(limit.to_string(), "up 1 Gbit/s, down unlimited");
    }
}
