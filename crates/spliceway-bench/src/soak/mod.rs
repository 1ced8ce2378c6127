//! `spliceway soak`: a mixed load through one `spliceway run` for N minutes, to show that
//! nothing grows and nothing breaks (issue 13), with abuse of its metrics port while /healthz
//! is polled (issue 24); then a verdict. See docs/reliability.md#soak.
//!
//! One relay, two routes (`alpha` in splice mode, `beta` in copy mode), each relaying to an
//! upstream server of the soak's own on 127.0.0.1 ([`upstream`]). The load ([`load`]), all on
//! loopback and bounded in time and in count per cycle: bulk uploads and downloads of 8-32 MiB
//! checked by SHA-256; the parallel multipart pattern of `aws s3 cp`; small echoed messages on
//! long-lived and short connections (the churn, about 100 connections a second); client and
//! upstream resets mid-transfer, each of which the other side must see as a reset; a slow
//! reader and half-closes. SIGHUP every 30 s with a rewritten configuration, SIGUSR1 then
//! SIGUSR2 every minute. The metrics port is abused ([`abuse`]) while a thread polls /healthz.
//!
//! Once a second it samples the relay ([`samples`]) into samples.csv. At the end it stops the
//! relay with SIGTERM, draws plot.svg ([`figure`]) and writes the verdict ([`verdict`]) to
//! stdout and verdict.txt; it fails (exit 1) unless every check passes.
//!
//! Modules: `rng` (the load's choices), `stop` (the stop event), `payload` (the block every
//! transfer is a slice of), `wire` (socket helpers), `tally` (counters and problems),
//! `upstream`, `load`, `abuse`, `relay` (configuration, process, metrics), `samples`,
//! `relay_log` (the log's lines), `verdict`, `figure`, `self_test`.

mod abuse;
mod figure;
mod load;
mod payload;
mod relay;
mod relay_log;
mod rng;
mod samples;
mod self_test;
mod stop;
mod tally;
mod upstream;
mod verdict;
mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;

use self::abuse::HealthPoller;
use self::load::Load;
use self::payload::{Block, Corruptor};
use self::relay::{DRAIN_TIMEOUT_S, Ports, Relay, config_text, metric_sum, scrape, write_config};
use self::stop::{Stop, secs};
use self::tally::{Counts, Tally};
use self::upstream::{CLIENT_TIMEOUT, Upstream};
use self::verdict::{Run, format_verdict, judge};

/// Arguments of `spliceway soak`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
#[command(after_help = "Examples:
  spliceway soak --minutes 30                 # output in target/soak/<UTC time>/
  spliceway soak --minutes 6 --binary target/release/spliceway --out /tmp/soak
  spliceway soak --self-test                  # the verdict code and the load's checks, seconds

Exit status: 0 when every check passes, 1 otherwise; 130 when interrupted. scripts/soak.sh
builds the release binary first. See docs/reliability.md#soak.")]
pub struct SoakArgs {
    /// Minutes of load.
    #[arg(long, default_value_t = 10.0, value_parser = parse_minutes)]
    minutes: f64,
    /// Output directory (default: a directory under target/soak named by the UTC time).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The spliceway binary to soak (default: this executable).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Check the verdict code on synthetic runs and the load's checks without a relay, then
    /// exit.
    #[arg(long)]
    self_test: bool,
}

fn parse_minutes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if m > 0.0 && m.is_finite() => Ok(m),
        _ => Err(format!("{text:?} is not a positive number of minutes")),
    }
}

/// Intervals of the controller. SOAK_FAST_SIGNALS=1 (for testing the soak itself) shortens
/// them so that a 1-minute run still sees several reloads and signal pairs.
fn control_intervals() -> (f64, f64, f64) {
    if std::env::var_os("SOAK_FAST_SIGNALS").is_some() {
        (5.0, 10.0, 2.5)
    } else {
        (30.0, 60.0, 15.0)
    }
}

/// Runs `spliceway soak`.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.self_test {
        return self_test::run();
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let out = args.out.clone().unwrap_or_else(relay::default_out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    let passed = soak(&args, &binary, &out, &interrupted)?;
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("soak: interrupted");
        std::process::exit(130);
    }
    anyhow::ensure!(
        passed,
        "the soak failed (see {})",
        out.join("verdict.txt").display()
    );
    Ok(())
}

/// What a soak starts before the relay: the servers, the ports, the configuration, the load.
struct Setup {
    out: PathBuf,
    tally: Arc<Tally>,
    servers: Vec<Upstream>,
    ports: Ports,
    config: PathBuf,
    load: Arc<Load>,
    load_stop: Arc<Stop>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("out", &self.out)
            .field("ports", &self.ports)
            .finish()
    }
}

impl Setup {
    fn new(out: &Path) -> anyhow::Result<Setup> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let block = Arc::new(Block::generate(seed));
        let tally = Arc::new(Tally::default());
        let alpha = Upstream::start("alpha", Arc::clone(&tally), Arc::clone(&block))?;
        let beta = Upstream::start("beta", Arc::clone(&tally), Arc::clone(&block))?;
        let ports = Ports {
            listen_alpha: relay::free_port()?,
            listen_beta: relay::free_port()?,
            upstream_alpha: alpha.port,
            upstream_beta: beta.port,
            metrics: relay::free_port()?,
        };
        let config = out.join("spliceway.toml");
        write_config(&config, &config_text(&ports, 0))?;
        let load_stop = Arc::new(Stop::default());
        let routes = BTreeMap::from([
            ("alpha".to_owned(), ports.listen_alpha),
            ("beta".to_owned(), ports.listen_beta),
        ]);
        let corrupt = Corruptor::new(std::env::var_os("SOAK_CORRUPT").is_some());
        let load = Arc::new(Load::new(
            routes,
            block,
            Arc::clone(&tally),
            Arc::clone(&load_stop),
            corrupt,
        ));
        Ok(Setup {
            out: out.to_owned(),
            tally,
            servers: vec![alpha, beta],
            ports,
            config,
            load,
            load_stop,
        })
    }
}

/// Runs the soak; returns whether every check passed.
fn soak(
    args: &SoakArgs,
    binary: &Path,
    out: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<bool> {
    let setup = Setup::new(out)?;
    relay::check_config(binary, &setup.config)?;
    let mut relay = Relay::start(binary, &setup.config, &out.join("relay.log"))?;
    println!(
        "soak: relay pid {}, routes alpha 127.0.0.1:{} (splice), beta 127.0.0.1:{} (copy), \
         metrics 127.0.0.1:{}; {} min of load; output in {}",
        relay.pid,
        setup.ports.listen_alpha,
        setup.ports.listen_beta,
        setup.ports.metrics,
        crate::plot::g(args.minutes),
        out.display()
    );
    let drain = Duration::from_secs(DRAIN_TIMEOUT_S + 10);
    let measured = drive(args, &setup, &mut relay, interrupted);
    let mut run = match measured {
        Ok(run) => run,
        Err(error) => {
            setup.load_stop.set();
            let status = relay.stop(drain);
            eprintln!(
                "soak: stopped; the relay (pid {}) exited with status {status:?}",
                relay.pid
            );
            return Err(error);
        }
    };
    if interrupted.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let (counts, problems) = setup.tally.snapshot();
    let log = std::fs::read(out.join("relay.log")).unwrap_or_default();
    run.log = relay_log::analyse(String::from_utf8_lossy(&log).lines());
    run.counts = counts;
    run.problems = problems;
    let checks = judge(&run);
    let mut text = format_verdict(&checks, &run);
    if !run.problems.is_empty() {
        text += "\nfirst problems:\n";
        for p in &run.problems {
            text += &format!("  {p}\n");
        }
    }
    std::fs::write(out.join("verdict.txt"), &text)?;
    std::fs::write(
        out.join("plot.svg"),
        figure::render(&run.samples, run.duration_s),
    )?;
    print!("{text}");
    println!(
        "soak: samples.csv, health.csv, plot.svg, relay.log and verdict.txt in {}",
        out.display()
    );
    Ok(checks.iter().all(|c| c.ok))
}

/// Waits for /metrics (served after every listener is bound), then makes one echo exchange
/// per route, so the load starts against a relay that relays.
fn wait_ready(relay: &mut Relay, setup: &Setup) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(setup.ports.metrics, Duration::from_millis(500)).is_none() {
        anyhow::ensure!(relay.alive(), "the relay exited early; see relay.log");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relay's metrics endpoint did not answer in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rng = rng::Rng::new(1);
    for route in &setup.load.routes {
        setup
            .load
            .short_echo(route, &mut rng)
            .map_err(|e| anyhow::anyhow!("a first echo through {route}: {e}"))?;
    }
    Ok(())
}

/// Every reload interval: a changed configuration and SIGHUP. Every signal interval (offset,
/// so the two do not coincide): SIGUSR1, 3 s, SIGUSR2 (always a pair, so the log level comes
/// back to where it was). Returns (reloads, signal pairs).
fn control(relay: &Mutex<&mut Relay>, setup: &Setup) -> (u64, u64) {
    let (reload_s, signal_s, offset_s) = control_intervals();
    let start = Instant::now();
    let mut next_reload = start + secs(reload_s);
    let mut next_signal = start + secs(offset_s);
    let (mut generation, mut pairs) = (0u64, 0u64);
    let signal = |s: Signal| relay.lock().unwrap_or_else(|e| e.into_inner()).signal(s);
    while !setup.load_stop.is_set() {
        let now = Instant::now();
        if now >= next_reload {
            generation += 1;
            if write_config(&setup.config, &config_text(&setup.ports, generation)).is_ok() {
                signal(Signal::SIGHUP);
            }
            next_reload += secs(reload_s);
        } else if now >= next_signal {
            signal(Signal::SIGUSR1);
            std::thread::sleep(secs((signal_s / 4.0).min(3.0)));
            signal(Signal::SIGUSR2);
            pairs += 1;
            next_signal += secs(signal_s);
        }
        setup.load_stop.wait(
            next_reload
                .min(next_signal)
                .saturating_duration_since(Instant::now()),
        );
    }
    (generation, pairs)
}

/// Runs the load for the soak's length with the sampler and the controller, lets it finish,
/// reads the relay's final state, then stops the relay with SIGTERM.
fn drive(
    args: &SoakArgs,
    setup: &Setup,
    relay: &mut Relay,
    interrupted: &AtomicBool,
) -> anyhow::Result<Run> {
    wait_ready(relay, setup)?;
    let t0 = Instant::now();
    let pid = relay.pid;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sample_stop = Arc::new(Stop::default());
    let watched = samples::Watched {
        metrics: setup.ports.metrics,
        listen: vec![setup.ports.listen_alpha, setup.ports.listen_beta],
        upstream: vec![setup.ports.upstream_alpha, setup.ports.upstream_beta],
    };
    let sampler = {
        let (samples, stop, csv) = (
            Arc::clone(&samples),
            Arc::clone(&sample_stop),
            setup.out.join("samples.csv"),
        );
        let watched = watched.clone();
        std::thread::Builder::new()
            .name("soak-sampler".into())
            .spawn(move || samples::sample_loop(pid, &watched, t0, &csv, &samples, &stop))?
    };
    let mut threads = load::start(&setup.load)?;
    threads.extend(abuse::start(
        setup.ports.metrics,
        &setup.tally,
        &setup.load_stop,
    )?);
    let poller = HealthPoller::start(setup.ports.metrics, setup.out.join("health.csv"))?;
    let relay_lock = Mutex::new(relay);
    let ((reloads, pairs), duration) = std::thread::scope(|scope| {
        let controller = scope.spawn(|| control(&relay_lock, setup));
        let duration = wait_for_the_end(
            &relay_lock,
            t0,
            args.minutes * 60.0,
            &setup.tally,
            interrupted,
        );
        setup.load_stop.set();
        (controller.join().unwrap_or((0, 0)), duration)
    });
    let relay = relay_lock.into_inner().unwrap_or_else(|e| e.into_inner());
    let health = poller.stop();
    let join_deadline = Instant::now() + CLIENT_TIMEOUT;
    for thread in threads {
        while !thread.is_finished() && Instant::now() < join_deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    upstream::wait_idle(&setup.servers.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(3)); // let the relay close what the last connections left
    let alive = relay.alive();
    let final_metrics = scrape(setup.ports.metrics, Duration::from_secs(2));
    let last = if alive {
        samples::read_sample(pid, &watched, t0).ok()
    } else {
        None
    };
    let first_fds = samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first()
        .map(|s| s.fds);
    let relay_cpu_s = alive
        .then(|| crate::cpu::process_tree_cpu(pid))
        .flatten()
        .map(|d| d.as_secs_f64());
    sample_stop.set();
    let _ = sampler.join();
    let relay_status = relay.stop(Duration::from_secs(DRAIN_TIMEOUT_S + 10));
    let soak_cpu_s = own_cpu_seconds();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let final_ref = final_metrics.as_ref();
    Ok(Run {
        counts: Counts::default(),
        samples,
        duration_s: duration,
        reloads_sent: reloads,
        signal_pairs: pairs,
        relay_status,
        active_at_end: final_metrics
            .as_ref()
            .map(|m| metric_sum(Some(m), "spliceway_connections_active").unwrap_or(0.0) as u64),
        fds_first: first_fds,
        fds_end: last.as_ref().map(|s| s.fds),
        pipe_fds_end: last.as_ref().map(|s| s.pipe_fds),
        relay_accepted: metric_sum(final_ref, "spliceway_connections_accepted_total")
            .map(|v| v as u64),
        relay_bytes: metric_sum(final_ref, "spliceway_bytes_total"),
        relay_cpu_s,
        soak_cpu_s,
        health,
        ..Run::default()
    })
}

/// Sleeps until the soak's length has passed, the relay died or Ctrl-C; returns the length.
/// A line every minute or so shows a long soak is alive.
fn wait_for_the_end(
    relay: &Mutex<&mut Relay>,
    t0: Instant,
    seconds: f64,
    tally: &Tally,
    interrupted: &AtomicBool,
) -> f64 {
    let end = t0 + secs(seconds);
    let mut reported_minute = 0u64;
    while Instant::now() < end && !interrupted.load(Ordering::SeqCst) {
        if !relay.lock().unwrap_or_else(|e| e.into_inner()).alive() {
            eprintln!("soak: the relay exited early");
            break;
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        );
        let elapsed = t0.elapsed().as_secs_f64();
        let minute = (elapsed / 60.0) as u64;
        if minute > reported_minute {
            reported_minute = minute;
            let (c, _) = tally.snapshot();
            println!(
                "soak: {:.1} min: {} connections, {} hashes, {} aborts checked, {} problems",
                elapsed / 60.0,
                c.get("connections"),
                c.get("hash_checked"),
                c.get("abort_checked"),
                c.get("hash_mismatch") + c.get("wrong_ending") + c.get("exchange_failed")
            );
        }
    }
    t0.elapsed().as_secs_f64()
}

/// User and system CPU time of the soak's own process (its threads, not the relay).
fn own_cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}
