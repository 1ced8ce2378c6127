//! `connect_allow` entries: a server name pattern with a port.

use std::fmt;
use std::str::FromStr;

use crate::sni::{NamePattern, NamePatternError};

/// One entry of a CONNECT route's allow list: a name pattern (as in SNI tables: `example.com`
/// or `*.amazonaws.com`) and the one port it may be reached on, written `*.amazonaws.com:443`.
/// A CONNECT request is allowed when its host matches the pattern and its port is the port.
/// Requests for an IP literal match no pattern (they are refused: the allow list is of names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectPattern {
    name: NamePattern,
    port: u16,
}

/// Why [`ConnectPattern::parse`] refused an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectPatternError {
    /// No `:port` at the end.
    #[error("connect_allow entry {entry:?} has no port: write e.g. \"*.amazonaws.com:443\"")]
    NoPort {
        /// The entry as given.
        entry: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("connect_allow entry {entry:?}: the port must be a number from 1 to 65535")]
    BadPort {
        /// The entry as given.
        entry: String,
    },
    /// The name part is not a valid pattern.
    #[error("connect_allow entry {entry:?}: {problem}")]
    Name {
        /// The entry as given.
        entry: String,
        /// What is wrong with the name.
        problem: NamePatternError,
    },
}

impl ConnectPattern {
    /// Parses `pattern:port`.
    ///
    /// # Errors
    ///
    /// No port, a port out of range, or a name pattern [`NamePattern::parse`] refuses.
    pub fn parse(entry: &str) -> Result<ConnectPattern, ConnectPatternError> {
        let Some((name, port)) = entry.rsplit_once(':') else {
            return Err(ConnectPatternError::NoPort {
                entry: entry.to_owned(),
            });
        };
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(ConnectPatternError::BadPort {
                    entry: entry.to_owned(),
                });
            }
        };
        let name = NamePattern::parse(name).map_err(|problem| ConnectPatternError::Name {
            entry: entry.to_owned(),
            problem,
        })?;
        Ok(ConnectPattern { name, port })
    }

    /// Whether a request for `host:port` is allowed by this entry (`host` as the request gave
    /// it: case and one trailing dot do not matter).
    #[must_use]
    pub fn matches(&self, host: &str, port: u16) -> bool {
        port == self.port && self.name.matches(host)
    }

    /// The name pattern.
    #[must_use]
    pub fn name(&self) -> &NamePattern {
        &self.name
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for ConnectPattern {
    type Err = ConnectPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectPattern::parse(s)
    }
}

impl fmt::Display for ConnectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_allows_its_names_on_its_port_only() {
        let p = ConnectPattern::parse("*.amazonaws.com:443").unwrap();
        assert!(p.matches("bucket.s3.ap-northeast-1.amazonaws.com", 443));
        assert!(p.matches("S3.AMAZONAWS.COM.", 443));
        assert!(!p.matches("s3.amazonaws.com", 80));
        assert!(!p.matches("amazonaws.com", 443));
        assert!(!p.matches("evil.com", 443));
        assert!(!p.matches("52.219.0.1", 443));
        assert_eq!(p.to_string(), "*.amazonaws.com:443");
        let exact = ConnectPattern::parse("example.com:8443").unwrap();
        assert!(exact.matches("example.com", 8443));
        assert!(!exact.matches("a.example.com", 8443));
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        for (entry, says) in [
            ("*.amazonaws.com", "no port"),
            ("*.amazonaws.com:0", "1 to 65535"),
            ("*.amazonaws.com:99999", "1 to 65535"),
            ("*.amazonaws.com:https", "1 to 65535"),
            ("*:443", "every name"),
            ("a.*.com:443", "first label"),
            ("1.2.3.4:443", "1.2.3.4"),
        ] {
            let e = ConnectPattern::parse(entry).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(entry), "{entry}: {e}");
        }
    }
}
