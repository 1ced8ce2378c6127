//! Quantities as the flags give them: byte sizes (`--size`) and link rates (`--internet-rate`,
//! `--vpc-rate`), the latter kept in the form tc takes for the emulated links, and the links' tbf
//! bucket (`--tbf-burst`).

/// Parses a payload size such as `65536`, `64MiB`, `2GiB` (or SI `64MB`); zero is refused.
/// The messages are those of the `spliceway` binary's own size flags.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    match text.trim().parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(size.as_u64()),
        Ok(_) => Err("a size must be more than zero".into()),
        Err(e) => Err(format!(
            "{text:?} is not a size such as 64KiB or 1MiB ({e})"
        )),
    }
}

/// A link rate as tc understands it, kept in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) bits_per_second: u64,
}

impl Rate {
    /// Megabits per second (10^6), for tables.
    pub(crate) fn mbit(self) -> f64 {
        self.bits_per_second as f64 / 1e6
    }
}

/// The smallest tbf bucket: a whole 64 KiB GSO packet must fit.
pub(crate) const MIN_TBF_BURST_BYTES: u64 = 64 * 1024;

/// `--tbf-burst auto` gives each link's bucket this long at its rate: rate/HZ at HZ = 100, the
/// minimum tc-tbf(8) gives for the configured rate to be reached ("the minimum buffer size can
/// be calculated by dividing the rate by HZ"), for the lowest common HZ, so that it holds on any
/// kernel (this one has HZ = 250). A bucket of one GSO packet (the old fixed 64 KiB, below that
/// minimum at 1 Gbit/s) makes tbf arm its watchdog timer for nearly every packet; on a VM each
/// arming is a trap to the hypervisor, and with veth it runs in whichever process sent, so the
/// emulation billed the relay for shaping a real NIC does not do (docs/benchmark-results.md, "The tbf
/// bucket"; the emulated topology is `netns`).
pub(crate) const AUTO_TBF_BURST_SECONDS: f64 = 0.010;

/// The tbf bucket of the emulated links (`--tbf-burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Burst {
    /// [`AUTO_TBF_BURST_SECONDS`] of each link's rate, at least [`MIN_TBF_BURST_BYTES`].
    Auto,
    /// The same size on every link.
    Bytes(u64),
}

impl Burst {
    /// The bucket of a link at `rate`, in bytes.
    pub(crate) fn bytes(self, rate: Rate) -> u64 {
        match self {
            Burst::Auto => ((rate.bits_per_second as f64 / 8.0 * AUTO_TBF_BURST_SECONDS) as u64)
                .max(MIN_TBF_BURST_BYTES),
            Burst::Bytes(bytes) => bytes,
        }
    }

    /// How the report names the choice.
    pub(crate) fn describe(self) -> String {
        match self {
            Burst::Auto => format!(
                "auto ({} ms of each link's rate, at least {} bytes)",
                AUTO_TBF_BURST_SECONDS * 1e3,
                MIN_TBF_BURST_BYTES
            ),
            Burst::Bytes(bytes) => format!("{bytes} bytes on every link (--tbf-burst)"),
        }
    }
}
/// Parses a tc-style rate: `116mbit`, `250Mbit`, `1gbit`, `800kbit`, `1000000bit`.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("{text:?} is not a rate such as 116mbit or 1gbit")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate such as 116mbit or 1gbit"))?;
    let bits_per_second = (value * scale).round() as u64;
    if bits_per_second < 8_000 {
        return Err(format!("{text:?} is too slow (at least 8kbit)"));
    }
    Ok(Rate { bits_per_second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_burst_is_ten_milliseconds_of_the_rate() {
        let rate = |bits_per_second| Rate { bits_per_second };
        assert_eq!(Burst::Auto.bytes(rate(1_000_000_000)), 1_250_000);
        assert_eq!(Burst::Auto.bytes(rate(2_000_000_000)), 2_500_000);
        assert_eq!(Burst::Auto.bytes(rate(116_000_000)), 145_000);
        assert_eq!(Burst::Auto.bytes(rate(10_000_000)), MIN_TBF_BURST_BYTES);
        assert_eq!(Burst::Bytes(65_536).bytes(rate(1_000_000_000)), 65_536);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size(" 4096 ").unwrap(), 4096);
        assert!(parse_size("0").unwrap_err().contains("more than zero"));
        assert!(parse_size("lots").unwrap_err().contains("is not a size"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("116mbit").unwrap().bits_per_second, 116_000_000);
        assert_eq!(parse_rate("250Mbit").unwrap().bits_per_second, 250_000_000);
        assert_eq!(
            parse_rate("1.5gbit").unwrap().bits_per_second,
            1_500_000_000
        );
        assert_eq!(parse_rate("800kbit").unwrap().bits_per_second, 800_000);
        assert!(parse_rate("116").is_err());
        assert!(parse_rate("116mbps").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1bit").is_err());
    }
}
