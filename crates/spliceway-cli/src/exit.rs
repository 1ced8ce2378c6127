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

/// Which command started the relay: the advice for a port that needs privileges differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starter {
    /// `spliceway relay`: flags.
    Relay,
    /// `spliceway run`: the configuration file and the systemd unit.
    Run,
}

/// Maps a library error to the CLI's exit status: start-up problems the user can fix by
/// changing the command line are usage errors. A port refused for want of privileges (the
/// kernel says only "Permission denied") names the capability and how to have it.
pub fn from_relay_error(error: spliceway::Error, starter: Starter) -> anyhow::Error {
    use spliceway::Error as E;
    match error {
        E::Bind { addr, ref source } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            usage(anyhow::anyhow!(
                "cannot listen on {addr}: {source}: {}",
                privileged_port_advice(addr.port(), starter)
            ))
        }
        E::Address(_) | E::Bind { .. } | E::Resolve { .. } | E::SelfLoop { .. } | E::Invalid(_) => {
            usage(error)
        }
        other => anyhow::Error::new(other),
    }
}

/// Why binding `port` was refused and the ways to be allowed, for `starter`.
fn privileged_port_advice(port: u16, starter: Starter) -> String {
    let why = format!(
        "port {port} is below net.ipv4.ip_unprivileged_port_start (1024 by default), so binding \
         it needs root or CAP_NET_BIND_SERVICE"
    );
    let how = match starter {
        Starter::Relay => {
            "start as root with --user NAME (the relay drops to that user once bound, keeping \
             only CAP_NET_BIND_SERVICE), or run it with that capability alone (e.g. \
             systemd-run -p AmbientCapabilities=CAP_NET_BIND_SERVICE), or listen on a port \
             from 1024 up"
        }
        Starter::Run => {
            "run it from the packaged systemd unit (spliceway.service grants \
             AmbientCapabilities=CAP_NET_BIND_SERVICE to an unprivileged user), or start it as \
             root with user = \"NAME\" in the configuration (it drops to that user once \
             bound), or listen on a port from 1024 up"
        }
    };
    format!("{why}: {how}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_low_port_names_the_capability_and_the_ways_to_have_it() {
        let refused = |starter| {
            let error = spliceway::Error::Bind {
                addr: "0.0.0.0:443".parse().unwrap(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            };
            let error = from_relay_error(error, starter);
            assert_eq!(status_of(&error), USAGE);
            format!("{error:#}")
        };
        let relay = refused(Starter::Relay);
        assert!(
            relay.starts_with("cannot listen on 0.0.0.0:443: "),
            "{relay}"
        );
        assert!(
            relay.contains("CAP_NET_BIND_SERVICE") && relay.contains("--user"),
            "{relay}"
        );
        let run = refused(Starter::Run);
        assert!(
            run.contains("CAP_NET_BIND_SERVICE") && run.contains("user = "),
            "{run}"
        );
        assert!(run.contains("systemd unit"), "{run}");
    }
}
