//! Sizes as people write them: `65536`, `64KiB`, `1MiB`, `64KB`. The binary units (`KiB`,
//! `MiB`, `GiB`: 1024ⁿ) and the decimal ones (`KB`, `MB`, `GB`: 1000ⁿ) are taken as written;
//! a bare `K`, `M` or `G` is refused, because people mean either by it (`--pipe-size 512K` was
//! once read as 512,000 bytes and logged as "500.0 KiB"). The configuration file's sizes and
//! the command line's `--pipe-size` and the like share this one reading.

/// A unit a size may carry, and what it multiplies by. Case is not significant (`kib`, `KIB`).
const UNITS: [(&str, u64); 11] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    // Written out by some tools; unambiguous.
    ("bytes", 1),
    ("byte", 1),
];

/// Units that name no base: people mean 1024 by some and 1000 by others.
const AMBIGUOUS: [&str; 8] = ["K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"];

/// Why a text is not a size ([`parse_size`]). The message is a sentence for the user, quoting
/// the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// The text does not start with a number (or its number is malformed).
    #[error("{text:?} is not a size (write e.g. \"64KiB\", \"1MiB\" or a number of bytes)")]
    NotASize {
        /// The text as given.
        text: String,
    },
    /// A bare `K`, `M`, `G` or `T`: people mean 1024 by it and 1000 by it.
    #[error(
        "{text:?}: the unit {unit:?} is ambiguous: write {number}{stem}iB ({binary}) or \
         {number}{stem}B ({decimal})",
        binary = meanings(stem).0,
        decimal = meanings(stem).1
    )]
    AmbiguousUnit {
        /// The text as given.
        text: String,
        /// The number part.
        number: String,
        /// The unit as written.
        unit: String,
        /// The unit's letter (`K`, `M`, `G`, `T`).
        stem: String,
    },
    /// A unit this reader does not know.
    #[error(
        "{text:?}: unknown unit {unit:?} (write KiB, MiB, GiB for powers of 1024, \
         KB, MB, GB for powers of 1000, or a number of bytes)"
    )]
    UnknownUnit {
        /// The text as given.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More bytes than a 64-bit count holds.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The text as given.
        text: String,
    },
}

/// Reads a size in bytes: a number (with an optional fraction) and an optional unit, e.g.
/// `65536`, `64KiB`, `1.5MiB`, `64KB`.
///
/// # Errors
///
/// [`SizeError`]: the text is not a size, or its unit is unknown or ambiguous (a bare `K`,
/// `M`, `G`: write `KiB` for 1024 bytes or `KB` for 1000).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..digits], text[digits..].trim());
    let not_a_size = || SizeError::NotASize {
        text: text.to_string(),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(not_a_size());
    }
    if let Some(ambiguous) = AMBIGUOUS.iter().find(|a| a.eq_ignore_ascii_case(unit)) {
        return Err(SizeError::AmbiguousUnit {
            text: text.to_string(),
            number: number.to_string(),
            unit: unit.to_string(),
            stem: ambiguous[..1].to_string(),
        });
    }
    let factor = if unit.is_empty() {
        1
    } else {
        match UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        {
            Some((_, factor)) => *factor,
            None => {
                return Err(SizeError::UnknownUnit {
                    text: text.to_string(),
                    unit: unit.to_string(),
                });
            }
        }
    };
    let too_large = || SizeError::TooLarge {
        text: text.to_string(),
    };
    match number.parse::<u64>() {
        Ok(n) => n.checked_mul(factor).ok_or_else(too_large),
        Err(_) => {
            let value: f64 = number.parse().map_err(|_| not_a_size())?;
            let bytes = value * factor as f64;
            if bytes >= u64::MAX as f64 {
                return Err(too_large());
            }
            Ok(bytes as u64)
        }
    }
}

/// What the binary and the decimal unit of `stem` (`K`, `M`, `G`, `T`) are worth.
fn meanings(stem: &str) -> (&'static str, &'static str) {
    match stem.to_ascii_uppercase().as_str() {
        "K" => ("1 KiB = 1024 bytes", "1 KB = 1000 bytes"),
        "M" => ("1 MiB = 1,048,576 bytes", "1 MB = 1,000,000 bytes"),
        "G" => ("1 GiB = 1,073,741,824 bytes", "1 GB = 1,000,000,000 bytes"),
        _ => ("1 TiB = 1024^4 bytes", "1 TB = 1000^4 bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units_are_read_as_written() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("512kib"), Ok(512 * 1024));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("512kB"), Ok(512_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn a_bare_k_m_or_g_is_refused_with_both_spellings() {
        for (text, binary, decimal) in [
            ("512K", "512KiB", "512KB"),
            ("512k", "512KiB", "512KB"),
            ("1M", "1MiB", "1MB"),
            ("2G", "2GiB", "2GB"),
            ("4Ki", "4KiB", "4KB"),
        ] {
            let error = parse_size(text).unwrap_err().to_string();
            assert!(
                error.contains("ambiguous") && error.contains(binary) && error.contains(decimal),
                "{text}: {error}"
            );
        }
        let error = parse_size("512K").unwrap_err().to_string();
        assert!(error.contains("512KiB (1 KiB = 1024 bytes)"), "{error}");
        assert!(error.contains("512KB (1 KB = 1000 bytes)"), "{error}");
    }

    #[test]
    fn nonsense_is_refused() {
        for text in [
            "",
            "lots",
            "KiB",
            "1.2.3MiB",
            "5 parsecs",
            ".5MiB",
            "99999999999999TiB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?}");
        }
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
    }
}
