//! The four namespaces of `scripts/interception-netns.sh`, the relay inside them, the hashing
//! servers, and the client's side of a hashed exchange.

#![allow(dead_code)] // each test module uses a different part

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use sha2::{Digest, Sha256};
use spliceway::{Relay, RelayHandle, Route, StatsSnapshot};

/// Every wait of these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: Once = Once::new();

/// The script that builds the namespaces and loads the nftables rules.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/interception-netns.sh")
}

/// Runs a command, panicking with its output if it fails.
pub fn run_checked(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, held open so threads can enter it.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    fn open(name: String) -> Netns {
        let file = File::open(format!("/run/netns/{name}")).unwrap();
        Netns { name, file }
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).unwrap();
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
        let file = self.file.try_clone().unwrap();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            drop(file);
            f()
        })
    }

    /// A command run inside this namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside this namespace and returns its output, whatever its status.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap()
    }
}

/// The namespaces; deleted on drop (also when a test panics).
#[derive(Debug)]
pub struct Topology {
    pub prefix: String,
    pub client: Netns,
    pub relay: Netns,
    pub server_a: Netns,
    pub server_b: Netns,
}

/// Whether this process can build the topology; says why not when it cannot.
fn can_build() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (network namespaces, nftables)");
        return false;
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("skipped: needs {tool} (iproute2, nftables)");
            return false;
        }
    }
    true
}

/// Namespaces left by a test process that was killed.
fn delete_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("swi") else {
            continue;
        };
        let pid: Option<u32> = rest.split('n').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

impl Topology {
    /// Builds the namespaces and rules, or says why it is skipped and returns `None`.
    pub fn create() -> Option<Topology> {
        if !can_build() {
            return None;
        }
        STALE_CLEANUP.call_once(delete_stale);
        let prefix = format!(
            "swi{}n{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let up = Command::new("bash")
            .arg(script())
            .args(["up", &prefix])
            .output()
            .unwrap();
        if !up.status.success() {
            let _ = Command::new("bash")
                .arg(script())
                .args(["down", &prefix])
                .status();
            panic!(
                "interception-netns.sh up: {}{}",
                String::from_utf8_lossy(&up.stdout),
                String::from_utf8_lossy(&up.stderr)
            );
        }
        let ns = |role: &str| Netns::open(format!("{prefix}-{role}"));
        Some(Topology {
            client: ns("c"),
            relay: ns("r"),
            server_a: ns("a"),
            server_b: ns("b"),
            prefix,
        })
    }

    /// Packets the relay sent towards 169.254.0.0/16 (the rules' `metadata` counter).
    pub fn metadata_packets(&self) -> u64 {
        let out = run_checked(
            "ip",
            &[
                "netns",
                "exec",
                &self.relay.name,
                "nft",
                "list",
                "counter",
                "inet",
                "spliceway",
                "metadata",
            ],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {out}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.prefix])
            .status();
    }
}

/// Addresses of the topology.
pub mod addr {
    use std::net::{IpAddr, SocketAddr};

    pub fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    pub fn sock(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    pub const CLIENT_V4: &str = "10.88.1.1";
    pub const CLIENT_V6: &str = "fd88:1::1";
    pub const RELAY_V4: &str = "10.88.1.2";
    pub const RELAY_V6: &str = "fd88:1::2";
    pub const A_V4: &str = "10.88.2.2";
    pub const A_V6: &str = "fd88:2::2";
    pub const B_V4: &str = "10.88.3.2";
    pub const B_V6: &str = "fd88:3::2";
    /// Server B's second addresses: outside the routes' `upstream_allow`.
    pub const B_OUTSIDE_V4: &str = "10.88.3.3";
    pub const B_OUTSIDE_V6: &str = "fd88:3::3";
    /// A neighbour on server A's link that never answers: connects time out.
    pub const BLACK_HOLE_V4: &str = "10.88.2.99";

    /// What the interception routes may reach: servers A and B, not B's second addresses.
    pub fn upstream_allow() -> Vec<ipnet::IpNet> {
        [
            "10.88.2.0/24",
            "10.88.3.2/32",
            "fd88:2::/64",
            "fd88:3::2/128",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect()
    }

    /// A socket address of `ip` (v4 or v6 text) and `port`.
    pub fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(self::ip(ip), port)
    }
}

/// A relay running on a thread inside the relay namespace; shut down on drop.
pub struct RunningRelay {
    pub handle: RelayHandle,
    thread: Option<JoinHandle<()>>,
}

impl RunningRelay {
    /// Builds `routes` inside the relay namespace (listeners, upstream sockets and workers all
    /// live there) and runs the relay.
    pub fn start(topology: &Topology, routes: Vec<Route>) -> RunningRelay {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = topology.relay.spawn(move || {
            let mut builder = Relay::builder().threads(1);
            for route in routes {
                builder = builder.route(route);
            }
            let relay = builder.build().expect("relay builds");
            tx.send(relay.handle()).unwrap();
            relay.run().expect("relay runs");
        });
        let handle = rx.recv_timeout(WAIT).expect("relay started");
        RunningRelay {
            handle,
            thread: Some(thread),
        }
    }

    /// The counters of route `name`.
    pub fn route_stats(&self, name: &str) -> StatsSnapshot {
        self.handle
            .snapshot()
            .routes
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}"))
            .stats
    }

    /// Waits until route `name`'s counters satisfy `done` (they are counted as connections
    /// close, a moment after the client sees the end).
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&StatsSnapshot) -> bool,
    ) -> StatsSnapshot {
        let start = Instant::now();
        loop {
            let stats = self.route_stats(name);
            if done(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < WAIT,
                "route {name}: {what} never came: {stats:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A hashing server: for each connection, reads everything until the client's end of stream,
/// then answers one line (`server=NAME local=ADDR peer=ADDR sha256=HEX`) and `reply_bytes` of
/// a pattern, and closes.
pub struct HashServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub accepted: Arc<AtomicUsize>,
}

/// The bytes a server answers with after its line: a pattern of `len` bytes.
pub fn reply_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

impl HashServer {
    /// Listens on `ports` of every address of `ns` (IPv4 and IPv6), as `name`.
    pub fn start(ns: &Netns, name: &'static str, ports: &[u16], reply_bytes: usize) -> HashServer {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for &port in ports {
            for any in ["0.0.0.0", "::"] {
                let addr = SocketAddr::new(any.parse().unwrap(), port);
                let listener = ns.run(move || {
                    let socket = socket2::Socket::new(
                        socket2::Domain::for_address(addr),
                        socket2::Type::STREAM,
                        None,
                    )
                    .unwrap();
                    if addr.is_ipv6() {
                        socket.set_only_v6(true).unwrap();
                    }
                    socket.set_reuse_address(true).unwrap();
                    socket.bind(&addr.into()).unwrap();
                    socket.listen(128).unwrap();
                    TcpListener::from(socket)
                });
                listener.set_nonblocking(true).unwrap();
                let (stop, accepted) = (stop.clone(), accepted.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, peer)) => {
                                accepted.fetch_add(1, Ordering::Relaxed);
                                std::thread::spawn(move || serve(stream, peer, name, reply_bytes));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => break,
                        }
                    }
                }));
            }
        }
        HashServer {
            stop,
            threads,
            accepted,
        }
    }
}

fn serve(mut stream: TcpStream, peer: SocketAddr, name: &str, reply_bytes: usize) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return,
        }
    }
    let local = stream.local_addr().unwrap();
    let line = format!(
        "server={name} local={local} peer={peer} sha256={}\n",
        hex(&hasher.finalize())
    );
    let _ = stream.write_all(line.as_bytes());
    let _ = stream.write_all(&reply_pattern(reply_bytes));
}

impl Drop for HashServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a server said about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub server: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Sends `upload` bytes (a pseudo-random pattern) on `stream`, ends its side, and checks what
/// comes back: the server's hash of the upload, then `reply_bytes` of the reply pattern.
pub fn exchange(mut stream: TcpStream, upload: usize, reply_bytes: usize) -> Answer {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let data: Vec<u8> = (0..upload).map(|i| (i * 31 + i / 97) as u8).collect();
    let sent = hex(&Sha256::digest(&data));
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    };
    assert_eq!(field("sha256="), sent, "the server received other bytes");
    let mut reply = Vec::new();
    reader.read_to_end(&mut reply).unwrap();
    assert_eq!(reply.len(), reply_bytes, "reply truncated");
    assert!(reply == reply_pattern(reply_bytes), "the reply was altered");
    Answer {
        server: field("server="),
        local: field("local=").parse().unwrap(),
        peer: field("peer=").parse().unwrap(),
    }
}

/// Connects from `ns` to `addr`.
pub fn connect_from(ns: &Netns, addr: SocketAddr) -> io::Result<TcpStream> {
    ns.run(move || TcpStream::connect_timeout(&addr, WAIT))
}

/// Whether a connection from `ns` to `addr` is ended without an answer (reset or closed
/// before any byte), as a refused interception is.
pub fn refused(ns: &Netns, addr: SocketAddr) -> bool {
    let Ok(mut stream) = connect_from(ns, addr) else {
        return true;
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(b"hello");
    let _ = stream.shutdown(Shutdown::Write);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

/// The address family's wildcard listen addresses on `port`.
pub fn listen_both(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
        SocketAddr::new("::".parse().unwrap(), port),
    ]
}

/// `openssl s_server -WWW` in a namespace, serving `object` (1 MiB) over TLS with a certificate
/// for `*.s3.test` that the client trusts with `--cacert`; killed on drop.
pub struct TlsServer {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    /// The certificate to trust (self-signed).
    pub cert: PathBuf,
    /// SHA-256 of the object it serves.
    pub object_sha256: String,
}

impl TlsServer {
    /// Starts it on `port` of `ns`, or returns `None` (saying so) without `openssl`.
    pub fn start(ns: &Netns, port: u16) -> Option<TlsServer> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=s3.test"])
            .args(["-addext", "subjectAltName=DNS:*.s3.test,DNS:s3.test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: needs openssl (a test certificate): {made:?}");
            return None;
        }
        let object = reply_pattern(1 << 20);
        std::fs::write(dir.path().join("object"), &object).unwrap();
        let child = ns
            .command("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Ready once it accepts.
        let start = Instant::now();
        while ns
            .run(move || {
                TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), WAIT)
            })
            .is_err()
        {
            assert!(start.elapsed() < WAIT, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(TlsServer {
            child,
            cert,
            object_sha256: hex(&Sha256::digest(&object)),
            dir,
        })
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl in the client namespace with `args`; returns the SHA-256 of what it fetched, or
/// its exit status and error text.
pub fn curl_sha256(topology: &Topology, args: &[&str]) -> Result<String, String> {
    let out = topology
        .client
        .command("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--output",
            "-",
        ])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(hex(&Sha256::digest(&out.stdout)))
    } else {
        Err(format!(
            "curl {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether curl is here (`.ci/run` installs it); says so when not.
pub fn have_curl() -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: needs curl");
    }
    found
}

impl RunningRelay {
    /// As [`RunningRelay::start`], in namespace `ns`.
    pub fn start_in(ns: &Netns, routes: Vec<Route>) -> RunningRelay {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let mut builder = Relay::builder().threads(1);
            for route in routes {
                builder = builder.route(route);
            }
            let relay = builder.build().expect("relay builds");
            tx.send(relay.handle()).unwrap();
            relay.run().expect("relay runs");
        });
        let handle = rx.recv_timeout(WAIT).expect("relay started");
        RunningRelay {
            handle,
            thread: Some(thread),
        }
    }
}
