//! Exit statuses, as documented in the README and relied on by scripts and systemd units.

/// Success.
pub const OK: u8 = 0;
/// A failure while running (the relay's event loop failed, a benchmark's integrity check failed).
pub const FAILURE: u8 = 1;
/// Bad usage: a bad flag or argument, a bad address, an unresolvable upstream at start-up, a
/// port already in use.
pub const USAGE: u8 = 2;
/// A configuration file error (`EX_CONFIG` from sysexits.h), so a systemd unit can stop
/// restarting on it with `RestartPreventExitStatus=78`.
pub const CONFIG: u8 = 78;

/// An error that carries the exit status it should end the process with.
#[derive(Debug)]
pub struct ExitError {
    pub status: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for ExitError {}

/// Wraps an error with the usage status (2).
pub fn usage(error: impl Into<anyhow::Error>) -> anyhow::Error {
    ExitError {
        status: USAGE,
        error: error.into(),
    }
    .into()
}

/// Wraps an error with the config status (78).
pub fn config(error: impl Into<anyhow::Error>) -> anyhow::Error {
    ExitError {
        status: CONFIG,
        error: error.into(),
    }
    .into()
}

/// The status an error should end the process with (the bench crate marks its usage errors
/// with its own type).
pub fn status_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| match e.downcast_ref::<ExitError>() {
            Some(exit) => Some(exit.status),
            None => e.is::<spliceway_bench::UsageError>().then_some(USAGE),
        })
        .unwrap_or(FAILURE)
}

/// Maps a library error to the CLI's exit status: start-up problems the user can fix by
/// changing the command line are usage errors.
pub fn from_relay_error(error: spliceway::Error) -> anyhow::Error {
    use spliceway::Error as E;
    match error {
        E::Address(_) | E::Bind { .. } | E::Resolve { .. } | E::SelfLoop { .. } | E::Invalid(_) => {
            usage(error)
        }
        other => anyhow::Error::new(other),
    }
}
