//! Three network namespaces joined by veth links, and the relay, servers and clients placed in
//! them.
//!
//! ```text
//!   client ns                 relay ns                        server ns
//!   c0 10.77.1.1 ---- r0 10.77.1.2      r1 10.77.2.1 ---- s0 10.77.2.2
//!                     (relay listens)    10.77.2.99: a neighbour that never answers
//! ```
//!
//! Each [`Topology`] has namespaces of its own (`spliceway_test_kit::Netns`, named
//! `swk<pid>n<seq>-client`, `-relay`, `-server`); the veth interfaces are created inside them, so the host's namespace is never
//! touched and the same addresses serve every test. Dropping the topology (also while a test
//! panics) deletes the namespaces, which deletes the links; namespaces left by a process that
//! was killed are deleted by the next run.
//!
//! `setns` moves only the calling thread, so every socket is created on a thread that entered
//! the right namespace ([`Netns::run`], [`Netns::spawn`]); a socket stays in the namespace it was
//! created in whatever thread uses it later. The relay's thread enters the relay namespace before
//! building the relay, so its listener, its upstream connections and its extra workers (threads
//! inherit the namespace) are all there.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use spliceway::{Mode, Route, UpstreamAddr};
use spliceway_test_kit::{WithOptions, require_root};

// What the scenarios use from the kit, next to the topology they build.
pub use spliceway_test_kit::{Netns, Server, SockStat, TestRelay, run_checked};

/// The client's address (client ns, `c0`).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The relay's address towards clients (relay ns, `r0`); relays listen here.
pub const RELAY_CLIENT_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// The relay's address towards servers (relay ns, `r1`).
pub const RELAY_SERVER_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// The server's address (server ns, `s0`).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
/// An address on the server link whose neighbour entry points at a MAC nobody has: SYNs sent
/// there leave the relay and vanish (dropped by the server ns as frames for another host).
pub const BLACK_HOLE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 99);
/// The port test servers listen on.
pub const SERVER_PORT: u16 = 7000;

/// The relay ns's interface towards clients and towards the server, and the server's.
pub const RELAY_CLIENT_DEV: &str = "r0";
pub const SERVER_DEV: &str = "s0";

/// Both modes, for the scenarios that apply to both.
pub const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// Tests share the process's descriptor table; the descriptor-leak test takes this lock
/// exclusively, every other topology holds it shared.
static DESCRIPTORS: RwLock<()> = RwLock::new(());
/// The server's socket address.
pub fn server_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(SERVER_IP, SERVER_PORT))
}

/// The black hole's socket address.
pub fn black_hole_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(BLACK_HOLE_IP, SERVER_PORT))
}

/// A route from the relay ns's client side to the server, in `mode`.
pub fn route(mode: Mode) -> Route {
    route_for(UpstreamAddr::Ip(server_addr()), mode)
}

/// A route from the relay ns's client side to `upstream`, in `mode`.
pub fn route_for(upstream: UpstreamAddr, mode: Mode) -> Route {
    Route::new("faults", upstream)
        .listen(SocketAddr::V4(SocketAddrV4::new(RELAY_CLIENT_SIDE_IP, 0)))
        .with_options(|o| o.mode = mode)
}

/// Guards held by a topology: shared for ordinary tests, exclusive for the descriptor count.
#[derive(Debug)]
enum DescriptorGuard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// The three namespaces and their links; deleted on drop (each [`Netns`] deletes itself).
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub relay: Netns,
    pub server: Netns,
    _guard: DescriptorGuard,
}

/// Why these tests need root, as the skip line says it.
const NEEDS: &str = "network namespaces";

impl Topology {
    /// Builds a topology, or prints "skipped: ..." and returns `None` when this process is not
    /// root or has no `ip`.
    pub fn create() -> Option<Topology> {
        Self::create_with(false)
    }

    /// As [`Topology::create`], and no other test of this binary runs while it exists (for
    /// counting the process's descriptors).
    pub fn create_exclusive() -> Option<Topology> {
        Self::create_with(true)
    }

    fn create_with(exclusive: bool) -> Option<Topology> {
        if !require_root(NEEDS) {
            return None;
        }
        let guard = if exclusive {
            DescriptorGuard::Exclusive(DESCRIPTORS.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            DescriptorGuard::Shared(DESCRIPTORS.read().unwrap_or_else(|e| e.into_inner()))
        };
        // Each namespace is deleted when dropped, also if a later step here panics.
        let (client, relay, server) = (
            Netns::create("client"),
            Netns::create("relay"),
            Netns::create("server"),
        );
        let net = |ip: Ipv4Addr| format!("{ip}/24");
        client.veth(
            "c0",
            &relay,
            RELAY_CLIENT_DEV,
            Some(&net(CLIENT_IP)),
            Some(&net(RELAY_CLIENT_SIDE_IP)),
        );
        relay.veth(
            "r1",
            &server,
            SERVER_DEV,
            Some(&net(RELAY_SERVER_SIDE_IP)),
            Some(&net(SERVER_IP)),
        );
        relay.ip(&[
            "neigh",
            "add",
            &BLACK_HOLE_IP.to_string(),
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "r1",
            "nud",
            "permanent",
        ]);
        Some(Topology {
            client,
            relay,
            server,
            _guard: guard,
        })
    }

    /// Runs `ip` with `args`; panics with its error output if it fails.
    pub fn ip(&self, args: &[&str]) {
        run_checked("ip", args);
    }

    /// Takes the server's end of the relay <-> server link down: from then on nothing crosses
    /// it either way, and neither end is told (the relay's side only loses carrier).
    pub fn cut_server_link(&self) {
        self.ip(&["-n", &self.server.name, "link", "set", SERVER_DEV, "down"]);
    }

    /// Shapes what leaves `dev` in `ns` to `rate` (a tc rate such as `8mbit`) with tbf.
    pub fn shape(&self, ns: &Netns, dev: &str, rate: &str) {
        run_checked(
            "tc",
            &[
                "-n", &ns.name, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst",
                "32kb", "latency", "50ms",
            ],
        );
    }
}

/// Waits up to `limit` for `check`; returns how long it took, or `None`.
pub fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Milliseconds, for the figures the tests print.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// A namespace with nothing but `lo`: tests of what the relay must never connect to run here,
/// so that a missing check cannot send a packet anywhere. Deleted when dropped.
pub struct LoopbackOnly {
    pub ns: Netns,
}

impl LoopbackOnly {
    /// Creates it, or prints "skipped: ..." and returns `None` when this process cannot.
    pub fn create() -> Option<LoopbackOnly> {
        if !require_root(NEEDS) {
            return None;
        }
        Some(LoopbackOnly {
            ns: Netns::create("lo"),
        })
    }
}
