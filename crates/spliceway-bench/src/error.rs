//! [`UsageError`]: the mark on errors the user fixes by changing the command line, so that the
//! binary can end with the usage exit status (2) rather than the failure status (1).

use std::fmt;

/// An error in how a command was invoked: a bad flag value or combination, an address that does
/// not resolve or cannot be bound, a missing privilege or tool. The `spliceway` binary exits
/// with status 2 when it finds one in an error's chain ([`anyhow::Error::chain`]); any other
/// error, a failed integrity check included, exits with 1.
#[derive(Debug)]
pub struct UsageError(anyhow::Error);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

// No `source`: the message above already holds the whole chain, once.
impl std::error::Error for UsageError {}

/// Marks an error as a usage error.
pub(crate) fn usage(error: impl Into<anyhow::Error>) -> anyhow::Error {
    UsageError(error.into()).into()
}
