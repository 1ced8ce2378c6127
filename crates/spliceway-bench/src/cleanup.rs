//! What the bench must undo, whatever way it ends: child processes (relays, peers), cgroups and
//! network namespaces. Each owner (a guard with `Drop`) registers what it creates here before
//! creating it, and says how to remove it: the registry holds that removal and runs it exactly
//! once, when the owner is done with the resource or, if the bench is interrupted first, from
//! the signal thread, which then exits with 128 + the signal number.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long a child gets between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(3);

/// The prefix of everything this process creates (namespaces, cgroups): `swb<pid>-`. What an
/// earlier run with the same PID left behind after a crash starts with it too.
pub(crate) fn prefix() -> String {
    format!("swb{}-", std::process::id())
}

/// The registry of things to undo.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    processes: Vec<i32>,
    /// Newest last; undone newest first.
    removals: Vec<Removal>,
}

/// A resource other than a process, by name, and its owner's way of removing it.
struct Removal {
    name: String,
    remove: Box<dyn FnOnce() + Send>,
}

impl fmt::Debug for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Removal")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cleanup {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn track_process(&self, pid: i32) {
        self.lock().processes.push(pid);
    }

    pub(crate) fn untrack_process(&self, pid: i32) {
        self.lock().processes.retain(|p| *p != pid);
    }

    /// Registers resource `name` (before it is created) with the way to remove it, which must
    /// not fail when there is nothing to remove.
    pub(crate) fn track(&self, name: impl Into<String>, remove: impl FnOnce() + Send + 'static) {
        self.lock().removals.push(Removal {
            name: name.into(),
            remove: Box::new(remove),
        });
    }

    /// Removes resource `name` now and forgets it; nothing happens if it is not registered
    /// (any more). Holds the lock while removing, so an interruption meanwhile waits for it.
    pub(crate) fn remove(&self, name: &str) {
        let mut state = self.lock();
        if let Some(i) = state.removals.iter().rposition(|r| r.name == name) {
            (state.removals.remove(i).remove)();
        }
    }

    /// Forgets resource `name` without removing it: its owner has handed it on (an S3
    /// multipart upload completed, an object kept with `--keep`).
    pub(crate) fn forget(&self, name: &str) {
        let mut state = self.lock();
        if let Some(i) = state.removals.iter().rposition(|r| r.name == name) {
            drop(state.removals.remove(i));
        }
    }

    /// Stops every registered process, then removes the other resources, newest first (cgroups
    /// before the namespaces made before them). Holds the lock throughout, so an owner cleaning
    /// up at the same time waits and then finds nothing to do.
    pub(crate) fn run_all(&self) {
        let mut state = self.lock();
        let pids: Vec<Pid> = state.processes.drain(..).map(Pid::from_raw).collect();
        stop_processes(&pids, STOP_GRACE);
        while let Some(removal) = state.removals.pop() {
            (removal.remove)();
        }
    }
}

/// Sends SIGTERM to each process (our children, each the leader of its own process group, so
/// the group: a forking peer's children with it), waits up to `grace` for them to exit, then
/// SIGKILLs the rest and what is left of their groups; reaps them all.
fn stop_processes(pids: &[Pid], grace: Duration) {
    let group = |pid: &Pid| Pid::from_raw(-pid.as_raw());
    for pid in pids {
        let _ = kill(group(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut left: Vec<Pid> = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|pid| {
            matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for pid in left {
        let _ = kill(group(&pid), Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    for pid in pids {
        let _ = kill(group(pid), Signal::SIGKILL);
    }
}
