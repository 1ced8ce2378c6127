//! The engine as a fixture: a [`TestRelay`] runs a [`Relay`] on its own thread (in a network
//! namespace or not) and stops it through its own handle when dropped.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spliceway::{
    ConnectionOptions, Relay, RelayBuilder, RelayHandle, Route, StatsSnapshot, UpstreamAddr,
};

use crate::netns::Netns;
use crate::wait::{TEST_TIMEOUT, wait_until};

/// A relay running on its own thread; stopped (immediately) when dropped.
#[derive(Debug)]
pub struct TestRelay {
    /// The relay's handle, for its counters and for stopping it.
    pub handle: RelayHandle,
    /// The first route's listening address.
    pub addr: SocketAddr,
    thread: Option<JoinHandle<Result<(), spliceway::Error>>>,
}

impl TestRelay {
    /// A relay with one route, on a thread of this process's namespace.
    pub fn start(route: Route) -> TestRelay {
        Self::start_with(Relay::builder().route(route))
    }

    /// Builds (binds, resolves) and runs the relay on a thread of this process's namespace.
    pub fn start_with(builder: RelayBuilder) -> TestRelay {
        let relay = builder.build().expect("relay builds");
        let handle = relay.handle();
        let addr = relay.local_addrs()[0].1;
        let thread = std::thread::spawn(move || relay.run());
        TestRelay {
            handle,
            addr,
            thread: Some(thread),
        }
    }

    /// Builds (binds, resolves) and runs the relay on a thread inside `ns`: its listener, its
    /// upstream connections and its workers (threads inherit the namespace) are all there.
    pub fn start_in(ns: &Netns, builder: RelayBuilder) -> TestRelay {
        let (tx, rx) = mpsc::channel();
        let thread = ns.spawn(move || {
            let relay = match builder.build() {
                Ok(relay) => relay,
                Err(e) => panic!("relay builds: {e}"),
            };
            tx.send((relay.handle(), relay.local_addrs()[0].1))
                .expect("test waits for the relay");
            relay.run()
        });
        let Ok((handle, addr)) = rx.recv() else {
            let panic = thread
                .join()
                .expect_err("the relay thread ended without a relay");
            std::panic::resume_unwind(panic);
        };
        TestRelay {
            handle,
            addr,
            thread: Some(thread),
        }
    }

    /// A relay with one route, inside `ns`.
    pub fn start_route_in(ns: &Netns, route: Route) -> TestRelay {
        Self::start_in(ns, Relay::builder().route(route))
    }

    /// Graceful stop; waits for `run()` to return.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("relay thread").expect("relay ran");
        }
    }

    /// The relay's counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.handle.snapshot().stats
    }

    /// Waits until `check` holds for the relay's counters (bounded by [`TEST_TIMEOUT`]).
    pub fn wait_for(&self, what: &str, check: impl Fn(&StatsSnapshot) -> bool) {
        assert!(
            wait_until(TEST_TIMEOUT, || check(&self.stats())),
            "timed out waiting for {what}"
        );
    }

    /// Waits up to `limit` for `run()` to return by itself (after a shutdown was asked for) and
    /// returns what it returned; panics if it is still running then.
    pub fn join_within(mut self, limit: Duration) -> Result<(), spliceway::Error> {
        let thread = self.thread.take().expect("relay thread");
        assert!(
            wait_until(limit, || thread.is_finished()),
            "run() did not return within {limit:?}"
        );
        thread.join().expect("relay thread")
    }

    /// Waits until `n` connections have closed and each close has been counted under its
    /// reason too (the engine counts `closed` before the reason's counter, so `closed == n`
    /// alone may be seen a moment before `completed`, `client_resets`, ... catch up).
    pub fn wait_closed(&self, n: u64) {
        let start = Instant::now();
        let mut last = self.stats();
        let closed = wait_until(TEST_TIMEOUT, || {
            last = self.stats();
            last.closed == n && ends_counted(&last) == n
        });
        assert!(
            closed,
            "timed out after {:?} waiting for {n} connections closed and counted: {last:?}",
            start.elapsed()
        );
    }

    /// The listening address of the route named `route`.
    pub fn addr_of(&self, route: &str) -> SocketAddr {
        self.handle
            .local_addrs()
            .into_iter()
            .find(|(name, _)| name == route)
            .unwrap_or_else(|| panic!("no route {route:?}"))
            .1
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A route named "test" to `upstream`, listening on an ephemeral loopback port.
pub fn route_to(upstream: SocketAddr, mode: spliceway::Mode) -> Route {
    Route::new("test", UpstreamAddr::Ip(upstream))
        .listen("127.0.0.1:0".parse().unwrap())
        .with_options(|o| o.mode = mode)
}

/// A shared record of what test servers received: (bytes, hash) per connection.
pub type Received = Arc<Mutex<Vec<(u64, String)>>>;

/// Connections counted under an end reason (every reason but "splice unsupported").
pub fn ends_counted(s: &StatsSnapshot) -> u64 {
    s.completed
        + s.client_resets
        + s.upstream_resets
        + s.client_resets_after_end
        + s.upstream_resets_after_end
        + s.idle_timeouts
        + s.half_close_timeouts
        + s.upstream_unavailable
        + s.denied
        + s.sni_refused
        + s.resolve_refused
        + s.drain_resets
        + s.descriptor_exhausted
        + s.client_limit_refused
        + s.proxy_header_errors().iter().sum::<u64>()
}

/// Changes a route's connection options in a chain of builder calls. Options are set in one
/// way only, `Route::options(ConnectionOptions)`; this starts from the route's own.
pub trait WithOptions {
    /// The route with `change` applied to its connection options.
    fn with_options(self, change: impl FnOnce(&mut ConnectionOptions)) -> Self;
}

impl WithOptions for Route {
    fn with_options(self, change: impl FnOnce(&mut ConnectionOptions)) -> Self {
        let mut options = self.connection_options().clone();
        change(&mut options);
        self.options(options)
    }
}
