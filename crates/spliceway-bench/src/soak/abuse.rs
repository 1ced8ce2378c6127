//! Abuse of the relay's metrics port (issue 24) and the health poll it must not slow down.
//!
//! The abusers: more idle connections than the metrics server holds (it closes the oldest
//! idle one for a new client), a client pipelining thousands of `GET /metrics` that never
//! reads (the server must close it), and request heads far over the 8 KiB limit (answered 431
//! or closed). Failures of the server's defences are `metrics_abuse` problems (judged); the
//! abusers' own errors are only counted. Meanwhile a thread of its own polls `/healthz` on a
//! fresh connection every 100 ms; the verdict holds every answer to 200 ms.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stop::{Stop, secs};
use super::tally::Tally;
use super::wire::connect;

const METRICS_IDLE_CLIENTS: usize = 100;
const METRICS_IDLE_OPEN_PER_S: f64 = 20.0;
/// Per non-reading client, one such client at a time.
pub(crate) const METRICS_PIPELINED_REQUESTS: usize = 2000;
/// A non-reader must be closed by the server within this.
const METRICS_CLOSE_WAIT: Duration = Duration::from_secs(30);
/// Sent without the end of the head (the server's limit is 8 KiB).
const METRICS_OVERSIZED_HEAD: usize = 64 * 1024;
const METRICS_OVERSIZED_PAUSE_S: f64 = 0.2;
pub(crate) const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel's TCP_ESTABLISHED, as /proc/net/tcp writes it.
const TCP_ESTABLISHED_HEX: &str = "01";

/// Starts the three abusers; each ends soon after `stop`.
pub(crate) fn start(
    port: u16,
    tally: &Arc<Tally>,
    stop: &Arc<Stop>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    type Abuser = fn(u16, &Tally, &Stop);
    let abusers: [(&str, Abuser); 3] = [
        ("idle", idle_loop),
        ("nonreader", nonreader_loop),
        ("oversized", oversized_loop),
    ];
    let mut threads = Vec::new();
    for (name, abuser) in abusers {
        let (tally, stop) = (Arc::clone(tally), Arc::clone(stop));
        threads.push(
            std::thread::Builder::new()
                .name(format!("metrics-{name}"))
                .spawn(move || abuser(port, &tally, &stop))?,
        );
    }
    Ok(threads)
}

/// Opens an idle connection METRICS_IDLE_OPEN_PER_S times a second and keeps the last
/// METRICS_IDLE_CLIENTS; notes those the server closed.
fn idle_loop(port: u16, tally: &Tally, stop: &Stop) {
    let mut idle: VecDeque<TcpStream> = VecDeque::new();
    let period = secs(1.0 / METRICS_IDLE_OPEN_PER_S);
    while !stop.is_set() {
        match connect(port, HEALTH_TIMEOUT) {
            Ok(sock) => {
                let _ = sock.set_nonblocking(true);
                idle.push_back(sock);
                tally.add("metrics_idle_opened", 1);
            }
            Err(_) => tally.add("metrics_abuser_errors", 1),
        }
        if idle.len() > METRICS_IDLE_CLIENTS {
            idle.pop_front();
        }
        let mut buf = [0u8; 4096];
        idle.retain_mut(|sock| match sock.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(n) if n > 0 => true,
            _ => {
                tally.add("metrics_idle_closed_by_server", 1);
                false
            }
        });
        stop.wait(period);
    }
}

/// Whether the kernel still lists `sock` as established (/proc/net/tcp): no read needed, so a
/// client that never reads can tell that the server closed it.
fn established(sock: &TcpStream) -> bool {
    let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
        return false;
    };
    let (local, remote) = (
        format!(":{:04X}", local.port()),
        format!(":{:04X}", peer.port()),
    );
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && fields[1].ends_with(&local)
            && fields[2].ends_with(&remote)
            && fields[3] == TCP_ESTABLISHED_HEX
    })
}

/// One client at a time pipelines METRICS_PIPELINED_REQUESTS `GET /metrics` and never reads;
/// the server must close it (its write deadline) within METRICS_CLOSE_WAIT.
fn nonreader_loop(port: u16, tally: &Tally, stop: &Stop) {
    let requests =
        b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n".repeat(METRICS_PIPELINED_REQUESTS);
    while !stop.is_set() {
        let Ok(mut sock) = connect(port, HEALTH_TIMEOUT) else {
            tally.add("metrics_abuser_errors", 1);
            stop.wait(Duration::from_secs(1));
            continue;
        };
        let _ = sock.write_all(&requests); // bounded by the write timeout when not read
        let started = Instant::now();
        loop {
            if stop.is_set() {
                break;
            }
            if !established(&sock) {
                tally.add("metrics_nonreaders_closed", 1);
                break;
            }
            if started.elapsed() > METRICS_CLOSE_WAIT {
                tally.problem(
                    "metrics_abuse",
                    &format!(
                        "a client that never read was still open {} s after its requests",
                        METRICS_CLOSE_WAIT.as_secs()
                    ),
                );
                break;
            }
            stop.wait(Duration::from_millis(250));
        }
    }
}

/// Request heads of METRICS_OVERSIZED_HEAD bytes that never end: each must be answered 431
/// (or closed), never served nor held.
fn oversized_loop(port: u16, tally: &Tally, stop: &Stop) {
    let mut head = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    head.resize(head.len() + METRICS_OVERSIZED_HEAD, b'a');
    while !stop.is_set() {
        let Ok(mut sock) = connect(port, HEALTH_TIMEOUT) else {
            tally.add("metrics_abuser_errors", 1);
            stop.wait(Duration::from_secs(1));
            continue;
        };
        let _ = sock.write_all(&head); // the server may stop reading at its limit and close
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let ended = loop {
            match sock.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match ended {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                tally.problem(
                    "metrics_abuse",
                    "an oversized head was neither answered nor closed in 5 s",
                );
            }
            // A reset after the answer, or instead of it, is a refusal too.
            _ if !answer.is_empty() && !answer.starts_with(b"HTTP/1.1 431 ") => {
                let start = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
                tally.problem(
                    "metrics_abuse",
                    &format!("an oversized head was answered {start:?}"),
                );
            }
            _ => tally.add("metrics_oversized_refused", 1),
        }
        stop.wait(secs(METRICS_OVERSIZED_PAUSE_S));
    }
}

/// One `GET /healthz` on a new connection: (milliseconds to the whole answer, status code;
/// 0 when it failed or took more than HEALTH_TIMEOUT).
fn health_get(port: u16) -> (f64, u16) {
    let started = Instant::now();
    let status = (|| -> std::io::Result<u16> {
        let mut sock = connect(port, HEALTH_TIMEOUT)?;
        sock.write_all(b"GET /healthz HTTP/1.0\r\nHost: soak\r\n\r\n")?;
        let mut answer = Vec::new();
        sock.read_to_end(&mut answer)?;
        Ok(status_of(&answer))
    })()
    .unwrap_or(0);
    (started.elapsed().as_secs_f64() * 1000.0, status)
}

/// The status code of an HTTP/1.x answer; 0 when it is not one.
pub(crate) fn status_of(answer: &[u8]) -> u16 {
    if !answer.starts_with(b"HTTP/1.") {
        return 0;
    }
    String::from_utf8_lossy(answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The health poller: a thread that polls every HEALTH_POLL_INTERVAL (no catching up when
/// late) until stopped, writing `t_s,latency_ms,status` lines to health.csv.
#[derive(Debug)]
pub(crate) struct HealthPoller {
    stop: Arc<Stop>,
    thread: JoinHandle<Vec<(f64, u16)>>,
}

impl HealthPoller {
    pub(crate) fn start(port: u16, out: std::path::PathBuf) -> std::io::Result<HealthPoller> {
        let stop = Arc::new(Stop::default());
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("health-poll".into())
            .spawn(move || {
                let mut file = std::fs::File::create(out).ok();
                let mut polls = Vec::new();
                let t0 = Instant::now();
                let mut next_at = t0;
                while !stopping.is_set() {
                    let (latency, status) = health_get(port);
                    if let Some(file) = file.as_mut() {
                        let t = t0.elapsed().as_secs_f64();
                        let _ = writeln!(file, "{t:.3},{latency:.3},{status}");
                    }
                    polls.push((latency, status));
                    next_at = (next_at + HEALTH_POLL_INTERVAL).max(Instant::now());
                    stopping.wait(next_at.saturating_duration_since(Instant::now()));
                }
                polls
            })?;
        Ok(HealthPoller { stop, thread })
    }

    /// Stops the poller; returns (latency ms, status) of every poll.
    pub(crate) fn stop(self) -> Vec<(f64, u16)> {
        self.stop.set();
        self.thread.join().unwrap_or_default()
    }
}
