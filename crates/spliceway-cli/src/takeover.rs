//! The new process's side of `spliceway upgrade`: started by the relay it replaces with
//! `SPLICEWAY_UPGRADE_FROM` naming that relay's control socket, it connects there once its
//! configuration has been read (a bad one exits 78 before anything is taken), asks for the
//! listening sockets, builds its relay on them, and reports `ready` (`upgrade.rs`).
//!
//! Test-only seam: with [`TEST_HANDOFF_DELAY`] set (milliseconds, at most
//! [`MAX_TEST_HANDOFF_DELAY_MS`]) the new process waits that long before it asks for the
//! sockets, so that a test can signal the old process while the upgrade is deterministically
//! under way (`tests/daemon/upgrade_signals.rs`). It is read only by a process an upgrade
//! started, is logged as a warning when honoured, and has no use in production.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::handoff::{self, Received};
use crate::upgrade::UPGRADE_FROM;

/// Test-only: the environment variable a test sets to widen an upgrade's window (module
/// documentation).
pub const TEST_HANDOFF_DELAY: &str = "SPLICEWAY_TEST_ONLY_HANDOFF_DELAY_MS";
/// Longest delay [`TEST_HANDOFF_DELAY`] may ask for: well within the old process's
/// `READY_TIMEOUT`, so that the seam cannot make an upgrade fail by itself.
pub const MAX_TEST_HANDOFF_DELAY_MS: u64 = 5_000;

/// The sockets taken over, and the connection to report readiness on.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
    received: Received,
}

/// Takes the old process's sockets when this process was started by an upgrade.
///
/// # Errors
///
/// The old process cannot be reached or sends something other than sockets.
pub fn take() -> anyhow::Result<Option<Takeover>> {
    let Some(path) = std::env::var_os(UPGRADE_FROM) else {
        return Ok(None);
    };
    let path = Path::new(&path);
    test_handoff_delay();
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("upgrade: connecting to {}", path.display()))?;
    stream.write_all(b"handoff\n")?;
    let received = handoff::receive(&stream)?;
    tracing::info!(
        "upgrade: took over {} listening sockets and {} UDP sockets from the process at {}",
        received.listen.len(),
        received.udp.len(),
        path.display()
    );
    Ok(Some(Takeover { stream, received }))
}

/// Honours [`TEST_HANDOFF_DELAY`] (a test seam; see the module documentation).
fn test_handoff_delay() {
    let Some(ms) = std::env::var(TEST_HANDOFF_DELAY)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let ms = ms.min(MAX_TEST_HANDOFF_DELAY_MS);
    tracing::warn!("{TEST_HANDOFF_DELAY} is set (a test seam): waiting {ms} ms before the handoff");
    std::thread::sleep(Duration::from_millis(ms));
}

impl Takeover {
    /// The relay sockets whose address is one of `listen` (routes of the new configuration);
    /// the others (routes dropped) are closed.
    pub fn listeners(&mut self, listen: &[SocketAddr]) -> Vec<TcpListener> {
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.received.listen)
            .into_iter()
            .partition(|(addr, _)| listen.contains(addr));
        for (addr, _) in &dropped {
            tracing::info!("upgrade: {addr} is no route's address any more: closing it");
        }
        kept.into_iter().map(|(_, socket)| socket).collect()
    }

    /// The UDP sockets whose address is one of `listen` (UDP routes of the new configuration);
    /// the others (routes dropped) are closed here (the old process holds them until it ends).
    pub fn udp_sockets(&mut self, listen: &[SocketAddr]) -> Vec<UdpSocket> {
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.received.udp)
            .into_iter()
            .partition(|(addr, _)| listen.contains(addr));
        for (addr, _) in &dropped {
            tracing::info!("upgrade: {addr} (UDP) is no route's address any more: closing it");
        }
        kept.into_iter().map(|(_, socket)| socket).collect()
    }

    /// The metrics socket, if it listens on `addr`.
    pub fn metrics(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        match self.received.metrics.take() {
            Some((at, socket)) if at == addr => Some(socket),
            _ => None,
        }
    }

    /// The control socket, if it is bound at `path`.
    pub fn control(&mut self, path: &Path) -> Option<UnixListener> {
        match self.received.control.take() {
            Some((at, socket)) if at == path => Some(socket),
            _ => None,
        }
    }

    /// Tells the old process this one serves: it stops accepting and drains.
    pub fn ready(mut self) -> anyhow::Result<()> {
        self.stream
            .write_all(b"ready\n")
            .context("upgrade: reporting ready")
    }
}
