//! The old process's side of `spliceway upgrade`: start the executable again (the file now at
//! the path this process was started from, so a newly installed binary runs) with the same
//! arguments, hand it every listening socket over the control socket (`handoff.rs`), wait
//! until it reports ready, then stop accepting and drain. UDP routes' sockets are handed over
//! too: once the new process is ready this one stops reading them (it would take datagrams
//! from the new one, and drop those of new clients while it drains) but keeps its sessions,
//! whose answers still leave through the same sockets, until they idle out or the drain ends. If the new process exits, or is not
//! ready within [`READY_TIMEOUT`], it is killed and this process carries on as before: it
//! never stopped accepting.
//!
//! From its start the new process is this one's successor (`succession.rs`): a SIGTERM or
//! SIGINT this process acts on, during the upgrade or while it drains after one, is passed on
//! to it, so a stop that reaches only this process still stops the service. A stop that came
//! before the successor could be recorded stops the upgrade instead.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spliceway::RelayHandle;

use crate::control::{self, Requests};
use crate::handoff::{self, Socket};
use crate::succession::{self, Successor};

/// How long the new process has to ask for the sockets and report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tells the new process where to ask for its sockets (this process's control socket).
pub const UPGRADE_FROM: &str = "SPLICEWAY_UPGRADE_FROM";
/// Socket activation's variables: the new process must not take them for its own.
const SOCKET_ACTIVATION: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// How this process was started, taken at start-up (before anything could replace the file
/// or change the directory).
#[derive(Debug, Clone)]
pub struct Origin {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Origin {
    /// The executable's path and the arguments after it. `current_exe` reads
    /// `/proc/self/exe`, the path this very binary was started from.
    pub fn now() -> anyhow::Result<Origin> {
        Ok(Origin {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// The running relay, as an upgrade needs it.
pub struct Upgrader {
    pub origin: Origin,
    pub handle: RelayHandle,
    pub control_path: PathBuf,
    /// A copy of the metrics endpoint's listening socket, if it serves one.
    pub metrics: Option<(SocketAddr, TcpListener)>,
    /// The metrics server, told to stop accepting once the new process serves.
    pub metrics_server: Option<crate::metrics::MetricsControl>,
    pub drain_timeout: Arc<Mutex<Duration>>,
    /// The process this upgrade starts, shared with the signal thread.
    pub successor: Arc<Successor>,
}

impl Requests for Upgrader {
    fn upgrade(&mut self, listener: &UnixListener) -> Result<u32, String> {
        if self.handle.is_stopping() {
            return Err("the relay is stopping".into());
        }
        let sockets = self
            .handle
            .listening_sockets()
            .map_err(|e| format!("cannot copy the listening sockets: {e}"))?;
        let datagrams = self
            .handle
            .udp_sockets()
            .map_err(|e| format!("cannot copy the UDP sockets: {e}"))?;
        let mut command = Command::new(&self.origin.exe);
        command
            .args(&self.origin.args)
            .env(UPGRADE_FROM, &self.control_path)
            .env(succession::UPGRADE_FROM_PID, std::process::id().to_string())
            .stdin(Stdio::null());
        for name in SOCKET_ACTIVATION {
            command.env_remove(name);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.origin.exe.display()))?;
        let pid = child.id();
        tracing::info!(
            "upgrade: started {} as pid {pid}",
            self.origin.exe.display()
        );
        if let Err(signal) = self.successor.adopt(pid) {
            // It has taken nothing yet: no connection can be lost by killing it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{signal} arrived as pid {pid} started: the relay is stopping"
            ));
        }
        match self.hand_over(&mut child, listener, &sockets, &datagrams) {
            Ok(()) => {
                let drain = *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(
                    "upgrade: pid {pid} is ready and serves; this process stops accepting and \
                     drains {} open connections for up to {}",
                    self.handle.snapshot().active_connections,
                    humantime::format_duration(drain)
                );
                // Only the new process accepts on the shared metrics socket from now on, so
                // that no health check reaches this draining one (issue 24, finding 6).
                if let Some(server) = &self.metrics_server {
                    server.stop_accepting();
                }
                self.metrics = None;
                // The new process reads the UDP sockets alone from now on.
                self.handle.release_udp_sockets();
                // The new process accepts on the same sockets: no drain delay.
                self.handle
                    .shutdown_with(std::time::Duration::ZERO, Some(drain));
                Ok(pid)
            }
            Err(reason) => {
                // Before the final wait: its pid must not be signalled once it can be reused.
                self.successor.forget();
                if child.try_wait().ok().flatten().is_none() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                Err(format!("new process (pid {pid}): {reason}"))
            }
        }
    }
}

impl Upgrader {
    /// Waits for the new process's handoff request, sends the sockets, waits for `ready`.
    fn hand_over(
        &self,
        child: &mut Child,
        listener: &UnixListener,
        sockets: &[(SocketAddr, TcpListener)],
        datagrams: &[(SocketAddr, UdpSocket)],
    ) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let stream = wait_for_child(child, listener, deadline)?;
        let mut described: Vec<Socket<'_>> = sockets
            .iter()
            .map(|(addr, s)| Socket::Listen(*addr, s.as_fd()))
            .chain(
                datagrams
                    .iter()
                    .map(|(addr, s)| Socket::Datagram(*addr, s.as_fd())),
            )
            .collect();
        if let Some((addr, s)) = &self.metrics {
            described.push(Socket::Metrics(*addr, s.as_fd()));
        }
        described.push(Socket::Control(self.control_path.clone(), listener.as_fd()));
        handoff::send(&stream, &described).map_err(|e| format!("{e:#}"))?;
        let mut line = Vec::new();
        loop {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let mut byte = [0u8; 1];
            match std::io::Read::read(&mut &stream, &mut byte) {
                Ok(0) => {
                    return Err(exited(child, deadline)
                        .unwrap_or_else(|| "closed the connection before it was ready".into()));
                }
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("reading its answer: {e}")),
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(describe(status));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {}",
                    humantime::format_duration(READY_TIMEOUT)
                ));
            }
        }
        match String::from_utf8_lossy(&line).trim() {
            "ready" => Ok(()),
            other => Err(format!("answered {other:?} instead of ready")),
        }
    }
}

/// Accepts on the control socket until the new process connects (its pid, by
/// `SO_PEERCRED`) and asks `handoff`; other peers are told an upgrade is under way.
fn wait_for_child(
    child: &mut Child,
    listener: &UnixListener,
    deadline: Instant,
) -> Result<UnixStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    let found = loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                match control::peer(&stream) {
                    Ok(peer) if peer.pid as u32 == child.id() => break Ok(stream),
                    _ => {
                        let _ = std::io::Write::write_all(
                            &mut stream,
                            b"error an upgrade is under way\n",
                        );
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(describe(status));
                }
                if Instant::now() >= deadline {
                    break Err(format!(
                        "did not ask for the sockets within {}",
                        humantime::format_duration(READY_TIMEOUT)
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => break Err(format!("control socket: {e}")),
        }
    };
    let _ = listener.set_nonblocking(false);
    let stream = found?;
    let _ = stream.set_read_timeout(Some(READY_TIMEOUT));
    match handoff::read_line(&stream) {
        Ok(request) if request.trim() == "handoff" => Ok(stream),
        Ok(request) => Err(format!("asked {request:?} instead of handoff")),
        Err(e) => Err(format!("reading its request: {e}")),
    }
}

/// The exit status of a new process that closed its connection, if it exits by `deadline`.
fn exited(child: &mut Child, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(describe(status));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Why a new process stopped, in words.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(78), _) => "exited with status 78: a configuration error (see its log)".into(),
        (Some(code), _) => format!("exited with status {code} (see its log)"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended: {status}"),
    }
}
