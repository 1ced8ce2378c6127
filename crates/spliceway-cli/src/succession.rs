//! The relays an upgrade links: the process this one replaced (its *predecessor*) and the
//! process that replaces it (its *successor*).
//!
//! Why it matters to signals (issue 24, finding 8): during an upgrade, and while the old
//! process drains after one, two processes serve the service. A supervisor that signals only
//! the pid it started (the old one) could not stop the new one: the old process exited 0 and
//! the new one served on. So the old process passes each SIGTERM/SIGINT it acts on to its
//! successor ([`Successor::pass_on`]). But `systemctl stop` (KillMode=control-group) signals
//! every process of the unit, so the successor may hear one stop twice, once directly and once
//! passed on; the signal thread (`signals.rs`) counts signals from its predecessor
//! ([`predecessor`]) apart from the others, so that only two of the same kind reset.

use std::sync::Mutex;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Tells the process an upgrade starts the pid of the process that started it (set beside
/// `SPLICEWAY_UPGRADE_FROM`).
pub const UPGRADE_FROM_PID: &str = "SPLICEWAY_UPGRADE_FROM_PID";

/// The pid of the relay that started this one by an upgrade, read from the environment; ask
/// only in a process that took its sockets over from another (`takeover.rs`). Not
/// `getppid()`: if the old process has already exited, the parent is init or a subreaper,
/// whose signals are direct ones.
pub fn predecessor() -> Option<i32> {
    std::env::var(UPGRADE_FROM_PID)
        .ok()?
        .parse()
        .ok()
        .filter(|&pid| pid > 1)
}

/// The successor of this relay, shared by the control thread (which starts it) and the signal
/// thread (which passes stop signals on to it).
#[derive(Debug, Default)]
pub struct Successor {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The process an upgrade started, from its start until the upgrade fails (it is then
    /// forgotten before it is reaped) or, if it succeeds, for the rest of this process's life.
    pid: Option<i32>,
    /// The first stop signal this relay acted on.
    stopping: Option<Signal>,
}

impl Successor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `pid`, the process an upgrade has just started. If a stop signal was acted on
    /// already, nothing is recorded and that signal is returned: the upgrade must not go on
    /// (its new process would serve after the service was told to stop). Together with
    /// [`pass_on`](Self::pass_on), under one lock, a stop is never missed: either the signal
    /// thread sees the pid, or this sees the stop.
    pub fn adopt(&self, pid: u32) -> Result<(), Signal> {
        let mut state = self.lock();
        if let Some(signal) = state.stopping {
            return Err(signal);
        }
        state.pid = Some(pid as i32);
        Ok(())
    }

    /// Forgets the successor of an upgrade that failed, before the final `wait`. (The checks
    /// that found it dead may have reaped it already, a moment earlier; a pid is only reused
    /// after the kernel has handed out the others up to `pid_max`.)
    pub fn forget(&self) {
        self.lock().pid = None;
    }

    /// Records a stop signal this relay acts on (SIGTERM or SIGINT, a drain or a reset) and
    /// passes it on to the successor if there is one; returns its pid. The recorded pid is
    /// still the successor's: this process is its parent, and reaps it only when the upgrade
    /// fails, when it is [forgotten](Self::forget) (after a successful upgrade, never: it stays
    /// a zombie if it exits first, its pid reserved).
    pub fn pass_on(&self, signal: i32) -> Option<i32> {
        let signal = Signal::try_from(signal).ok()?;
        let mut state = self.lock();
        state.stopping.get_or_insert(signal);
        let pid = state.pid?;
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) => {
                tracing::info!("signal {signal}: passed on to pid {pid}, the upgraded relay");
                Some(pid)
            }
            Err(e) => {
                tracing::warn!("signal {signal}: cannot pass it on to pid {pid}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_before_the_successor_is_recorded_stops_the_upgrade() {
        let successor = Successor::default();
        assert_eq!(
            successor.pass_on(signal_hook::consts::SIGTERM),
            None,
            "no successor yet"
        );
        assert_eq!(successor.adopt(4242), Err(Signal::SIGTERM));
        assert_eq!(successor.lock().pid, None);
    }

    #[test]
    fn a_forgotten_successor_is_not_signalled() {
        let successor = Successor::default();
        successor.adopt(4242).unwrap();
        successor.forget();
        assert_eq!(successor.pass_on(signal_hook::consts::SIGINT), None);
        assert_eq!(successor.lock().stopping, Some(Signal::SIGINT));
    }

    #[test]
    fn the_successor_is_signalled() {
        // A child that waits for a signal: SIGTERM ends it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let successor = Successor::default();
        successor.adopt(child.id()).unwrap();
        assert_eq!(
            successor.pass_on(signal_hook::consts::SIGTERM),
            Some(child.id() as i32)
        );
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(signal_hook::consts::SIGTERM));
    }
}
