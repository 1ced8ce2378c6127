//! Rates as people write them: in bits per second as links are sold (`600mbit`, `1gbit`,
//! `10Gbit/s`) or in bytes per second as files are measured (`75MB`, `64MiB/s`). Bit units
//! spell out `bit` and are decimal (`kbit` = 1000 bit/s); byte units are those of sizes
//! (`KB` = 1000, `KiB` = 1024 bytes). `mbps` and the like are refused: `tc` reads `mbps` as
//! megabytes and most people as megabits. A rate needs a unit (a bare `600` could be either),
//! must be at least one byte a second and at most [`MAX_RATE_BYTES`] (1 Tbit/s): beyond any
//! NIC, so a value past it is a unit mixed up.

/// The highest rate accepted, in bytes per second: 1 Tbit/s.
pub const MAX_RATE_BYTES: u64 = 125_000_000_000;

/// Bit-rate units and their bits per second. Case is not significant.
const BIT_UNITS: [(&str, u64); 5] = [
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
];

/// Reads a rate in bytes per second: `600mbit`, `1.5gbit/s`, `75MB`, `64MiB/s`.
///
/// # Errors
///
/// A sentence for the user: no number, no unit, an unknown or ambiguous unit, zero, less than
/// a byte a second, or more than 1 Tbit/s.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let body = text
        .strip_suffix("/s")
        .or_else(|| text.strip_suffix("/S"))
        .unwrap_or(text)
        .trim_end();
    let digits = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = (&body[..digits], body[digits..].trim());
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!(
            "{text:?} is not a rate (write e.g. \"600mbit\" for bits or \"75MB\" for bytes a \
             second)"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (write e.g. \"600mbit\")"))?;
    if unit.is_empty() {
        return Err(format!(
            "{text:?} has no unit: write e.g. \"{number}mbit\" (bits a second) or \
             \"{number}MB\" (bytes a second)"
        ));
    }
    if unit.to_ascii_lowercase().ends_with("bps") {
        return Err(format!(
            "{text:?}: the unit {unit:?} is ambiguous (megabits or megabytes?): write \
             {number}mbit for bits or {number}MB for bytes a second"
        ));
    }
    let bytes = if let Some((_, bits)) = BIT_UNITS.iter().find(|(name, _)| {
        name.eq_ignore_ascii_case(unit) || unit.eq_ignore_ascii_case(&format!("{name}s"))
    }) {
        value * *bits as f64 / 8.0
    } else {
        let per_unit = crate::parse_size(&format!("1{unit}")).map_err(|e| {
            if e.contains("ambiguous") {
                format!(
                    "{text:?}: the unit {unit:?} is ambiguous: write {number}{unit}bit for bits, \
                     or {number}{unit}B or {number}{unit}iB for bytes a second"
                )
            } else {
                format!(
                    "{text:?}: unknown unit {unit:?} (write kbit, mbit, gbit for bits, or KB, \
                     MB, GB, KiB, MiB, GiB for bytes a second)"
                )
            }
        })?;
        value * per_unit as f64
    };
    if bytes == 0.0 && value == 0.0 {
        return Err(format!(
            "{text:?} is zero: no byte would ever pass (leave the limit out for none)"
        ));
    }
    if bytes < 1.0 {
        return Err(format!("{text:?} is less than one byte a second"));
    }
    if bytes > MAX_RATE_BYTES as f64 {
        return Err(format!(
            "{text:?} is more than 1 Tbit/s, faster than any link: a unit mixed up?"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn bits_and_bytes_are_read_as_written() {
        assert_eq!(parse_rate("600mbit"), Ok(75_000_000));
        assert_eq!(parse_rate("600Mbit"), Ok(75_000_000));
        assert_eq!(parse_rate("600 mbit/s"), Ok(75_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("1.5Gbit/s"), Ok(187_500_000));
        assert_eq!(parse_rate("64kbit"), Ok(8_000));
        assert_eq!(parse_rate("800bit"), Ok(100));
        assert_eq!(parse_rate("75MB"), Ok(75_000_000));
        assert_eq!(parse_rate("75MB/s"), Ok(75_000_000));
        assert_eq!(parse_rate("64MiB/s"), Ok(64 << 20));
        assert_eq!(parse_rate("1 KiB"), Ok(1024));
        assert_eq!(parse_rate("100B"), Ok(100));
        assert_eq!(parse_rate("1Tbit"), Ok(125_000_000_000));
    }

    #[test]
    fn zero_absurd_and_bad_units_are_refused_with_reasons() {
        for (text, words) in [
            ("0mbit", "is zero"),
            ("0MB", "is zero"),
            ("4bit", "less than one byte"),
            ("2tbit", "more than 1 Tbit/s"),
            ("999GB", "more than 1 Tbit/s"),
            ("600", "has no unit"),
            ("600mbps", "ambiguous"),
            ("75MBps", "ambiguous"),
            ("600 parsecs", "unknown unit"),
            ("600M", "ambiguous"),
            ("fast", "is not a rate"),
            ("", "is not a rate"),
            ("1.2.3mbit", "is not a rate"),
        ] {
            let error = parse_rate(text).unwrap_err();
            assert!(error.contains(words), "{text:?}: {error}");
        }
    }
}
