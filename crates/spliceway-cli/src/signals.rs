//! Signal handling for the long-running commands, on a thread of its own.
//!
//! - SIGINT / SIGTERM: graceful shutdown (stop accepting, drain); a second one resets what is
//!   left and stops at once.
//! - SIGUSR1 / SIGUSR2: more / less log detail.
//! - SIGHUP: reload the configuration, when the command has one (`spliceway run`).
//!
//! The library installs no signal handler (it has no process-global state); this is the
//! program's job.

use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

use crate::logging::LogControl;

/// What the program does on each signal.
pub trait SignalActions: Send + 'static {
    /// First SIGINT/SIGTERM.
    fn shutdown(&mut self);
    /// Second SIGINT/SIGTERM.
    fn shutdown_now(&mut self);
    /// SIGHUP.
    fn reload(&mut self) {
        tracing::warn!("SIGHUP ignored: this command has no configuration file to reload");
    }
}

/// Stops the signal thread when dropped.
#[derive(Debug)]
pub struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the signal thread.
pub fn spawn(mut actions: impl SignalActions, log: LogControl) -> anyhow::Result<SignalThread> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("spliceway-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGINT | SIGTERM if !stopping => {
                        stopping = true;
                        tracing::info!(
                            "signal {}: draining connections (send it again to stop at once)",
                            name(signal)
                        );
                        actions.shutdown();
                    }
                    SIGINT | SIGTERM => {
                        tracing::warn!("signal {}: resetting open connections", name(signal));
                        actions.shutdown_now();
                    }
                    SIGUSR1 => log.raise(),
                    SIGUSR2 => log.lower(),
                    SIGHUP => actions.reload(),
                    _ => {}
                }
            }
        })?;
    Ok(SignalThread {
        handle,
        thread: Some(thread),
    })
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
