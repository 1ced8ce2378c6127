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

/// Why a text is not a rate ([`parse_rate`]). The message is a sentence for the user, quoting
/// the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// The text does not start with a number (or its number is malformed).
    #[error(
        "{text:?} is not a rate (write e.g. \"600mbit\" for bits or \"75MB\" for bytes a second)"
    )]
    NotARate {
        /// The text as given.
        text: String,
    },
    /// A number without a unit: bits or bytes?
    #[error(
        "{text:?} has no unit: write e.g. \"{number}mbit\" (bits a second) or \"{number}MB\" \
         (bytes a second)"
    )]
    NoUnit {
        /// The text as given.
        text: String,
        /// The number part.
        number: String,
    },
    /// `mbps` and the like (`tc` reads them as bytes, most people as bits), or a bare `M`.
    #[error(
        "{text:?}: the unit {unit:?} is ambiguous (bits or bytes?): write {number}mbit, \
         {number}gbit for bits, or {number}MB, {number}MiB for bytes a second"
    )]
    AmbiguousUnit {
        /// The text as given.
        text: String,
        /// The number part.
        number: String,
        /// The unit as written.
        unit: String,
    },
    /// A unit this reader does not know.
    #[error(
        "{text:?}: unknown unit {unit:?} (write kbit, mbit, gbit for bits, or KB, MB, GB, KiB, \
         MiB, GiB for bytes a second)"
    )]
    UnknownUnit {
        /// The text as given.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Zero: no byte would ever pass.
    #[error("{text:?} is zero: no byte would ever pass (leave the limit out for none)")]
    Zero {
        /// The text as given.
        text: String,
    },
    /// Less than one byte a second.
    #[error("{text:?} is less than one byte a second")]
    TooSlow {
        /// The text as given.
        text: String,
    },
    /// More than [`MAX_RATE_BYTES`].
    #[error("{text:?} is more than 1 Tbit/s, faster than any link: a unit mixed up?")]
    TooFast {
        /// The text as given.
        text: String,
    },
}

/// Reads a rate in bytes per second: `600mbit`, `1.5gbit/s`, `75MB`, `64MiB/s`.
///
/// # Errors
///
/// [`RateError`]: no number, no unit, an unknown or ambiguous unit, zero, less than a byte a
/// second, or more than 1 Tbit/s.
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let text = text.trim();
    let owned = || text.to_owned();
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
        return Err(RateError::NotARate { text: owned() });
    }
    let value: f64 = number
        .parse()
        .map_err(|_| RateError::NotARate { text: owned() })?;
    if unit.is_empty() {
        return Err(RateError::NoUnit {
            text: owned(),
            number: number.to_owned(),
        });
    }
    let ambiguous = || RateError::AmbiguousUnit {
        text: owned(),
        number: number.to_owned(),
        unit: unit.to_owned(),
    };
    if unit.to_ascii_lowercase().ends_with("bps") {
        return Err(ambiguous());
    }
    let bit_unit = BIT_UNITS.iter().find(|(name, _)| {
        name.eq_ignore_ascii_case(unit) || unit.eq_ignore_ascii_case(&format!("{name}s"))
    });
    let bytes = if let Some((_, bits)) = bit_unit {
        value * *bits as f64 / 8.0
    } else {
        let per_unit = crate::parse_size(&format!("1{unit}")).map_err(|e| match e {
            crate::SizeError::AmbiguousUnit { .. } => ambiguous(),
            _ => RateError::UnknownUnit {
                text: owned(),
                unit: unit.to_owned(),
            },
        })?;
        value * per_unit as f64
    };
    if value == 0.0 {
        return Err(RateError::Zero { text: owned() });
    }
    if bytes < 1.0 {
        return Err(RateError::TooSlow { text: owned() });
    }
    if bytes > MAX_RATE_BYTES as f64 {
        return Err(RateError::TooFast { text: owned() });
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
            let error = parse_rate(text).unwrap_err().to_string();
            assert!(error.contains(words), "{text:?}: {error}");
        }
    }
}
