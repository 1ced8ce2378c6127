//! What the bench must undo, whatever way it ends: child processes (relays, peers), cgroups and
//! network namespaces. Each owner (a guard with `Drop`) registers what it creates here before
//! creating it and unregisters it once it has removed it; on SIGINT/SIGTERM a signal thread
//! removes whatever is still registered and exits with 128 + the signal number.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::{cgroup, netns};

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The registry of things to undo.
#[derive(Debug, Default)]
pub struct Cleanup {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    processes: Vec<i32>,
    cgroups: Vec<PathBuf>,
    namespaces: Vec<String>,
}

impl Cleanup {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn track_process(&self, pid: i32) {
        self.lock().processes.push(pid);
    }

    pub fn untrack_process(&self, pid: i32) {
        self.lock().processes.retain(|p| *p != pid);
    }

    pub fn track_cgroup(&self, dir: PathBuf) {
        self.lock().cgroups.push(dir);
    }

    pub fn untrack_cgroup(&self, dir: &PathBuf) {
        self.lock().cgroups.retain(|d| d != dir);
    }

    pub fn track_netns(&self, name: &str) {
        self.lock().namespaces.push(name.to_owned());
    }

    pub fn untrack_netns(&self, name: &str) {
        self.lock().namespaces.retain(|n| n != name);
    }

    /// Stops every registered process, then removes cgroups, then namespaces. Holds the lock
    /// throughout, so an owner cleaning up at the same time waits and then finds nothing to do.
    pub fn run_all(&self) {
        let mut state = self.lock();
        let pids: Vec<Pid> = state.processes.drain(..).map(Pid::from_raw).collect();
        stop_processes(&pids, STOP_GRACE);
        for dir in state.cgroups.drain(..) {
            cgroup::remove_dir(&dir);
        }
        for name in state.namespaces.drain(..) {
            netns::delete(&name);
        }
    }
}

/// Sends SIGTERM to each process (our children), waits up to `grace` for them to exit, then
/// SIGKILLs the rest; reaps them all.
pub fn stop_processes(pids: &[Pid], grace: Duration) {
    for pid in pids {
        let _ = kill(*pid, Signal::SIGTERM);
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
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Runs [`Cleanup::run_all`] and exits on SIGINT/SIGTERM; stops listening when dropped.
#[derive(Debug)]
pub struct SignalGuard {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalGuard {
    pub fn install(cleanup: Arc<Cleanup>) -> std::io::Result<SignalGuard> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("bench-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    eprintln!("spliceway bench: interrupted, cleaning up");
                    cleanup.run_all();
                    std::process::exit(128 + signal);
                }
            })?;
        Ok(SignalGuard {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
