//! Network namespaces for tests: the root check, and named namespaces (with `lo` up) that
//! are deleted when dropped, also while a test panics. Tests that need them call
//! [`require_root`] first, which prints "skipped: needs root (...)" and lets the test pass
//! when this process is not root or lacks `ip`/`ss` (we are root here, CI is root).
//!
//! The namespaces themselves are `spliceway-bench`'s ([`spliceway_bench::netns`], the one
//! implementation the bench's emulated topology uses too); this module adds what tests want on
//! top: names of their own, deletion on drop, panics instead of errors, and the `ss` views.
//!
//! Names are `swk<pid>n<seq>-<role>`; namespaces left by a process that was killed are deleted
//! by the next process that creates one. `setns` moves only the calling thread, so every socket
//! is created on a thread that entered the namespace ([`Netns::run`], [`Netns::spawn`]); a
//! socket stays in the namespace it was created in whatever thread uses it later.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use spliceway_bench::netns as shared;

use crate::server::Server;
use crate::sockets::{SockStat, parse_ss};

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
    shared::command(program, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A network namespace this process created, held open so threads can enter it; deleted
/// (with the links inside it) when dropped.
#[derive(Debug)]
pub struct Netns {
    /// Its name, as `ip netns` knows it.
    pub name: String,
    ns: shared::Netns,
}

impl Netns {
    /// Creates a namespace named `swk<pid>n<seq>-<role>` with `lo` up. Call [`require_root`]
    /// first; this panics if `ip` fails (after deleting what it created).
    pub fn create(role: &str) -> Netns {
        STALE_CLEANUP.call_once(delete_stale_namespaces);
        let name = format!(
            "{PREFIX}{}n{}-{role}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let ns = shared::Netns::add(&name).unwrap_or_else(|e| panic!("{e:#}"));
        Netns { name, ns }
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
        self.ns
            .veth(here, &other.ns, there, here_addr, there_addr)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Runs `ip -n <this namespace> args...`; panics with its error output if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.ns.run(f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let ns = self.ns.try_clone().expect("namespace handle");
        std::thread::spawn(move || {
            ns.enter().unwrap_or_else(|e| panic!("{e:#}"));
            drop(ns);
            f()
        })
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
        parse_ss(&self.exec(&["ss", "-tinmH"]))
    }

    /// The TCP sockets of this namespace that still stand for a connection: every state but
    /// LISTEN and TIME-WAIT (a connection that ended cleanly), one line each as `ss` prints it.
    pub fn live_connections(&self) -> Vec<String> {
        self.exec(&["ss", "-tanH", "state", "all"])
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.starts_with("LISTEN") && !l.starts_with("TIME-WAIT")
            })
            .map(str::to_string)
            .collect()
    }

    /// Runs `argv` inside this namespace (`ip netns exec`); returns its standard output.
    fn exec(&self, argv: &[&str]) -> String {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let argv = self.ns.exec_argv(&argv);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        run_checked(&argv[0], &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !shared::delete(&self.name) {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

/// Deletes namespaces named `swk<pid>n...` whose process is gone (a run that was killed).
fn delete_stale_namespaces() {
    for name in shared::names() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        if pid.parse::<u32>().is_ok()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !shared::delete(&name)
        {
            eprintln!("warning: could not delete network namespace {name}");
        }
    }
}
