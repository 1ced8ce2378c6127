//! Quantities as the flags give them: byte sizes (`--size`) and link rates (`--internet-rate`,
//! `--vpc-rate`), the latter kept in the form tc takes for the emulated links.

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
