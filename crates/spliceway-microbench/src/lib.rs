//! Benchmark bodies of spliceway (the `spliceway-microbench` package, named apart from the
//! `spliceway bench` harness, `spliceway-bench`, whose CPU and /proc readings it uses), shared
//! by the criterion benches (`benches/`), the `scale` binary (`src/bin/scale.rs`) and the tests
//! that run each body once at a tiny size so that the benchmarks cannot rot (`tests/`).
//!
//! | module | job |
//! | --- | --- |
//! | [`engine`] | one payload through an in-process relay (splice or copy), with the relay's CPU time |
//! | [`connection`] | one connection's setup and teardown (1-byte echo), direct or through a relay |
//! | [`scale`] | the scale benchmark: idle, active and churning connections by the thousand |

pub mod connection;
pub mod engine;
pub mod scale;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use spliceway::{Relay, RelayHandle, Route};

/// `1 << 20`.
pub const MIB: u64 = 1 << 20;
/// `1 << 30`.
pub const GIB: u64 = 1 << 30;

/// A relay running in this process with one worker, on a thread with a known name (so its
/// CPU time can be read); stopped at once when dropped.
#[derive(Debug)]
pub struct InProcessRelay {
    /// Reads counters, stops the relay.
    pub handle: RelayHandle,
    /// The listen address of each route, in the order given.
    pub addrs: Vec<SocketAddr>,
    /// The Linux thread id of the worker (the thread that called `run()`).
    pub tid: i32,
    thread: Option<JoinHandle<Result<(), spliceway::Error>>>,
}

impl InProcessRelay {
    /// Builds a one-worker relay of `routes` and runs it on a new thread.
    pub fn start(routes: Vec<Route>) -> io::Result<InProcessRelay> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut builder = Relay::builder().threads(1);
        for route in routes {
            builder = builder.route(route);
        }
        let relay = builder.build().map_err(io::Error::other)?;
        let handle = relay.handle();
        let addrs = relay.local_addrs().into_iter().map(|(_, a)| a).collect();
        // The worker is the thread that calls run(); it reports its own id. (Looking its name
        // up in /proc/self/task/*/comm races with the threads it spawns: a new thread carries
        // its parent's name until it sets its own.)
        let name = format!(
            "swb-relay-{}",
            NEXT.fetch_add(1, Ordering::Relaxed) % 10_000
        );
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            relay.run()
        })?;
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("the relay thread did not start"))?;
        Ok(InProcessRelay {
            handle,
            addrs,
            tid,
            thread: Some(thread),
        })
    }

    /// The first route's listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// CPU time the worker thread has used so far.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        spliceway_bench::cpu::thread_cpu_time(self.tid)
    }
}

impl Drop for InProcessRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
