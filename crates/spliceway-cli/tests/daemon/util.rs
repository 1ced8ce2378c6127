//! What only the daemon suite needs: dropping to `nobody`, kernel settings put back, the
//! process's own figures from /proc. The fixture (`Daemon`), the servers, the waits and the
//! scraper come from `spliceway-test-kit`, re-exported here for the suite's modules.

#![allow(dead_code, unused_imports)] // each test module uses a different part

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

pub use spliceway_test_kit::daemon::{metric, scrape};
pub use spliceway_test_kit::http::{HEALTH_BOUND, assert_health_answers, http_exchange, http_get};
pub use spliceway_test_kit::{
    Daemon, WAIT, config_file, connect, echo_round_trip, echo_server, free_port, hash_answer,
    hash_server, pattern, shared_echo_server, shared_hash_server, try_echo, wait_until,
};

/// The `spliceway` binary under test.
pub const SPLICEWAY: &str = env!("CARGO_BIN_EXE_spliceway");

/// `spliceway run --config PATH`, without the test's `NOTIFY_SOCKET` (a test that wants the
/// notifications sets its own).
pub fn run_command(path: &std::path::Path) -> Command {
    let mut command = spliceway();
    command
        .arg("run")
        .arg("--config")
        .arg(path)
        .env_remove("NOTIFY_SOCKET");
    command
}

/// A UDP echo on loopback (each datagram back to its sender), for as long as the test process
/// runs.
pub fn udp_echo() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// The global config lines that make `spliceway run` drop to the user `nobody` (and its group),
/// or `None`, after saying why the test is skipped, when not root or without such a user.
pub fn drop_to_nobody(why_root: &str) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root ({why_root})");
        return None;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("skipped: no user nobody");
        return None;
    };
    let group = nix::unistd::Group::from_gid(nobody.gid).unwrap();
    Some(match group {
        Some(g) => format!("user = \"nobody\"\ngroup = \"{}\"\n", g.name),
        None => "user = \"nobody\"\n".to_string(),
    })
}

/// A kernel setting (a file under /proc/sys) changed for one test and put back as it was when
/// this guard drops, also after a panic.
pub struct SysctlOverride {
    path: &'static str,
    old: String,
}

impl SysctlOverride {
    /// Writes `value` to `path`, keeping what was there.
    pub fn set(path: &'static str, value: &str) -> SysctlOverride {
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        SysctlOverride { path, old }
    }
}

impl Drop for SysctlOverride {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

/// The text after `key` (e.g. `Uid:`, `CapEff:`) on its line of a /proc/PID/status dump.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

/// The `spliceway` binary under test, as a command.
pub fn spliceway() -> Command {
    Command::new(SPLICEWAY)
}

/// Reads what the hash server answered, to the end.
pub fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.trim().to_string()
}

/// /proc/PID/status.
pub fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// Threads of process `pid`.
pub fn threads_of(pid: u32) -> u64 {
    status_field(&proc_status(pid), "Threads:").parse().unwrap()
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(&proc_status(pid), "VmRSS:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Descriptors process `pid` holds.
pub fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Raises this test process's soft open-file limit to its hard one (a test that opens a
/// thousand client sockets).
pub fn raise_own_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Whether the server has closed `stream` (end of stream or a reset), reading and discarding
/// whatever it sent first, for at most `timeout`.
pub fn closed_by_server(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return true;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}
