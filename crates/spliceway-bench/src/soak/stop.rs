//! A stop event the loops wait on: set once, seen at once by every waiter (their pauses end).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Python's `threading.Event`, as the soak uses it.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    pub(crate) fn set(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `pause` or until set; returns whether it is set.
    pub(crate) fn wait(&self, pause: Duration) -> bool {
        let deadline = Instant::now() + pause;
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        while !*set {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            set = self
                .changed
                .wait_timeout(set, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *set
    }
}

/// Seconds as a duration (negative: zero).
pub(crate) fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}
