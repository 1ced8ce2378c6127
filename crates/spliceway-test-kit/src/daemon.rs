//! `spliceway run` as a fixture: a [`Daemon`] is the child process with its log collected, its
//! start awaited (the "running from" line), and its end bounded; it is killed by its own PID
//! when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait::wait_until;

/// How long a daemon may take to start, and any single expected event to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// Writes `text` to `spliceway.toml` in a new temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A running `spliceway run` child with its log; killed (by its own PID, through its `Child`)
/// when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The child process.
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Its configuration file.
    pub config: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `program run --config FILE` (`program` being the `spliceway` binary under test)
    /// on a configuration written to a new temporary directory, and waits until it runs.
    pub fn start(program: impl AsRef<std::ffi::OsStr>, config: &str) -> Daemon {
        let (dir, path) = config_file(config);
        let mut command = Command::new(program);
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

    /// The child's PID: the only process this fixture signals or kills.
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

    /// Sends `signal` to the child (by its own PID).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        let _ = wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
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
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).unwrap();
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

/// The binary `name` of this workspace as `cargo test --workspace` built it: beside the
/// running test executable's directory (`target/debug/deps/..`), or where the environment
/// variable `SPLICEWAY_BIN` points. For a test outside the binary's own package, which has no
/// `CARGO_BIN_EXE_*`; panics, saying how to build it, when it is not there.
pub fn built_binary(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("SPLICEWAY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p spliceway-cli` first)",
        path.display()
    );
    path
}
