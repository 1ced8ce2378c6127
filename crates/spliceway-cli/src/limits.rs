//! The open-file limit: raised to its hard maximum at start-up, and checked against the
//! connection limit of the configuration.
//!
//! Each relayed connection holds two sockets and, in splice mode while bytes are in flight, up
//! to two pipes (two descriptors each): up to [`DESCRIPTORS_PER_CONNECTION`]. When the limit is
//! reached anyway, `accept` fails with `EMFILE`; the relay then stops accepting for a moment
//! (the engine's `ACCEPT_BACKOFF`) instead of spinning, and waiting clients stay in the kernel's
//! backlog.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors one connection may hold: 2 sockets + 2 pipes of 2 ends.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 6;

/// Descriptors kept aside for listeners, epoll, the metrics server, logs and the resolver.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The soft and hard `RLIMIT_NOFILE` after raising the soft one to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

impl FileLimit {
    /// How many connections fit in the soft limit.
    pub fn connections(&self) -> u64 {
        self.soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION
    }
}

/// Raises the soft open-file limit to the hard one; returns the limits in force after.
pub fn raise_nofile() -> nix::Result<FileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
        return Ok(FileLimit { soft, hard });
    }
    Ok(FileLimit { soft: hard, hard })
}

/// Logs whether `limit` can carry `capacity` connections (`None`: no connection limit).
pub fn check(limit: FileLimit, capacity: Option<usize>) {
    let fit = limit.connections();
    match capacity {
        Some(wanted) if (wanted as u64) > fit => tracing::warn!(
            "the open-file limit ({soft}) carries about {fit} connections ({DESCRIPTORS_PER_CONNECTION} \
             descriptors each), fewer than the configured {wanted}: raise LimitNOFILE (systemd) \
             or `ulimit -n`; beyond it, accepting pauses on EMFILE and clients wait in the backlog",
            soft = limit.soft,
        ),
        Some(wanted) => tracing::info!(
            "open-file limit {soft}: room for about {fit} connections (configured at most {wanted})",
            soft = limit.soft,
        ),
        None => tracing::info!(
            "open-file limit {soft}: room for about {fit} connections; there is no \
             max_connections, so beyond that accepting pauses on EMFILE",
            soft = limit.soft,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_limit() {
        let limit = FileLimit {
            soft: 1024,
            hard: 4096,
        };
        assert_eq!(limit.connections(), (1024 - 64) / 6);
        assert_eq!(FileLimit { soft: 10, hard: 10 }.connections(), 0);
    }
}
