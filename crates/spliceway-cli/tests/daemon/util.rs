//! Shared helpers: a `spliceway run` child with its log, loopback upstreams, a metrics
//! scraper. Every wait is bounded.

#![allow(dead_code)] // each test module uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

/// How long a daemon may take to start, and any single expected event to happen.
pub const WAIT: Duration = Duration::from_secs(10);

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

/// The `spliceway` binary under test.
pub fn spliceway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spliceway"))
}

/// Writes `text` to `spliceway.toml` in a new temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `spliceway run` child; killed when dropped.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `spliceway run` on a configuration and waits until it runs.
    pub fn start(config: &str) -> Daemon {
        let (dir, path) = config_file(config);
        let mut command = spliceway();
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("NOTIFY_SOCKET");
        Daemon::spawn(command, path, Some(dir))
    }

    /// Starts a prepared command (`spliceway run ...`, possibly wrapped) and waits until it
    /// runs.
    pub fn spawn(command: Command, config: PathBuf, dir: Option<tempfile::TempDir>) -> Daemon {
        let daemon = Daemon::launch(command, config, dir);
        if !daemon.wait_for_log("running from", WAIT) {
            let mut daemon = daemon;
            let status = daemon.child.try_wait();
            panic!(
                "spliceway did not start ({status:?}); log:\n{}",
                daemon.log_text()
            );
        }
        daemon
    }

    /// Starts a prepared command, collecting its log, without waiting for anything (a
    /// command that starts spliceway only later, such as `systemd-socket-activate`).
    pub fn launch(mut command: Command, config: PathBuf, dir: Option<tempfile::TempDir>) -> Daemon {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        let mut child = command.spawn().expect("spawning spliceway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            }
        });
        Daemon {
            child,
            log,
            config,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log.lock().unwrap().iter().any(|l| l.contains(needle))
        })
    }

    /// Lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The address route `name` listens on, from the start-up log.
    pub fn listen_addr(&self, route: &str) -> SocketAddr {
        let prefix = format!("route {route:?}: listening on ");
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find_map(|l| {
                l.split_once(&prefix)
                    .map(|(_, rest)| rest.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no listen line for {route}"));
        line.parse().unwrap()
    }

    /// The metrics address, from the start-up log.
    pub fn metrics_addr(&self) -> SocketAddr {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find_map(|l| {
                l.split_once("metrics at http://")
                    .map(|(_, r)| r.to_string())
            })
            .expect("no metrics line");
        line.trim_end_matches("/metrics").parse().unwrap()
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the configuration file (for a later SIGHUP).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` from `addr`; returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: spliceway\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}` in a scrape, e.g.
/// `metric(&text, "spliceway_bytes_total", &[("route", "a"), ("direction", "client_to_upstream")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

/// An upstream on 127.0.0.1 that echoes each connection until end of stream.
pub fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// An upstream on 127.0.0.1 that reads each connection to its end and answers
/// `"<bytes> <sha256 hex>\n"`.
pub fn hash_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut hasher = Sha256::new();
                let mut total = 0u64;
                let mut buf = [0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            hasher.update(&buf[..n]);
                            total += n as u64;
                        }
                        Err(_) => return,
                    }
                }
                let _ = writeln!(stream, "{total} {:x}", hasher.finalize());
            });
        }
    });
    addr
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 10) as u8))
        .collect()
}

/// The answer `hash_server` gives for `data`.
pub fn expected_hash(data: &[u8]) -> String {
    format!("{} {:x}", data.len(), Sha256::digest(data))
}

/// Connects with bounded timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    // These can fail once the peer has already reset the connection (a denied client); the
    // next read or write then reports it.
    let _ = stream.set_read_timeout(Some(WAIT));
    let _ = stream.set_write_timeout(Some(WAIT));
    stream
}

/// Sends `data` through `addr` to an echo upstream and returns what came back.
pub fn try_echo(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    stream.write_all(data)?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// Sends `data` through `addr` to an echo upstream and checks it comes back.
pub fn echo_round_trip(addr: SocketAddr, data: &[u8]) {
    let back = try_echo(addr, data).unwrap();
    assert_eq!(back, data, "echo through {addr}");
}

/// Reads what the hash server answered, to the end.
pub fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.trim().to_string()
}

/// How long one health request may take in the abuse tests: generous, so that a loaded test
/// machine does not flake, yet far below the unbounded waits the old server gave (the soak
/// reports the tight figure).
pub const HEALTH_BOUND: Duration = Duration::from_secs(2);

/// Sends `request` (raw bytes) to `addr` and reads the answer until the server closes or
/// `timeout` passes (each step bounded by it): the status code and the body.
pub fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => response.extend_from_slice(&buf[..n]),
        }
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// `GET path` (HTTP/1.0, so the server closes after its answer) within `timeout`: the status
/// code and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: spliceway\r\n\r\n").as_bytes(),
        timeout,
    )
}

/// `/healthz` and `/readyz` both answer 200 within [`HEALTH_BOUND`] each; panics with what
/// happened otherwise.
pub fn assert_health_answers(addr: SocketAddr, what: &str) {
    for path in ["/healthz", "/readyz"] {
        let started = Instant::now();
        let answer = http_get(addr, path, HEALTH_BOUND);
        let took = started.elapsed();
        match answer {
            Ok((200, _)) => {}
            other => panic!("{what}: {path} answered {other:?} after {took:?}"),
        }
    }
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
