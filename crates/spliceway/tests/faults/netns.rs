//! Three network namespaces joined by veth links, and the relay, servers and clients placed in
//! them.
//!
//! ```text
//!   client ns                 relay ns                        server ns
//!   c0 10.77.1.1 ---- r0 10.77.1.2      r1 10.77.2.1 ---- s0 10.77.2.2
//!                     (relay listens)    10.77.2.99: a neighbour that never answers
//! ```
//!
//! Each [`Topology`] has namespaces of its own, named `swf<pid>n<seq>-client` (`-relay`,
//! `-server`); the veth interfaces are created inside them, so the host's namespace is never
//! touched and the same addresses serve every test. Dropping the topology (also while a test
//! panics) deletes the namespaces, which deletes the links; namespaces left by a process that
//! was killed are deleted by the next run.
//!
//! `setns` moves only the calling thread, so every socket is created on a thread that entered
//! the right namespace ([`Netns::run`], [`Netns::spawn`]); a socket stays in the namespace it was
//! created in whatever thread uses it later. The relay's thread enters the relay namespace before
//! building the relay, so its listener, its upstream connections and its extra workers (threads
//! inherit the namespace) are all there.

use crate::util::WithOptions;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use spliceway::{Mode, RelayBuilder, RelayHandle, Route, StatsSnapshot, UpstreamAddr};

use crate::util::{TEST_TIMEOUT, ends_counted, wait_until};

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
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: Once = Once::new();

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

/// A network namespace this process created, held open so threads can enter it.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter();
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let file = self.file.try_clone().expect("namespace handle");
        let name = self.name.clone();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering namespace {name}: {e}"));
            drop(file);
            f()
        })
    }

    /// Moves the calling thread into this namespace.
    fn enter(&self) {
        setns(&self.file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering namespace {}: {e}", self.name));
    }

    /// Connects to `addr` from this namespace, with the tests' timeouts set.
    pub fn connect(&self, addr: SocketAddr) -> TcpStream {
        self.run(|| crate::util::connect(addr))
    }

    /// The established TCP sockets of this namespace, as `ss` sees them.
    pub fn tcp_sockets(&self) -> Vec<SockStat> {
        let out = run_checked("ip", &["netns", "exec", &self.name, "ss", "-tinmH"]);
        parse_ss(&out)
    }

    /// The TCP sockets of this namespace that still stand for a connection: every state but
    /// LISTEN and TIME-WAIT (a connection that ended cleanly), one line each as `ss` prints it.
    pub fn live_connections(&self) -> Vec<String> {
        let out = run_checked(
            "ip",
            &["netns", "exec", &self.name, "ss", "-tanH", "state", "all"],
        );
        out.lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.starts_with("LISTEN") && !l.starts_with("TIME-WAIT")
            })
            .map(str::to_string)
            .collect()
    }
}

/// One TCP socket as `ss -tinm` shows it.
#[derive(Debug, Clone, Default)]
pub struct SockStat {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Bytes received and not yet read by the application.
    pub recv_q: u64,
    /// Bytes written by the application and not yet acknowledged by the peer.
    pub send_q: u64,
    /// Bytes received in order (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`, counting the SYN as one).
    pub bytes_acked: u64,
    /// Receive and send buffer limits (`skmem` rb, tb), in bytes.
    pub rcvbuf: u64,
    pub sndbuf: u64,
}

impl SockStat {
    /// Bytes the application read from this socket.
    pub fn app_read(&self) -> u64 {
        self.bytes_received.saturating_sub(self.recv_q)
    }

    /// Bytes the application wrote to this socket.
    pub fn app_written(&self) -> u64 {
        self.bytes_acked.saturating_sub(1) + self.send_q
    }
}

fn parse_ss(out: &str) -> Vec<SockStat> {
    let mut sockets: Vec<SockStat> = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(last) = sockets.last_mut() else {
                continue;
            };
            for token in line.split_whitespace() {
                let number = |prefix: &str| token.strip_prefix(prefix)?.parse::<u64>().ok();
                if let Some(n) = number("bytes_received:") {
                    last.bytes_received = n;
                } else if let Some(n) = number("bytes_acked:") {
                    last.bytes_acked = n;
                } else if let Some(skmem) = token.strip_prefix("skmem:(") {
                    for field in skmem.trim_end_matches(')').split(',') {
                        if let Some(n) = field.strip_prefix("rb") {
                            last.rcvbuf = n.parse().unwrap_or(0);
                        } else if let Some(n) = field.strip_prefix("tb") {
                            last.sndbuf = n.parse().unwrap_or(0);
                        }
                    }
                }
            }
        } else {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 {
                continue;
            }
            sockets.push(SockStat {
                recv_q: fields[1].parse().unwrap_or(0),
                send_q: fields[2].parse().unwrap_or(0),
                local: fields[3].parse().ok(),
                peer: fields[4].parse().ok(),
                ..SockStat::default()
            });
        }
    }
    sockets
}

/// Guards held by a topology: shared for ordinary tests, exclusive for the descriptor count.
#[derive(Debug)]
enum DescriptorGuard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// The three namespaces and their links; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub relay: Netns,
    pub server: Netns,
    _guard: DescriptorGuard,
}

/// Whether this process can build namespaces; prints why not when it cannot.
fn can_build() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let ss = Command::new("ss")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && ip && ss) {
        eprintln!("skipped: needs root (network namespaces)");
        return false;
    }
    true
}

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
        if !can_build() {
            return None;
        }
        STALE_CLEANUP.call_once(delete_stale_namespaces);
        let guard = if exclusive {
            DescriptorGuard::Exclusive(DESCRIPTORS.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            DescriptorGuard::Shared(DESCRIPTORS.read().unwrap_or_else(|e| e.into_inner()))
        };
        let prefix = format!(
            "swf{}n{}-",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let names = ["client", "relay", "server"].map(|role| format!("{prefix}{role}"));
        // From here on, a failure deletes what was made: the guard exists before the links.
        let mut made = PartialTopology { names: Vec::new() };
        for name in &names {
            run_checked("ip", &["netns", "add", name]);
            made.names.push(name.clone());
        }
        let [c, r, s] = &names;
        let net = |ip: Ipv4Addr| format!("{ip}/24");
        let (client_net, relay_client_net) = (net(CLIENT_IP), net(RELAY_CLIENT_SIDE_IP));
        let (relay_server_net, server_net) = (net(RELAY_SERVER_SIDE_IP), net(SERVER_IP));
        let black_hole = BLACK_HOLE_IP.to_string();
        let script: &[&[&str]] = &[
            &[
                "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", r,
            ],
            &[
                "-n", r, "link", "add", "r1", "type", "veth", "peer", "name", "s0", "netns", s,
            ],
            &["-n", c, "addr", "add", &client_net, "dev", "c0"],
            &["-n", r, "addr", "add", &relay_client_net, "dev", "r0"],
            &["-n", r, "addr", "add", &relay_server_net, "dev", "r1"],
            &["-n", s, "addr", "add", &server_net, "dev", "s0"],
            &["-n", c, "link", "set", "lo", "up"],
            &["-n", r, "link", "set", "lo", "up"],
            &["-n", s, "link", "set", "lo", "up"],
            &["-n", c, "link", "set", "c0", "up"],
            &["-n", r, "link", "set", "r0", "up"],
            &["-n", r, "link", "set", "r1", "up"],
            &["-n", s, "link", "set", "s0", "up"],
            &[
                "-n",
                r,
                "neigh",
                "add",
                &black_hole,
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "r1",
                "nud",
                "permanent",
            ],
        ];
        for args in script {
            run_checked("ip", args);
        }
        let open = |name: &str| Netns {
            name: name.to_string(),
            file: File::open(format!("/run/netns/{name}"))
                .unwrap_or_else(|e| panic!("opening /run/netns/{name}: {e}")),
        };
        let topology = Topology {
            client: open(c),
            relay: open(r),
            server: open(s),
            _guard: guard,
        };
        made.names.clear(); // the topology deletes them from now on
        Some(topology)
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

impl Drop for Topology {
    fn drop(&mut self) {
        for name in [&self.client.name, &self.relay.name, &self.server.name] {
            delete_namespace(name);
        }
    }
}

/// Namespaces created so far by a topology that is not finished; deleted if building fails.
struct PartialTopology {
    names: Vec<String>,
}

impl Drop for PartialTopology {
    fn drop(&mut self) {
        for name in &self.names {
            delete_namespace(name);
        }
    }
}

fn delete_namespace(name: &str) {
    let deleted = Command::new("ip")
        .args(["netns", "delete", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !deleted {
        eprintln!("warning: could not delete network namespace {name}");
    }
}

/// Deletes namespaces named `swf<pid>n...` whose process is gone (a run that was killed).
fn delete_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("swf") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

/// Runs a command; returns its standard output, panics with its error output if it fails.
pub fn run_checked(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A relay running in a namespace on its own thread; stopped at once when dropped.
pub struct NsRelay {
    pub handle: RelayHandle,
    pub addr: SocketAddr,
    thread: Option<JoinHandle<Result<(), spliceway::Error>>>,
}

impl NsRelay {
    /// Builds (binds, resolves) and runs the relay on a thread inside `ns`.
    pub fn start(ns: &Netns, builder: RelayBuilder) -> NsRelay {
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
        NsRelay {
            handle,
            addr,
            thread: Some(thread),
        }
    }

    /// A relay with one route.
    pub fn start_route(ns: &Netns, route: Route) -> NsRelay {
        Self::start(ns, spliceway::Relay::builder().route(route))
    }

    /// Graceful stop; waits for `run()` to return. The handle goes with it.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("relay thread").expect("relay ran");
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.handle.snapshot().stats
    }

    /// Waits until `n` connections have closed and been counted under their reason.
    pub fn wait_closed(&self, n: u64) {
        wait_until(&format!("{n} connections closed and counted"), || {
            let s = self.handle.snapshot().stats;
            s.closed == n && ends_counted(&s) == n
        });
    }
}

impl Drop for NsRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server in a namespace: accepts on `addr` and runs `serve` for each connection on its own
/// thread. `serve` gets a flag that is raised when the server is dropped, for handlers that
/// must not wait forever on a link that was cut.
pub struct NsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NsServer {
    pub fn start<F>(ns: &Netns, addr: SocketAddr, serve: F) -> NsServer
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        let listener = ns.run(|| TcpListener::bind(addr).expect("test server binds"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
                        stream.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
                        let serve = Arc::clone(&serve);
                        let stop = Arc::clone(&stop2);
                        workers.push(std::thread::spawn(move || serve(stream, &stop)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("test server accept: {e}"),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        NsServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
        if !can_build() {
            return None;
        }
        STALE_CLEANUP.call_once(delete_stale_namespaces);
        let name = format!(
            "swf{}n{}-lo",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        run_checked("ip", &["netns", "add", &name]);
        let mut made = PartialTopology {
            names: vec![name.clone()],
        };
        run_checked("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let file = File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("opening /run/netns/{name}: {e}"));
        made.names.clear(); // deleted by LoopbackOnly from now on
        Some(LoopbackOnly {
            ns: Netns { name, file },
        })
    }
}

impl Drop for LoopbackOnly {
    fn drop(&mut self) {
        delete_namespace(&self.ns.name);
    }
}
