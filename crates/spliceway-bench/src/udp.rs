//! `spliceway bench --workload udp`: datagrams per second and relay CPU per datagram through
//! `spliceway relay --udp` and each `--peer`, against going direct, for 64-byte and 1,400-byte
//! datagrams, one client and many.
//!
//! The upstream is an echo on loopback in this process (one thread, its CPU not counted).
//! Each client keeps a window of datagrams in flight and sends one more for each answer, so
//! every path runs as fast as it can without flooding a socket buffer; an answer not back
//! within 100 ms counts as lost and is replaced. A run ends after `--requests` answers in all
//! (default 40,000) or 30 s. Paths run in interleaved rounds (`--runs`, default 3); the table
//! shows medians. Relay CPU is that of the relay's process tree (socat forks a child per
//! client), read from /proc before and after each run, divided by the datagrams it relayed
//! (each answered request is two: one each way).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::args::{BenchArgs, Peer};
use crate::child::RelayProcess;
use crate::cleanup::Cleanup;
use crate::cpu::process_tree_cpu;
use crate::paths::{RelayAddrs, Template};

/// Datagrams each client keeps in flight.
const WINDOW: usize = 16;
/// An answer later than this is counted lost and its slot refilled.
const LOSS_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest a run may take, whatever `--requests` says.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Clients of the "many clients" rows.
const MANY_CLIENTS: usize = 16;

/// What one run of one path measured.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    answered: u64,
    lost: u64,
    elapsed: Duration,
    relay_cpu: Option<Duration>,
}

/// A path: direct, or a relay process in front of the echo.
struct Path {
    name: String,
    relay: Relay,
}

/// What runs in front of the echo.
enum Relay {
    Direct,
    /// `spliceway relay --udp` from this executable.
    Spliceway(std::path::PathBuf),
    /// A `--peer` command.
    Peer(Template),
}

impl Relay {
    /// The command for these addresses, if there is one.
    fn argv(&self, addrs: RelayAddrs) -> Option<Vec<String>> {
        match self {
            Relay::Direct => None,
            Relay::Spliceway(exe) => Some(vec![
                exe.to_string_lossy().into_owned(),
                "relay".into(),
                "--udp".into(),
                addrs.listen.to_string(),
                addrs.upstream.to_string(),
                "--threads".into(),
                "1".into(),
                // Stopped between runs: open sessions need not idle out first.
                "--drain-timeout".into(),
                "100ms".into(),
                "-q".into(),
            ]),
            Relay::Peer(template) => Some(template.expand(addrs)),
        }
    }
}

/// Runs the UDP benchmark and prints its table (markdown) on stdout.
pub(crate) fn run(args: &BenchArgs, cleanup: &Arc<Cleanup>) -> anyhow::Result<()> {
    let echo = Echo::start()?;
    let runs = args.runs.unwrap_or(3) as usize;
    let requests = args.requests.unwrap_or(40_000);
    let sizes: Vec<usize> = match args.message_size {
        Some(size) if (1..=65_507).contains(&size) => vec![size as usize],
        Some(size) => bail!("--message-size {size}: a UDP datagram carries 1 to 65507 bytes"),
        None => vec![64, 1400],
    };
    let client_counts: Vec<usize> = match args.concurrency {
        Some(n) => vec![n as usize],
        None => vec![1, MANY_CLIENTS],
    };
    let exe = std::env::current_exe().context("finding the spliceway executable")?;
    let mut paths = vec![
        Path {
            name: "direct".into(),
            relay: Relay::Direct,
        },
        Path {
            name: "spliceway".into(),
            relay: Relay::Spliceway(exe),
        },
    ];
    for Peer { name, template } in &args.peers {
        paths.push(Path {
            name: name.clone(),
            relay: Relay::Peer(template.clone()),
        });
    }
    println!(
        "| datagram | clients | path | datagrams/s (answered) | lost | relay CPU per datagram | \
         relay CPU vs spliceway |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &size in &sizes {
        for &clients in &client_counts {
            let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); paths.len()];
            for round in 0..runs {
                for (index, path) in paths.iter().enumerate() {
                    let result = run_path(path, &echo, size, clients, requests, cleanup)
                        .with_context(|| format!("path {} (round {})", path.name, round + 1))?;
                    if !args.quiet {
                        eprintln!(
                            "{size} B x{clients} {}: {:.0} datagrams/s, {} lost, cpu {:?}",
                            path.name,
                            result.answered as f64 / result.elapsed.as_secs_f64(),
                            result.lost,
                            result.relay_cpu
                        );
                    }
                    results[index].push(result);
                }
            }
            let ours = cpu_per_datagram(&results[1]);
            for (path, runs) in paths.iter().zip(&results) {
                let rate = median(
                    runs.iter()
                        .map(|r| r.answered as f64 / r.elapsed.as_secs_f64()),
                );
                let lost: u64 = runs.iter().map(|r| r.lost).sum();
                let sent: u64 = runs.iter().map(|r| r.answered + r.lost).sum();
                let cpu = cpu_per_datagram(runs);
                let cpu_text = cpu.map_or("-".to_string(), |ns| format!("{:.2} µs", ns / 1000.0));
                let ratio = match (cpu, ours) {
                    (Some(theirs), Some(ours)) if ours > 0.0 => format!("{:.2}x", theirs / ours),
                    _ => "-".to_string(),
                };
                println!(
                    "| {size} B | {clients} | {} | {rate:.0} | {:.2}% | {cpu_text} | {ratio} |",
                    path.name,
                    100.0 * lost as f64 / sent.max(1) as f64,
                );
            }
        }
    }
    echo.stop();
    Ok(())
}

/// Median relay CPU per relayed datagram, in nanoseconds (each answered request is two).
fn cpu_per_datagram(runs: &[RunResult]) -> Option<f64> {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            r.relay_cpu
                .map(|cpu| cpu.as_nanos() as f64 / (2 * r.answered.max(1)) as f64)
        })
        .collect();
    (!values.is_empty()).then(|| median(values.into_iter()))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A free UDP port on loopback (bound, then released for the relay to take).
fn free_udp_addr() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// Runs one path once: starts its relay (if any), waits until it answers, measures.
fn run_path(
    path: &Path,
    echo: &Echo,
    size: usize,
    clients: usize,
    requests: u64,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<RunResult> {
    let listen = free_udp_addr()?;
    let addrs = RelayAddrs {
        listen,
        upstream: echo.addr,
    };
    let Some(argv) = path.relay.argv(addrs) else {
        return Ok(load(echo.addr, size, clients, requests, None)?);
    };
    let mut relay = RelayProcess::spawn(&path.name, &argv, cleanup)?;
    let ready = wait_answering(listen);
    if let Err(e) = ready {
        relay.stop();
        bail!("{e}; its stderr: {}", relay.stderr_text());
    }
    let result = load(listen, size, clients, requests, Some(relay.pid()));
    relay.stop();
    Ok(result?)
}

/// Waits until a datagram sent to `addr` comes back (the relay is up), for at most 10 s.
fn wait_answering(addr: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = socket.send_to(b"ready?", addr);
        if socket.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    bail!("no answer through {addr} after 10 s")
}

/// Drives `clients` clients against `to` until `requests` answers in all; reads the relay's
/// CPU before and after.
fn load(
    to: SocketAddr,
    size: usize,
    clients: usize,
    requests: u64,
    relay: Option<i32>,
) -> std::io::Result<RunResult> {
    let per_client = requests.div_ceil(clients as u64);
    let cpu_before = relay.and_then(process_tree_cpu);
    let start = Instant::now();
    let threads: Vec<JoinHandle<std::io::Result<(u64, u64)>>> = (0..clients)
        .map(|_| std::thread::spawn(move || client(to, size, per_client)))
        .collect();
    let mut answered = 0;
    let mut lost = 0;
    for thread in threads {
        let (a, l) = thread
            .join()
            .map_err(|_| std::io::Error::other("a client thread panicked"))??;
        answered += a;
        lost += l;
    }
    let elapsed = start.elapsed();
    let cpu_after = relay.and_then(process_tree_cpu);
    let relay_cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(RunResult {
        answered,
        lost,
        elapsed,
        relay_cpu,
    })
}

/// One client: a window of datagrams in flight until `count` answers; returns (answered, lost).
fn client(to: SocketAddr, size: usize, count: u64) -> std::io::Result<(u64, u64)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(LOSS_TIMEOUT))?;
    let payload = vec![0x5a_u8; size];
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let (mut answered, mut lost) = (0u64, 0u64);
    let mut in_flight = 0usize;
    while answered < count && start.elapsed() < RUN_LIMIT {
        while in_flight < WINDOW && answered + (in_flight as u64) < count {
            match socket.send(&payload) {
                Ok(_) => in_flight += 1,
                // ECONNREFUSED from an earlier ICMP error: count it lost, go on.
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        match socket.recv(&mut buf) {
            Ok(n) if n == size => {
                answered += 1;
                in_flight -= 1;
            }
            Ok(_) => return Err(std::io::Error::other("an answer of the wrong size")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Whatever is in flight now is taken as lost; late answers are not counted
                // (they count as answers of the refilled window, which only flatters no one:
                // every path is measured the same way).
                lost += in_flight as u64;
                in_flight = 0;
            }
            Err(_) => {
                lost += 1;
                in_flight = in_flight.saturating_sub(1);
            }
        }
    }
    Ok((answered, lost))
}

/// The upstream: a UDP echo on loopback, on its own thread, until stopped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> anyhow::Result<Echo> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stopping.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })?;
        Ok(Echo {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
