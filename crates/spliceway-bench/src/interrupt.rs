//! Ctrl-C and SIGTERM during a bench: a signal thread that undoes everything still registered
//! in the [`Cleanup`] and exits with 128 + the signal number.

use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::cleanup::Cleanup;

/// Runs [`Cleanup::run_all`] and exits on SIGINT/SIGTERM; stops listening when dropped.
#[derive(Debug)]
pub(crate) struct SignalGuard {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalGuard {
    pub(crate) fn install(cleanup: Arc<Cleanup>) -> std::io::Result<SignalGuard> {
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
