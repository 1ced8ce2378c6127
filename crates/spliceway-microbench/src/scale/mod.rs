//! The scale benchmark: how spliceway holds up with thousands of connections (issue 5).
//!
//! - **idle**: N connections established end to end, then silent: descriptors (2 per
//!   connection, no pipes held), RSS growth per connection, kernel slab and socket memory;
//! - **active**: N connections moving data both ways at once, every byte SHA-256 checked at
//!   both ends: peak RSS, descriptors, pipes;
//! - **churn**: connections opened and finished one at a time and in bursts, ending in every
//!   way (clean close, client reset, upstream reset, half-close, idle timeout): connections
//!   per second, and the relay's descriptors back at their baseline afterwards;
//! - the same idle and churn figures through HAProxy, for comparison.
//!
//! The relay runs as a child process (so its RSS and descriptors are its own), the upstream
//! ([`upstream`]) and the clients ([`client`]) in this process, each one mio event loop.

pub mod client;
pub mod endings;
pub mod protocol;
pub mod report;
mod scenarios;
pub mod target;
pub mod upstream;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use scenarios::{Bench, Outcome, POOL_PIPE_FDS};
use target::{RelayChoice, Target};
use upstream::Upstream;

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct Options {
    /// The relay to measure.
    pub relay: RelayChoice,
    /// HAProxy to compare with (`None`: no comparison).
    pub haproxy: Option<PathBuf>,
    /// Idle connections (0: skip).
    pub idle: usize,
    /// Active connections (0: skip).
    pub active: usize,
    /// Bytes each active connection moves each way.
    pub active_bytes: u64,
    /// Churned connections (0: skip).
    pub churn: usize,
    /// Connections per churn burst.
    pub burst: usize,
    /// How long descriptors may take to come back to their baseline after the churn.
    pub settle: Duration,
    /// Loopback source addresses for the clients (127.0.0.2 onwards).
    pub sources: u8,
}

impl Options {
    /// The standard set: 9,000 idle, 9,000 active x 1 MiB, 100,000 churned.
    pub fn standard(relay: RelayChoice) -> Options {
        Options {
            relay,
            haproxy: None,
            idle: 9000,
            active: 9000,
            active_bytes: crate::MIB,
            churn: 100_000,
            burst: 500,
            settle: Duration::from_secs(5),
            sources: 8,
        }
    }

    /// Small sizes for CI-like checks: 500 idle, 200 active x 256 KiB, 5,000 churned.
    pub fn quick(relay: RelayChoice) -> Options {
        Options {
            idle: 500,
            active: 200,
            active_bytes: 256 << 10,
            churn: 5000,
            ..Options::standard(relay)
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// Every table, rendered.
    pub text: String,
    /// Every figure.
    pub json: Value,
    /// What went wrong (empty: passed).
    pub failures: Vec<String>,
}

/// Runs the scenarios `options` asks for; `print` receives each table as soon as it is ready.
///
/// # Errors
///
/// Setting up failed (a relay would not start, descriptors ran out); failed checks are in
/// [`Report::failures`] instead.
pub fn run(options: &Options, print: &mut dyn FnMut(&str)) -> io::Result<Report> {
    let started = Instant::now();
    let limit = raise_nofile_limit();
    let mut text = String::new();
    let mut emit = |s: &str| {
        text.push_str(s);
        text.push('\n');
        print(s);
    };
    emit(&format!(
        "scale benchmark: open-file limit {limit}, {} CPUs, kernel {}\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    ));
    let upstream = Upstream::start()?;
    let sources: Vec<Ipv4Addr> = (0..options.sources)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
        .collect();
    let mut failures = Vec::new();
    let mut results = serde_json::Map::new();

    let mut spliceway = Target::spliceway(&options.relay, upstream.addr)?;
    let mut spliceway_figures = Figures::default();
    {
        let mut bench = Bench {
            upstream: &upstream,
            target: &mut spliceway,
            sources: sources.clone(),
            strict: true,
            settle: options.settle,
        };
        let mut record = |name: &str, outcome: Outcome, figures: &mut Figures| {
            for table in &outcome.tables {
                emit(&table.render());
            }
            for failure in &outcome.failures {
                emit(&format!("FAILED: {failure}\n"));
            }
            figures.take(name, &outcome.json);
            failures.extend(outcome.failures);
            results.insert(name.to_string(), outcome.json);
        };
        if options.idle > 0 {
            eprintln!("idle: {} connections...", options.idle);
            let outcome = bench.idle(options.idle)?;
            record("idle", outcome, &mut spliceway_figures);
        }
        if options.active > 0 {
            eprintln!(
                "active: {} connections x {} bytes...",
                options.active, options.active_bytes
            );
            let outcome = bench.active(options.active, options.active_bytes)?;
            record("active", outcome, &mut spliceway_figures);
        }
        if options.churn > 0 {
            eprintln!("churn: {} connections...", options.churn);
            let outcome = bench.churn(options.churn, options.burst)?;
            record("churn", outcome, &mut spliceway_figures);
        }
    }
    drop(spliceway);

    if let Some(binary) = &options.haproxy {
        match Target::haproxy(binary, upstream.addr) {
            Ok(mut haproxy) => {
                let mut bench = Bench {
                    upstream: &upstream,
                    target: &mut haproxy,
                    sources: sources.clone(),
                    strict: false,
                    settle: options.settle,
                };
                let mut figures = Figures::default();
                let mut outcomes = Vec::new();
                if options.idle > 0 {
                    eprintln!("haproxy idle: {} connections...", options.idle);
                    outcomes.push(("haproxy_idle", bench.idle(options.idle)?));
                }
                if options.churn > 0 {
                    eprintln!("haproxy churn: {} connections...", options.churn);
                    outcomes.push(("haproxy_churn", bench.churn(options.churn, options.burst)?));
                }
                for (name, outcome) in outcomes {
                    for table in &outcome.tables {
                        emit(&table.render());
                    }
                    figures.take(name.trim_start_matches("haproxy_"), &outcome.json);
                    results.insert(name.to_string(), outcome.json);
                }
                let comparison = compare(&spliceway_figures, &figures);
                emit(&comparison.render());
            }
            Err(e) => emit(&format!("haproxy comparison skipped: {e}\n")),
        }
    }
    let passed = failures.is_empty();
    emit(&format!(
        "scale benchmark {} in {:.1} s",
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    ));
    let json = json!({
        "open_file_limit": limit,
        "passed": passed,
        "failures": failures,
        "results": results,
    });
    Ok(Report {
        text,
        json,
        failures,
    })
}

/// The figures the comparison table puts side by side.
#[derive(Debug, Default)]
struct Figures {
    idle_rss_per_connection: Option<f64>,
    idle_fds_per_connection: Option<f64>,
    idle_slab_per_connection: Option<f64>,
    churn_rates: Vec<(String, f64)>,
}

impl Figures {
    fn take(&mut self, scenario: &str, json: &Value) {
        match scenario {
            "idle" => {
                self.idle_rss_per_connection = json["rss_per_connection_bytes"].as_f64();
                self.idle_fds_per_connection = json["sockets_per_connection"].as_f64();
                self.idle_slab_per_connection = json["slab_per_connection_bytes"].as_f64();
            }
            "churn" => {
                for phase in json["phases"].as_array().into_iter().flatten() {
                    if let (Some(name), Some(rate)) =
                        (phase["phase"].as_str(), phase["per_second"].as_f64())
                    {
                        self.churn_rates.push((name.to_string(), rate));
                    }
                }
            }
            _ => {}
        }
    }
}

fn compare(ours: &Figures, theirs: &Figures) -> report::Table {
    let mut table = report::Table::new(
        "spliceway vs HAProxy (same machine, same clients)",
        &["figure", "spliceway", "haproxy"],
    );
    let cell = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
    table.row(vec![
        "idle RSS per connection".into(),
        cell(ours.idle_rss_per_connection, " B"),
        cell(theirs.idle_rss_per_connection, " B"),
    ]);
    table.row(vec![
        "idle descriptors per connection".into(),
        ours.idle_fds_per_connection
            .map_or("-".into(), |v| format!("{v:.2}")),
        theirs
            .idle_fds_per_connection
            .map_or("-".into(), |v| format!("{v:.2}")),
    ]);
    table.row(vec![
        "idle kernel slab per connection".into(),
        cell(ours.idle_slab_per_connection, " B"),
        cell(theirs.idle_slab_per_connection, " B"),
    ]);
    for (name, rate) in &theirs.churn_rates {
        let mine = ours
            .churn_rates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| *r);
        table.row(vec![
            format!("connections/s, {name}"),
            cell(mine, ""),
            cell(Some(*rate), ""),
        ]);
    }
    table
}

/// Raises the soft open-file limit to the hard one (children inherit it); returns the soft
/// limit in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                eprintln!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}
