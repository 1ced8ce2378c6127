//! Network namespaces for tests: the root check, and named namespaces (with `lo` up) that
//! are deleted when dropped, also while a test panics. Tests that need them call
//! [`require_root`] first, which prints "skipped: needs root (...)" and lets the test pass
//! when this process is not root or lacks `ip`/`ss` (we are root here, CI is root).
//!
//! Names are `swk<pid>n<seq>-<role>`; namespaces left by a process that was killed are deleted
//! by the next process that creates one. `setns` moves only the calling thread, so every socket
//! is created on a thread that entered the namespace ([`Netns::run`], [`Netns::spawn`]); a
//! socket stays in the namespace it was created in whatever thread uses it later.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};

use crate::server::Server;

/// The prefix of every namespace this kit creates.
const PREFIX: &str = "swk";

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: Once = Once::new();

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a test that needs root and the `ip` and `ss` tools can run; when it cannot, prints
/// "skipped: needs root (`why`)" and returns `false` (the test then returns and passes).
pub fn require_root(why: &str) -> bool {
    let tool = |name: &str| {
        Command::new(name)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(is_root() && tool("ip") && tool("ss")) {
        eprintln!("skipped: needs root ({why})");
        return false;
    }
    true
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

/// A network namespace this process created, held open so threads can enter it; deleted
/// (with the links inside it) when dropped.
#[derive(Debug)]
pub struct Netns {
    /// Its name, as `ip netns` knows it.
    pub name: String,
    file: File,
}

impl Netns {
    /// Creates a namespace named `swk<pid>n<seq>-<role>` with `lo` up. Call [`require_root`]
    /// first; this panics if `ip` fails.
    pub fn create(role: &str) -> Netns {
        STALE_CLEANUP.call_once(delete_stale_namespaces);
        let name = format!(
            "{PREFIX}{}n{}-{role}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        run_checked("ip", &["netns", "add", &name]);
        // From here on a failure deletes it.
        let guard = DeleteOnDrop(name.clone());
        run_checked("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let file = File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("opening /run/netns/{name}: {e}"));
        std::mem::forget(guard);
        Netns { name, file }
    }

    /// Adds a veth pair: `here` in this namespace, `there` in `other`, both up, with the
    /// addresses `here_addr` and `there_addr` (CIDR, such as `10.77.1.1/24`) if given.
    pub fn veth(
        &self,
        here: &str,
        other: &Netns,
        there: &str,
        here_addr: Option<&str>,
        there_addr: Option<&str>,
    ) {
        let (a, b) = (self.name.as_str(), other.name.as_str());
        run_checked(
            "ip",
            &[
                "-n", a, "link", "add", here, "type", "veth", "peer", "name", there, "netns", b,
            ],
        );
        if let Some(addr) = here_addr {
            run_checked("ip", &["-n", a, "addr", "add", addr, "dev", here]);
        }
        if let Some(addr) = there_addr {
            run_checked("ip", &["-n", b, "addr", "add", addr, "dev", there]);
        }
        run_checked("ip", &["-n", a, "link", "set", here, "up"]);
        run_checked("ip", &["-n", b, "link", "set", there, "up"]);
    }

    /// Runs `ip -n <this namespace> args...`; panics with its error output if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_checked("ip", &all)
    }

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
        self.run(|| crate::net::connect(addr))
    }

    /// A [`Server`] listening on `addr` inside this namespace.
    pub fn serve<F>(&self, addr: SocketAddr, serve: F) -> Server
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        let listener = self.run(|| TcpListener::bind(addr).expect("test server binds"));
        Server::start_on(listener, serve)
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

impl Drop for Netns {
    fn drop(&mut self) {
        delete_namespace(&self.name);
    }
}

/// Deletes a namespace whose creation did not finish.
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        delete_namespace(&self.0);
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

/// Deletes namespaces named `swk<pid>n...` whose process is gone (a run that was killed).
fn delete_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
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
