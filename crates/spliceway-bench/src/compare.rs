//! `spliceway bench --compare NAME=BIN --compare NAME=BIN ...`: two (or more) builds of
//! spliceway, or another relay, side by side in interleaved rounds, with the relay's CPU from
//! schedstat. It replaced three scripts that each did the same dance in Python, and measures
//! what they measured, with the same definitions:
//!
//! - `--workload connect` (was `scripts/connection-cost.py`): each round starts `BIN relay` on
//!   loopback (one worker, the variant's extra flags after it) in front of an echo server and
//!   makes `--requests` connections (default 4000) one after the other, each sending one byte
//!   (after a PROXY header when the variant has `--accept-proxy`: v1 for v1, v2 otherwise),
//!   half-closing and reading the answer. The figure: the relay's CPU time over the
//!   connections, 100 ms after the last, divided by their number, in µs.
//!   A variant's flags may add upstreams with `--upstream echo`: each is one more echo
//!   server of that round's own, so `--compare five="BIN --upstream echo --upstream echo
//!   --upstream echo --upstream echo --balance least-connections"` relays over five.
//! - `--workload rtt` (was `connection-cost.py --rtt`): one connection per round and
//!   `--requests` round trips (default 20000) of `--message-size` bytes (default 64) over it,
//!   TCP_NODELAY at both ends. The figure: relay CPU µs per round trip.
//! - `--workload upload` (was `scripts/embed-cost.py`): one upload of `--size` through the
//!   variant to a `spliceway sink` on loopback, the sink's answer (byte count and SHA-256)
//!   checked. A `--compare-connect-proxy NAME=BIN` variant is an HTTP CONNECT proxy started as
//!   `BIN 127.0.0.1:PORT` (the engine's `connect_proxy` example) and asked for a tunnel to the
//!   sink first. The figures: relay CPU seconds per GiB and MB/s of the transfer, and the
//!   relay's wake-ups per second (its threads' voluntary context switches, [`wakeups`]).
//!   `--streams N` sends it over N connections at once ([`compare_upload`]), each connection's
//!   MB/s reported too. With a variant's `--rate-limit-up`, its `--config FILE` (a
//!   `route_rate_limit`, a burst) or a `--compare-peer` such as nginx with `proxy_upload_rate`,
//!   this is the rate-limit measurement of docs/rate-limits.md (was
//!   `scripts/rate-limit-bench.py`, which sent for a fixed time rather than a fixed size).
//!   How each kind of variant is started: [`compare_variant`].
//!   `--compare-top NAME=BIN` is a variant watched by `BIN top` in a tmux pane during the
//!   upload ([`compare_observer`]), and `--idle-connections N` holds N connections open through
//!   every variant's relay meanwhile ([`compare_idle`]): relay CPU per GiB with and without an
//!   observer, and top's own CPU (was `scripts/observer-cost.py`).
//! - `--topology interception` (root; was `scripts/interception-bench.py`): `connect` and
//!   `upload` as above, but each variant runs three ways in network namespaces, with a fixed
//!   upstream, reading REDIRECTed connections' original destination and as a CONNECT proxy
//!   ([`compare_interception`]).
//! - `--release-profile` (was `scripts/release-profile.py`): each binary's size as built and
//!   stripped (objcopy, as the packages ship it), its start-up (median wall time of `--version`
//!   and of `check --config packaging/spliceway.toml` over `--starts` runs, the binaries
//!   interleaved run by run), and per round `BIN bench --size SIZE --runs 1 --json -q`'s relay
//!   CPU per GiB of the splice and copy paths.
//!
//! Each round runs every variant once; the order alternates from round to round. The relay's
//! CPU is [`cpu::process_tree_cpu`] (the sum of its threads' schedstat) read just before and
//! after the measured work. Rounds go to stderr as they end, medians (with every round's value)
//! to stdout, or one JSON object with `--json`.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::args::{BenchArgs, Topology, Variant, WorkloadKind};
use crate::child::RelayProcess;
use crate::cleanup::Cleanup;
use crate::compare_idle::{self, MAX_IDLE_CONNECTIONS};
use crate::compare_interception::{self, Mode, Work};
use crate::compare_observer::{self, TopPane};
use crate::compare_report::{
    CompareReport, Figures, RoundFigures, command_line, median, medians_table, round_line,
};
use crate::compare_upload::{self, Shares};
use crate::compare_variant;
use crate::cpu;
use crate::data::Payload;
use crate::error::usage;
use crate::interrupt::SignalGuard;
use crate::netns::interception::Interception;
use crate::wakeups;

/// Default connections per round (`--workload connect`), as connection-cost.py.
const DEFAULT_CONNECTIONS: u64 = 4000;
/// Default round trips per round (`--workload rtt`), as connection-cost.py --rtt.
const DEFAULT_ROUND_TRIPS: u64 = 20_000;
/// Default bytes of each round trip's message.
const DEFAULT_RTT_BYTES: u64 = 64;
/// Default rounds: the scripts' five.
const DEFAULT_ROUNDS: u32 = 5;
/// Default start-ups per binary and command (`--release-profile`).
pub(crate) const DEFAULT_STARTS: u32 = 200;
/// The settling pause after a relay starts listening, and after the last connection.
const SETTLE: Duration = Duration::from_millis(200);
const AFTER_CONNECTIONS: Duration = Duration::from_millis(100);
/// The configuration `--release-profile` times `check` with, relative to the repository root.
const CHECK_CONFIG: &str = "packaging/spliceway.toml";

/// What one round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Connections { count: u64 },
    RoundTrips { count: u64, message_bytes: usize },
    Upload { bytes: usize, streams: u32 },
    ReleaseProfile { size: u64, starts: u32 },
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::Connections { .. } => "connect",
            Measure::RoundTrips { .. } => "rtt",
            Measure::Upload { .. } => "upload",
            Measure::ReleaseProfile { .. } => "release-profile",
        }
    }
}

/// The flags checked into a comparison; every mistake is a usage error.
fn plan(args: &BenchArgs) -> anyhow::Result<(Vec<Variant>, Measure, u32)> {
    let variants: Vec<Variant> = args
        .compare
        .iter()
        .chain(&args.compare_connect_proxy)
        .chain(&args.compare_peer)
        .chain(&args.compare_top)
        .cloned()
        .collect();
    let interception = args.topology == Topology::Interception;
    if interception {
        plan_interception(args, &variants)?;
    } else if variants.len() < 2 {
        return Err(usage(anyhow!(
            "--compare needs two or more variants (NAME=BINARY each; \
             --compare-connect-proxy NAME=BINARY and --compare-peer NAME=TEMPLATE count as one)"
        )));
    }
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|w| w.name == v.name) {
            return Err(usage(anyhow!("--compare {}: that name is taken", v.name)));
        }
        compare_variant::check(v)?;
    }
    for (flag, given) in [
        ("--peer", !args.peers.is_empty()),
        ("--topology emulated", args.topology == Topology::Emulated),
        ("--target", args.target.is_some()),
        ("--relay-cpu", args.relay_cpu.is_some()),
        ("--part-size", args.part_size.is_some()),
        ("--pattern", args.pattern.is_some()),
        ("--concurrency", args.concurrency.is_some()),
        ("--plot", args.plot.is_some()),
        ("--plot-from", !args.plot_from.is_empty()),
        ("--internet-rate", args.internet_rate.is_some()),
        ("--vpc-rate", args.vpc_rate.is_some()),
        ("--link", args.link.is_some()),
        ("--nic", args.nic.is_some()),
        ("--tbf-burst", args.tbf_burst.is_some()),
    ] {
        if given {
            return Err(usage(anyhow!("{flag} does not apply to --compare")));
        }
    }
    let proxies = !args.compare_connect_proxy.is_empty();
    let others = proxies || !args.compare_peer.is_empty() || !args.compare_top.is_empty();
    let observing = !args.compare_top.is_empty() || args.idle_connections.is_some();
    if observing && (args.workload != WorkloadKind::Upload || args.release_profile) {
        return Err(usage(anyhow!(
            "--compare-top and --idle-connections apply to --workload upload only"
        )));
    }
    if args
        .idle_connections
        .is_some_and(|n| n > MAX_IDLE_CONNECTIONS)
    {
        return Err(usage(anyhow!(
            "--idle-connections: at most {MAX_IDLE_CONNECTIONS}"
        )));
    }
    if !args.compare_top.is_empty() {
        compare_observer::check_tmux()?;
    }
    let rounds = args.runs.unwrap_or(DEFAULT_ROUNDS);
    let measure = if args.release_profile {
        if args.workload != WorkloadKind::Upload
            || others
            || args.requests.is_some()
            || args.streams.is_some()
        {
            return Err(usage(anyhow!(
                "--release-profile compares spliceway builds' uploads: no --workload, \
                 --requests, --streams, --compare-connect-proxy or --compare-peer"
            )));
        }
        Measure::ReleaseProfile {
            size: args.size,
            starts: args.starts.unwrap_or(DEFAULT_STARTS),
        }
    } else {
        if args.starts.is_some() {
            return Err(usage(anyhow!("--starts applies to --release-profile only")));
        }
        if args.streams.is_some() && args.workload != WorkloadKind::Upload {
            return Err(usage(anyhow!(
                "--compare --streams applies to --workload upload only"
            )));
        }
        match args.workload {
            WorkloadKind::Upload => {
                if args.requests.is_some() || args.message_size.is_some() {
                    return Err(usage(anyhow!(
                        "--requests and --message-size apply to --workload rtt and connect"
                    )));
                }
                Measure::Upload {
                    bytes: usize::try_from(args.size)
                        .map_err(|_| usage(anyhow!("--size {} is too large", args.size)))?,
                    streams: args.streams.unwrap_or(1),
                }
            }
            _ if proxies => {
                return Err(usage(anyhow!(
                    "--compare-connect-proxy applies to --workload upload only"
                )));
            }
            WorkloadKind::Udp => {
                return Err(usage(anyhow!(
                    "--compare does not run --workload udp: its table compares the paths \
                     (spliceway and --peer) side by side already"
                )));
            }
            WorkloadKind::Connect => {
                if args.message_size.is_some() {
                    return Err(usage(anyhow!(
                        "--compare --workload connect sends one byte per connection: no \
                         --message-size"
                    )));
                }
                Measure::Connections {
                    count: args.requests.unwrap_or(DEFAULT_CONNECTIONS),
                }
            }
            WorkloadKind::Rtt => {
                let bytes = args.message_size.unwrap_or(DEFAULT_RTT_BYTES);
                if !(1..=1 << 20).contains(&bytes) {
                    return Err(usage(anyhow!("--message-size {bytes}: 1 byte to 1 MiB")));
                }
                Measure::RoundTrips {
                    count: args.requests.unwrap_or(DEFAULT_ROUND_TRIPS),
                    message_bytes: bytes as usize,
                }
            }
        }
    };
    Ok((variants, measure, rounds))
}

/// The checks of `--topology interception`: one or more plain `relay` variants (each runs in
/// three ways), `connect` or `upload`.
fn plan_interception(args: &BenchArgs, variants: &[Variant]) -> anyhow::Result<()> {
    if variants
        .iter()
        .any(|v| v.connect_proxy || v.peer.is_some() || v.observed || v.config().is_some())
    {
        return Err(usage(anyhow!(
            "--topology interception runs `BINARY relay` three ways: --compare NAME=BINARY \
             [relay flags] only (no --config, --compare-connect-proxy, --compare-peer or \
             --compare-top)"
        )));
    }
    if variants.is_empty() {
        return Err(usage(anyhow!(
            "--topology interception needs --compare NAME=BINARY"
        )));
    }
    if args.idle_connections.is_some()
        || args.release_profile
        || !matches!(args.workload, WorkloadKind::Connect | WorkloadKind::Upload)
    {
        return Err(usage(anyhow!(
            "--topology interception measures --workload connect or upload (no \
             --idle-connections or --release-profile)"
        )));
    }
    Ok(())
}

/// Runs the comparison `args` asks for.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (variants, measure, rounds) = plan(args)?;
    let cleanup = Arc::new(Cleanup::default());
    let _signals = SignalGuard::install(Arc::clone(&cleanup))?;
    if let Measure::ReleaseProfile { size, starts } = measure {
        return release_profile(args, &variants, size, starts, rounds);
    }
    let quiet = args.quiet;
    let (unit, per_round) = match measure {
        Measure::Connections { count } => ("us relay CPU per connection", count),
        Measure::RoundTrips { count, .. } => ("us relay CPU per round trip", count),
        Measure::Upload { bytes, .. } => ("relay CPU s/GiB", bytes as u64),
        Measure::ReleaseProfile { .. } => unreachable!(),
    };
    // --topology interception: the namespaces, the sink on the server, and each variant three
    // ways; otherwise an upstream on loopback.
    let net = if args.topology == Topology::Interception {
        Some(Interception::build(&cleanup)?)
    } else {
        None
    };
    let (variants, modes): (Vec<Variant>, Vec<Option<Mode>>) = match &net {
        Some(_) => variants
            .iter()
            .flat_map(|v| {
                Mode::ALL.into_iter().map(move |mode| {
                    let mut each = v.clone();
                    each.name = format!("{}/{}", v.name, mode.name());
                    (each, Some(mode))
                })
            })
            .unzip(),
        None => variants.iter().map(|v| (v.clone(), None)).unzip(),
    };
    let upstream = match (&net, measure) {
        (Some(net), _) => Upstream {
            addr: Interception::sink_addr(),
            sink: Some(compare_interception::start_sink(net, &cleanup)?),
        },
        (None, Measure::Upload { .. }) => Upstream::sink(&cleanup)?,
        (None, Measure::RoundTrips { .. }) => Upstream::echo(true)?,
        (None, _) => Upstream::echo(false)?,
    };
    let payload = match measure {
        Measure::Upload { bytes, .. } => {
            if !quiet {
                eprintln!(
                    "generating {} of pseudo-random data and its SHA-256",
                    bytesize::ByteSize(bytes as u64).display().iec()
                );
            }
            Some(Payload::generate(bytes))
        }
        _ => None,
    };
    let shares = match (measure, &payload) {
        (Measure::Upload { streams, .. }, Some(payload)) => Some(Shares::new(payload, streams)),
        _ => None,
    };
    // The variants' filled `--config` copies live here until the end.
    let configs = tempfile::Builder::new()
        .prefix("spliceway-compare-")
        .tempdir()
        .context("creating a directory for the variants' configurations")?;
    let mut figures: Vec<Vec<RoundFigures>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for index in order(variants.len(), round) {
            let variant = &variants[index];
            let upload = payload.as_ref().zip(shares.as_ref());
            let got = match (&net, modes[index]) {
                (Some(net), Some(mode)) => {
                    let work = match (measure, upload) {
                        (Measure::Connections { count }, _) => Work::Connections(count),
                        (_, Some((payload, shares))) => Work::Upload(payload, shares),
                        _ => bail!("--topology interception: connect or upload only"),
                    };
                    compare_interception::one_round(net, variant, mode, work, &cleanup).map(|m| {
                        RoundFigures {
                            figure: m.figure,
                            mb_per_s: m.mb_per_s,
                            wakeups_per_s: m.wakeups_per_s,
                            streams_mb_per_s: m.streams_mb_per_s,
                            observer_cpu_seconds: None,
                        }
                    })
                }
                _ => one_round(
                    variant,
                    measure,
                    &upstream,
                    upload,
                    &Surroundings {
                        dir: configs.path(),
                        control: !args.compare_top.is_empty(),
                        idle_connections: args.idle_connections.unwrap_or(0),
                    },
                    &cleanup,
                ),
            }
            .with_context(|| format!("round {} of {}", round + 1, variant.name))?;
            if !quiet {
                eprintln!(
                    "round {} {}: {}",
                    round + 1,
                    variant.name,
                    round_line(&got, unit)
                );
            }
            figures[index].push(got);
        }
    }
    let upload = matches!(measure, Measure::Upload { .. });
    let several = matches!(measure, Measure::Upload { streams, .. } if streams > 1);
    let report = CompareReport {
        compare: measure.name(),
        unit,
        per_round,
        streams: match measure {
            Measure::Upload { streams, .. } => Some(streams),
            _ => None,
        },
        idle_connections: args.idle_connections,
        variants: variants
            .iter()
            .zip(figures)
            .map(|(variant, got)| {
                let rounds: Vec<f64> = got.iter().map(|g| g.figure).collect();
                let rates: Vec<f64> = got.iter().filter_map(|g| g.mb_per_s).collect();
                let wakeups: Vec<f64> = got.iter().filter_map(|g| g.wakeups_per_s).collect();
                Figures {
                    name: variant.name.clone(),
                    command: command_line(&variant.argv),
                    median: median(&rounds),
                    min: rounds.iter().copied().fold(f64::INFINITY, f64::min),
                    max: rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    mb_per_s_median: upload.then(|| median(&rates)),
                    mb_per_s: upload.then_some(rates),
                    wakeups_per_s_median: upload.then(|| median(&wakeups)),
                    wakeups_per_s: upload.then_some(wakeups),
                    streams_mb_per_s: several
                        .then(|| got.iter().map(|g| g.streams_mb_per_s.clone()).collect()),
                    observer_cpu_seconds: variant
                        .observed
                        .then(|| got.iter().filter_map(|g| g.observer_cpu_seconds).collect()),
                    rounds,
                }
            })
            .collect(),
    };
    let table = medians_table(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        if !quiet {
            eprint!("{table}");
        }
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The variants' order in round `round`: as given, then reversed, and so on.
fn order(count: usize, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// What the relays forward to: an echo server in this process, or a `spliceway sink`.
#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    sink: Option<RelayProcess>,
}

impl Upstream {
    /// The sink's process, when the upstream is one.
    fn sink_pid(&self) -> Option<i32> {
        self.sink.as_ref().map(RelayProcess::pid)
    }

    /// An echo server on a thread of its own, serving one connection at a time (the clients
    /// make them one after the other): with `all`, every message until the client ends (rtt);
    /// without, one read's worth, then end of stream (connect).
    fn echo(all: bool) -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo server")?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("swb-echo".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let _ = echo_one(&mut stream, all);
                }
            })?;
        Ok(Upstream { addr, sink: None })
    }

    /// `spliceway sink` (this executable) on a free loopback port.
    fn sink(cleanup: &Arc<Cleanup>) -> anyhow::Result<Upstream> {
        let exe = std::env::current_exe().context("finding the spliceway executable")?;
        let addr = free_addr()?;
        let argv = vec![
            exe.to_string_lossy().into_owned(),
            "sink".into(),
            "--listen".into(),
            addr.to_string(),
            "-q".into(),
        ];
        let mut sink = RelayProcess::spawn("sink", &argv, cleanup)?;
        sink.wait_ready(addr, None)?;
        Ok(Upstream {
            addr,
            sink: Some(sink),
        })
    }
}

fn echo_one(stream: &mut TcpStream, all: bool) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    if all {
        stream.set_nodelay(true)?;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
    let n = stream.read(&mut buf[..16])?;
    stream.write_all(&buf[..n])?;
    stream.shutdown(Shutdown::Write)?;
    while stream.read(&mut buf)? > 0 {}
    Ok(())
}

/// A loopback address nothing listens on now (bound, read, closed: the scripts' way).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// What a round sets up around a variant's relay.
#[derive(Debug)]
struct Surroundings<'a> {
    /// Where the variants' `--config` copies, control sockets and tmux socket go.
    dir: &'a Path,
    /// Whether `relay` variants get a control socket (there is a `--compare-top`).
    control: bool,
    /// Connections held open through the relay during the round.
    idle_connections: u32,
}

/// One variant's round.
fn one_round(
    variant: &Variant,
    measure: Measure,
    upstream: &Upstream,
    upload: Option<(&Payload, &Shares)>,
    around: &Surroundings<'_>,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<RoundFigures> {
    let listen = free_addr()?;
    let all = matches!(measure, Measure::RoundTrips { .. });
    let control = around.dir.join("control.sock");
    let argv = compare_variant::command(
        variant,
        listen,
        upstream.addr,
        around.dir,
        around.control.then_some(control.as_path()),
        &mut || Ok(Upstream::echo(all)?.addr),
    )?;
    let mut relay = RelayProcess::spawn(&variant.name, &argv, cleanup)?;
    relay.wait_ready(listen, None)?;
    std::thread::sleep(SETTLE);
    let pid = relay.pid();
    let idle = match around.idle_connections {
        0 => None,
        n => {
            let sink = upstream
                .sink_pid()
                .context("--idle-connections: no sink upstream")?;
            Some(compare_idle::hold(listen, pid, sink, n)?)
        }
    };
    let top = if variant.observed {
        Some(TopPane::start(
            variant.binary(),
            &control,
            around.dir,
            "spliceway-bench-top",
            cleanup,
        )?)
    } else {
        None
    };
    let cpu_now = || cpu::process_tree_cpu(pid).context("reading the relay's CPU time");
    let header = variant.header();
    let outcome = match measure {
        Measure::Connections { count } => {
            let mut first = header.clone();
            first.push(b'x');
            let before = cpu_now()?;
            for _ in 0..count {
                let mut s = TcpStream::connect(listen)?;
                s.write_all(&first)?;
                s.shutdown(Shutdown::Write)?;
                let mut sink = [0u8; 16];
                while s.read(&mut sink)? > 0 {}
            }
            std::thread::sleep(AFTER_CONNECTIONS);
            let used = cpu_now()? - before;
            RoundFigures {
                figure: used.as_secs_f64() * 1e6 / count as f64,
                ..RoundFigures::default()
            }
        }
        Measure::RoundTrips {
            count,
            message_bytes,
        } => {
            let mut s = TcpStream::connect(listen)?;
            s.set_nodelay(true)?;
            s.write_all(&header)?;
            let message = vec![b'm'; message_bytes];
            let mut answer = vec![0u8; message_bytes];
            let before = cpu_now()?;
            for _ in 0..count {
                s.write_all(&message)?;
                s.read_exact(&mut answer)
                    .context("the relay ended the connection")?;
            }
            let used = cpu_now()? - before;
            RoundFigures {
                figure: used.as_secs_f64() * 1e6 / count as f64,
                ..RoundFigures::default()
            }
        }
        Measure::Upload { .. } => {
            let (payload, shares) = upload.context("no payload")?;
            let tunnel_to = variant.connect_proxy.then(|| upstream.addr.to_string());
            let streams = compare_upload::open(listen, tunnel_to.as_deref(), shares)?;
            let switches_now =
                || wakeups::voluntary_switches(pid).context("reading the relay's context switches");
            let top_before = top.as_ref().map(TopPane::cpu).transpose()?;
            let before = cpu_now()?;
            let switches_before = switches_now()?;
            let start = Instant::now();
            let times = compare_upload::send(streams, payload, shares)?;
            let elapsed = start.elapsed().as_secs_f64();
            let used = cpu_now()? - before;
            let switches = switches_now()?.saturating_sub(switches_before);
            let observer_cpu_seconds = match (&top, top_before) {
                (Some(top), Some(before)) => Some((top.cpu()? - before).as_secs_f64()),
                _ => None,
            };
            let bytes = payload.bytes.len() as f64;
            RoundFigures {
                figure: used.as_secs_f64() / (bytes / f64::from(1 << 30)),
                mb_per_s: Some(bytes / elapsed / 1e6),
                wakeups_per_s: Some(switches as f64 / elapsed),
                streams_mb_per_s: shares
                    .bytes()
                    .zip(times)
                    .map(|(b, t)| b as f64 / t.as_secs_f64() / 1e6)
                    .collect(),
                observer_cpu_seconds,
            }
        }
        Measure::ReleaseProfile { .. } => unreachable!(),
    };
    drop(top);
    // Closed before the relay is told to stop: it would wait for them to end.
    if let Some(idle) = idle
        && !idle.release()
    {
        tracing::warn!("{}: the relay still holds idle connections", variant.name);
    }
    relay.stop();
    Ok(outcome)
}

/// `--release-profile`: sizes, start-ups, and each build's bench CPU per GiB.
fn release_profile(
    args: &BenchArgs,
    variants: &[Variant],
    size: u64,
    starts: u32,
    rounds: u32,
) -> anyhow::Result<()> {
    let binaries: Vec<(String, PathBuf)> = variants
        .iter()
        .map(|v| {
            let path = Path::new(v.binary());
            (
                v.name.clone(),
                std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            )
        })
        .collect();
    let mut report = serde_json::json!({"size": {}, "start": {}, "bench": {}});
    for (name, path) in &binaries {
        let as_built = std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        report["size"][name] =
            serde_json::json!({"as_built": as_built, "stripped": stripped_size(path)?});
    }
    report["start"]["--version"] = start_times(&binaries, &["--version"], starts)?;
    report["start"]["check"] =
        start_times(&binaries, &["check", "--config", CHECK_CONFIG], starts)?;
    let size_arg = size.to_string();
    let mut per: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; binaries.len()];
    for round in 0..rounds {
        for index in order(binaries.len(), round) {
            let (name, path) = &binaries[index];
            let out = Command::new(path)
                .args(["bench", "--size", &size_arg, "--runs", "1", "--json", "-q"])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {} bench", path.display()))?;
            if !out.status.success() {
                bail!("{} bench exited with {}", path.display(), out.status);
            }
            let data: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("{} bench --json", path.display()))?;
            for (slot, wanted) in ["relay-splice", "relay-copy"].into_iter().enumerate() {
                let row = data["results"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["path"] == wanted))
                    .with_context(|| format!("{}: no {wanted} row", path.display()))?;
                if row["integrity"] != true {
                    bail!("{}: integrity failure on {wanted}", path.display());
                }
                per[index][slot].push(
                    row["relay_cpu_seconds_per_gib"].as_f64().with_context(|| {
                        format!("{}: no CPU figure for {wanted}", path.display())
                    })?,
                );
            }
            if !args.quiet {
                eprintln!(
                    "round {} {name}: relay-splice {:.3}, relay-copy {:.3}",
                    round + 1,
                    per[index][0].last().unwrap_or(&f64::NAN),
                    per[index][1].last().unwrap_or(&f64::NAN)
                );
            }
        }
    }
    for ((name, _), [splice, copy]) in binaries.iter().zip(&per) {
        report["bench"][name] = serde_json::json!({
            "relay-splice": {"median": median(splice), "rounds": splice},
            "relay-copy": {"median": median(copy), "rounds": copy},
        });
    }
    let mut table = format!("{:24}", "");
    for (name, _) in &binaries {
        table.push_str(&format!("{name:>16}"));
    }
    table.push('\n');
    /// A row's label and how to print one binary's cell.
    type Row<'a> = (&'a str, &'a dyn Fn(&str) -> String);
    let rows: [Row<'_>; 6] = [
        ("size as built (bytes)", &|n| {
            report["size"][n]["as_built"].to_string()
        }),
        ("size stripped (bytes)", &|n| {
            report["size"][n]["stripped"].to_string()
        }),
        ("--version median (ms)", &|n| {
            format!(
                "{:.3}",
                report["start"]["--version"][n].as_f64().unwrap_or(f64::NAN) * 1e3
            )
        }),
        ("check median (ms)", &|n| {
            format!(
                "{:.3}",
                report["start"]["check"][n].as_f64().unwrap_or(f64::NAN) * 1e3
            )
        }),
        ("splice CPU s/GiB", &|n| {
            let v = &report["bench"][n]["relay-splice"]["median"];
            format!("{:.4}", v.as_f64().unwrap_or(f64::NAN))
        }),
        ("copy CPU s/GiB", &|n| {
            let v = &report["bench"][n]["relay-copy"]["median"];
            format!("{:.4}", v.as_f64().unwrap_or(f64::NAN))
        }),
    ];
    for (label, cell) in rows {
        table.push_str(&format!("{label:24}"));
        for (name, _) in &binaries {
            table.push_str(&format!("{:>16}", cell(name)));
        }
        table.push('\n');
    }
    if args.json {
        println!("{report}");
        if !args.quiet {
            eprint!("{table}");
        }
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The binary's size stripped as the packages strip it.
fn stripped_size(path: &Path) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("stripped");
    let status = Command::new("objcopy")
        .args([
            "--strip-debug",
            "--strip-unneeded",
            "--remove-section=.comment",
        ])
        .arg(path)
        .arg(&out)
        .status()
        .context("running objcopy (binutils)")?;
    if !status.success() {
        bail!("objcopy {} failed: {status}", path.display());
    }
    Ok(std::fs::metadata(&out)?.len())
}

/// The median wall time in seconds of `BIN ARGS` per binary, over `starts` interleaved runs.
fn start_times(
    binaries: &[(String, PathBuf)],
    argv: &[&str],
    starts: u32,
) -> anyhow::Result<serde_json::Value> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); binaries.len()];
    for _ in 0..starts {
        for (index, (_, path)) in binaries.iter().enumerate() {
            let start = Instant::now();
            let status = Command::new(path)
                .args(argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| format!("running {}", path.display()))?;
            times[index].push(start.elapsed().as_secs_f64());
            if !status.success() {
                bail!(
                    "`{} {}` exited with {status}",
                    path.display(),
                    argv.join(" ")
                );
            }
        }
    }
    let mut out = serde_json::Map::new();
    for ((name, _), t) in binaries.iter().zip(times) {
        out.insert(name.clone(), median(&t).into());
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_alternates() {
        assert_eq!(order(2, 0), [0, 1]);
        assert_eq!(order(2, 1), [1, 0]);
    }
}
