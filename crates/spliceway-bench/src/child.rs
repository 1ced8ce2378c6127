//! Relay processes the bench starts (spliceway relays and `--peer` commands): spawned without
//! a shell, each in a process group of its own, readiness polled with TCP connects, stopped by
//! PID (SIGTERM to its group, then SIGKILL after a grace period) and reaped. The group is what
//! stops a forking peer's children too (`socat ...,fork` leaves one per client, which would
//! otherwise outlive the run holding its ports and the descriptors it inherited).

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cleanup::{Cleanup, STOP_GRACE};
use crate::netns::{self, Netns};

/// How long a relay gets to start listening.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// The end of a child's stderr kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// A running relay process.
#[derive(Debug)]
pub(crate) struct RelayProcess {
    name: String,
    command_line: String,
    child: Option<Child>,
    pid: i32,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    cleanup: Arc<Cleanup>,
}

impl RelayProcess {
    /// Starts `argv` with stdin and stdout closed and stderr kept (its tail) for errors.
    pub(crate) fn spawn(
        name: &str,
        argv: &[String],
        cleanup: &Arc<Cleanup>,
    ) -> anyhow::Result<Self> {
        let (program, args) = argv.split_first().context("empty command")?;
        let command_line =
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("path {name}: cannot start `{command_line}`"))?;
        let pid = child.id() as i32;
        cleanup.track_process(pid);
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = child.stderr.take().map(|mut stderr| {
            let tail = Arc::clone(&stderr_tail);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend_from_slice(&chunk[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                    tail.drain(..excess);
                }
            })
        });
        Ok(RelayProcess {
            name: name.to_owned(),
            command_line,
            child: Some(child),
            pid,
            stderr_tail,
            stderr_thread,
            cleanup: Arc::clone(cleanup),
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until `addr` accepts TCP connections (probing from namespace `ns`), or fails if
    /// the process exits or [`READY_TIMEOUT`] passes. Probes send nothing: a sink behind the
    /// relay sees zero-byte connections, which the bench ignores.
    pub(crate) fn wait_ready(
        &mut self,
        addr: SocketAddr,
        ns: Option<&Netns>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let child = self.child.as_mut().context("process already stopped")?;
        let name = &self.name;
        let outcome = netns::run_in(ns, || -> anyhow::Result<()> {
            loop {
                if let Some(status) = child.try_wait()? {
                    bail!("path {name}: the relay exited ({status}) before listening on {addr}");
                }
                if TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "path {name}: nothing listens on {addr} after {}s",
                        READY_TIMEOUT.as_secs()
                    );
                }
                std::thread::sleep(PROBE_INTERVAL);
            }
        })?;
        outcome.map_err(|e| {
            // Give the stderr reader a moment to collect the child's last words.
            std::thread::sleep(Duration::from_millis(100));
            anyhow!(
                "{e}\n  command: {}\n  stderr: {}",
                self.command_line,
                self.stderr_text()
            )
        })
    }

    /// The last bytes the process wrote to stderr.
    pub(crate) fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&tail).trim().to_owned();
        if text.is_empty() {
            "(nothing)".into()
        } else {
            text
        }
    }

    /// Stops the process: SIGTERM, SIGKILL after [`STOP_GRACE`], and reaps it.
    pub(crate) fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = match child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = kill(Pid::from_raw(-self.pid), Signal::SIGTERM);
                let deadline = Instant::now() + STOP_GRACE;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => {
                            tracing::warn!(
                                "path {}: relay {} ignored SIGTERM for {}s; killing it",
                                self.name,
                                self.pid,
                                STOP_GRACE.as_secs()
                            );
                            let _ = child.kill();
                            break child.wait().ok();
                        }
                    }
                }
            }
        };
        // What is left of its group (a forking peer's children that ignored SIGTERM).
        let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
        self.cleanup.untrack_process(self.pid);
        // The stderr reader ends when every holder of the pipe has gone; a forking peer's
        // children may hold it a little longer, so it is left to finish on its own.
        drop(self.stderr_thread.take());
        status
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` is still a live process (a zombie, dead but not yet reaped by whoever
    /// adopted it, counts as gone).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z" && state != "X")
            })
            .unwrap_or(false)
    }

    /// A peer that forks (as `socat ...,fork` does for each client) is stopped with its
    /// children: none outlives the run.
    #[test]
    fn stopping_a_forking_peer_stops_its_children() {
        let dir = std::env::temp_dir().join(format!("swb-child-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("forked.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", file.display());
        let cleanup = Arc::new(Cleanup::default());
        let argv = ["sh".to_owned(), "-c".to_owned(), script];
        let mut peer = RelayProcess::spawn("forking", &argv, &cleanup).unwrap();
        let mut forked = None;
        for _ in 0..500 {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                forked = Some(pid);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let forked = forked.expect("the peer forked a child within 5 s");
        assert!(alive(forked));
        peer.stop();
        let mut gone = false;
        for _ in 0..300 {
            if !alive(forked) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(gone, "the forked child {forked} outlived its peer");
    }
}
