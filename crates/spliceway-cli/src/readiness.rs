//! Telling others this process serves only once it does.
//!
//! `Relay::run` starts the workers on the calling thread and blocks, so whatever is told
//! "ready" before the call (the old process of an upgrade, systemd) could reach this process's
//! health endpoint in the moment before the workers start and get `503 not running`: one
//! health check in a few hundred failed right after an upgrade. [`once_running`] reports from
//! a thread of its own as soon as the relay's handle says its workers run.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spliceway::RelayHandle;

/// How long the reporting thread waits for the workers to start before it gives up (and
/// reports nothing: the old process of an upgrade then keeps serving, as for any failed
/// start). Starting takes microseconds; this bounds only a relay that never starts.
pub const START_BOUND: Duration = Duration::from_secs(10);

/// How often the reporting thread looks.
const POLL: Duration = Duration::from_millis(1);

/// Runs `report` on a thread of its own once `handle`'s relay runs; not at all if it stops
/// or has not started within [`START_BOUND`].
///
/// # Errors
///
/// The thread could not be started.
pub fn once_running(
    handle: RelayHandle,
    report: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("readiness".into())
        .spawn(move || {
            if wait_running(&handle, START_BOUND) {
                report();
            } else {
                tracing::warn!(
                    "the relay did not start within {START_BOUND:?}: readiness not reported"
                );
            }
        })
}

/// Whether `handle`'s relay runs within `bound` (false as soon as it stops).
fn wait_running(handle: &RelayHandle, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let most = bound.as_millis() / POLL.as_millis() + 1;
    for _ in 0..most {
        if handle.is_healthy() {
            return true;
        }
        if handle.is_stopping() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn relay() -> spliceway::Relay {
        let route =
            spliceway::Route::new("r", spliceway::UpstreamAddr::parse("127.0.0.1:9").unwrap())
                .listen("127.0.0.1:0".parse().unwrap());
        spliceway::Relay::builder().route(route).build().unwrap()
    }

    #[test]
    fn reports_only_after_the_relay_runs() {
        let relay = relay();
        let handle = relay.handle();
        let (tx, rx) = mpsc::channel();
        let reporter = once_running(handle.clone(), move || tx.send(()).unwrap()).unwrap();
        // Not running yet: nothing reported (the reporter is still waiting).
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert!(!handle.is_healthy());
        let runner = std::thread::spawn(move || relay.run());
        rx.recv_timeout(Duration::from_secs(30)).expect("reported");
        assert!(handle.is_healthy(), "reported while running");
        reporter.join().unwrap();
        handle.shutdown_now();
        runner.join().unwrap().unwrap();
    }

    #[test]
    fn a_relay_that_stops_first_is_never_reported() {
        let relay = relay();
        let handle = relay.handle();
        handle.shutdown_now();
        assert!(!wait_running(&handle, Duration::from_millis(100)));
        drop(relay);
    }
}
