//! Patterns of allowed server names: exact names and `*.` wildcards.

use std::fmt;
use std::str::FromStr;

use super::host_name::{is_valid_label, normalize_host_name};

/// One entry of a table of allowed server names: an exact name (`example.com`) or a wildcard
/// (`*.s3.ap-northeast-1.amazonaws.com`).
///
/// The relay uses a list of these to decide which names a route accepts, so that it does not
/// become an open relay to any host a client names. A wildcard matches one or more labels in
/// front of its suffix: `*.s3.ap-northeast-1.amazonaws.com` matches
/// `bucket.s3.ap-northeast-1.amazonaws.com` and `a.b.s3.ap-northeast-1.amazonaws.com` but not
/// `s3.ap-northeast-1.amazonaws.com` itself (list that separately if wanted). Matching is
/// case-insensitive and ignores one trailing dot on the client's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern {
    /// Whether the pattern was `*.` + `name`.
    wildcard: bool,
    /// The exact name or the wildcard's suffix, lower-cased, without a trailing dot.
    name: String,
}

/// Why [`NamePattern::parse`] refused a pattern; the message names the pattern and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamePatternError {
    /// The pattern is empty.
    #[error("empty server name pattern")]
    Empty,
    /// `*` (or `*.`) alone: it would allow every name.
    #[error(
        "server name pattern {pattern:?} would match every name; \
         give a suffix such as \"*.example.com\""
    )]
    MatchesEverything {
        /// The pattern as given.
        pattern: String,
    },
    /// A `*` that is not the whole first label (`*foo.com`, `a.*.com`).
    #[error(
        "server name pattern {pattern:?}: '*' is only allowed as the whole first label, \
         as in \"*.example.com\""
    )]
    MisplacedWildcard {
        /// The pattern as given.
        pattern: String,
    },
    /// The name is not a valid DNS host name.
    #[error("server name pattern {pattern:?}: {problem}")]
    InvalidName {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl NamePattern {
    /// Parses a pattern as written in a configuration file: `example.com` or `*.example.com`.
    ///
    /// Refuses, with a message fit for the user, what could only be a mistake: an empty
    /// pattern, `*` alone (it would allow every name; leave the table out instead), a `*`
    /// anywhere but as the whole first label (`*foo.com`, `a.*.com`: partial wildcards are
    /// not supported), and names that are not valid DNS host names as described on
    /// `ClientHello::server_name` (such a pattern could never match). One trailing dot is
    /// accepted and dropped.
    ///
    /// # Errors
    ///
    /// A message naming the pattern and the problem.
    pub fn parse(pattern: &str) -> Result<NamePattern, NamePatternError> {
        if pattern.is_empty() {
            return Err(NamePatternError::Empty);
        }
        if pattern == "*" || pattern == "*." {
            return Err(NamePatternError::MatchesEverything {
                pattern: pattern.to_owned(),
            });
        }
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, pattern),
        };
        if name.contains('*') {
            return Err(NamePatternError::MisplacedWildcard {
                pattern: pattern.to_owned(),
            });
        }
        let name = normalize_host_name(name.as_bytes()).map_err(|problem| {
            NamePatternError::InvalidName {
                pattern: pattern.to_owned(),
                problem,
            }
        })?;
        Ok(NamePattern { wildcard, name })
    }

    /// Whether `name` (typically `ClientHello::server_name`) is allowed by this pattern.
    ///
    /// Case-insensitive; one trailing dot on `name` is ignored. A wildcard needs at least one
    /// label in front of its suffix, and those labels must be valid (letters, digits, `-`,
    /// `_`, at most 63 bytes), so a name that did not come from `parse_client_hello` cannot
    /// slip odd bytes through a wildcard.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let name = name.strip_suffix(b".").unwrap_or(name);
        let pattern = self.name.as_bytes();
        if !self.wildcard {
            return name.eq_ignore_ascii_case(pattern);
        }
        let Some(prefix_len) = name.len().checked_sub(pattern.len() + 1) else {
            return false;
        };
        let Some((prefix, tail)) = name.split_at_checked(prefix_len) else {
            return false;
        };
        let Some((&b'.', suffix)) = tail.split_first() else {
            return false;
        };
        suffix.eq_ignore_ascii_case(pattern)
            && !prefix.is_empty()
            && prefix.split(|&byte| byte == b'.').all(is_valid_label)
    }

    /// Whether this is a `*.suffix` pattern, for callers that rank exact names before
    /// wildcards or report them differently.
    #[must_use]
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

/// Writes the pattern in the form [`NamePattern::parse`] accepts (normalized: lower-case, no
/// trailing dot), so that logs and error messages show what is actually matched.
impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Same as [`NamePattern::parse`], for `str::parse` and configuration code built on `FromStr`.
impl FromStr for NamePattern {
    type Err = NamePatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        NamePattern::parse(pattern)
    }
}
