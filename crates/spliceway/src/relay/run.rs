//! [`Relay`]: a relay built and bound, and running it on the calling thread plus one thread per
//! extra worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::handle::{RelayHandle, Reloads};
use crate::error::Error;
use crate::event_loop::Worker;
use crate::state::relay::{Control, RelayState};
use crate::udp::{Refresh, UdpPart, UdpShared, UdpWorker, refresh_names};

/// A relay, built and bound, ready to [`run`](Relay::run).
#[derive(Debug)]
pub struct Relay {
    relay: Arc<RelayState>,
    reloads: Arc<Reloads>,
    workers: Vec<Worker>,
    udp: UdpPart,
}

impl Relay {
    /// A relay made of its state, what reloads need, and its workers (see
    /// [`RelayBuilder::build`](super::RelayBuilder::build)).
    pub(super) fn new(
        relay: Arc<RelayState>,
        reloads: Arc<Reloads>,
        workers: Vec<Worker>,
        udp: UdpPart,
    ) -> Self {
        Relay {
            relay,
            reloads,
            workers,
            udp,
        }
    }
}

impl Relay {
    /// A handle to read counters and stop the relay from other threads.
    #[must_use]
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            relay: Arc::clone(&self.relay),
            reloads: Arc::clone(&self.reloads),
            udp: Arc::clone(&self.udp.shared),
        }
    }

    /// The addresses the relay listens on, per route, in the order given (with the ports the
    /// kernel chose for port 0).
    #[must_use]
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.handle().local_addrs()
    }

    /// Runs the relay on the calling thread (worker 0) and one more thread per extra worker,
    /// until [`RelayHandle::shutdown`] or [`RelayHandle::shutdown_now`] and every connection is
    /// gone.
    ///
    /// # Errors
    ///
    /// [`Error::EventLoop`] if epoll fails, [`Error::WorkerPanicked`] if a worker panicked (a
    /// bug). Failures of single connections are never errors here.
    pub fn run(self) -> Result<(), Error> {
        let Relay {
            relay,
            workers,
            udp,
            ..
        } = self;
        relay.resolver.start();
        relay.started.store(true, Ordering::Release);
        let mut workers = workers.into_iter();
        let first = workers.next();
        let stop_checks = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            let checker = {
                let (relay, stop) = (&relay, &stop_checks);
                std::thread::Builder::new()
                    .name("spliceway-health".into())
                    .spawn_scoped(scope, move || crate::health_check::run(relay, stop))
                    .map_err(Error::EventLoop)?
            };
            let stop_checker = || {
                stop_checks.store(true, Ordering::Release);
                checker.thread().unpark();
            };
            let mut handles = Vec::new();
            {
                let UdpPart {
                    shared,
                    worker,
                    refresh,
                } = udp;
                let relay = &relay;
                let spawned = std::thread::Builder::new()
                    .name("spliceway-udp".into())
                    .spawn_scoped(scope, move || run_udp(worker, &shared, refresh, relay));
                match spawned {
                    Ok(handle) => handles.push(handle),
                    Err(e) => {
                        relay.set_control(Control::Stopping, None);
                        stop_checker();
                        return Err(Error::EventLoop(e));
                    }
                }
            }
            for worker in workers {
                let relay = &relay;
                let spawned = std::thread::Builder::new()
                    .name("spliceway-worker".into())
                    .spawn_scoped(scope, move || run_worker(worker, relay));
                match spawned {
                    Ok(handle) => handles.push(handle),
                    Err(e) => {
                        relay.set_control(Control::Stopping, None);
                        stop_checker();
                        return Err(Error::EventLoop(e));
                    }
                }
            }
            let mut result = match first {
                Some(worker) => run_worker(worker, &relay),
                None => Ok(()),
            };
            for handle in handles {
                // run_worker catches panics, so a join error cannot happen; keep the first error.
                let joined = handle
                    .join()
                    .unwrap_or_else(|panic| Err(Error::WorkerPanicked(panic_message(&panic))));
                if let (Ok(()), Err(e)) = (&result, joined) {
                    result = Err(e);
                }
            }
            // The checker ends within its nap; the scope joins it (it does not panic: probes
            // return errors, and a panic there would only end the checks).
            stop_checker();
            result
        });
        relay.resolver.stop();
        relay.started.store(false, Ordering::Release);
        result
    }
}

/// Runs one worker to its end. A panic in a worker is a bug, and it ends the whole relay the
/// way a crash would, never with a clean end of stream: unwinding drops the worker's sockets,
/// which carry `SO_LINGER` 0 from the moment they exist (so each peer sees a reset), and the
/// other workers are told to stop, which resets their connections too. [`Relay::run`] then
/// returns [`Error::WorkerPanicked`].
fn run_worker(worker: Worker, relay: &RelayState) -> Result<(), Error> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || worker.run()));
    let result = match outcome {
        Ok(result) => result.map_err(Error::EventLoop),
        Err(panic) => {
            let message = panic_message(&panic);
            tracing::error!(
                "a worker panicked ({message}): its connections were reset; stopping the relay"
            );
            Err(Error::WorkerPanicked(message))
        }
    };
    if result.is_err() {
        relay.failed.store(true, Ordering::Release);
        relay.set_control(Control::Stopping, None);
    }
    result
}

/// Runs the UDP worker to its end, with the thread that re-resolves its upstream names beside
/// it; a panic ends the relay as a TCP worker's does.
fn run_udp(
    worker: UdpWorker,
    shared: &UdpShared,
    refresh: std::sync::mpsc::Receiver<Refresh>,
    relay: &RelayState,
) -> Result<(), Error> {
    let result = std::thread::scope(|scope| {
        let refresher = std::thread::Builder::new()
            .name("spliceway-udp-dns".into())
            .spawn_scoped(scope, move || refresh_names(shared, &refresh));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || worker.run()));
        shared.close_inbox();
        shared.tell_resolver(Refresh::Stop);
        if let Ok(refresher) = refresher {
            let _ = refresher.join();
        }
        match outcome {
            Ok(result) => result.map_err(Error::EventLoop),
            Err(panic) => {
                let message = panic_message(&panic);
                tracing::error!("the UDP worker panicked ({message}): stopping the relay");
                Err(Error::WorkerPanicked(message))
            }
        }
    });
    if result.is_err() {
        relay.failed.store(true, Ordering::Release);
        relay.set_control(Control::Stopping, None);
    }
    result
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
