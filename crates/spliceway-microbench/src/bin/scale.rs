//! The scale benchmark (issue 5): idle, active and churning connections through the
//! `spliceway` binary, with an optional HAProxy comparison.
//!
//! ```text
//! cargo build --release && cargo run --release -p spliceway-microbench --bin scale -- --haproxy haproxy
//! cargo run --release -p spliceway-microbench --bin scale -- --quick
//! ```
//!
//! `scripts/scale.sh` runs the standard set and keeps the output under `target/bench/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use spliceway_microbench::scale::target::RelayChoice;
use spliceway_microbench::scale::{self, Options};

/// Measures spliceway with thousands of connections: idle (memory, descriptors), active
/// (integrity, peak memory) and churning (connections per second, descriptor leaks).
#[derive(Debug, Parser)]
#[command(name = "scale")]
struct Args {
    /// The spliceway binary to run as the relay.
    #[arg(long, default_value = "target/release/spliceway")]
    spliceway: PathBuf,
    /// Run the relay in this process (the library) instead of the binary; descriptors and
    /// RSS are then the whole process's.
    #[arg(long)]
    in_process: bool,
    /// Also measure HAProxy (path or name on PATH); skipped with a message if it will not start.
    #[arg(long)]
    haproxy: Option<PathBuf>,
    /// Small sizes: 500 idle, 200 active x 256 KiB, 5,000 churned.
    #[arg(long)]
    quick: bool,
    /// Idle connections (0 skips the scenario).
    #[arg(long)]
    idle: Option<usize>,
    /// Active connections (0 skips the scenario).
    #[arg(long)]
    active: Option<usize>,
    /// Bytes each active connection moves each way (e.g. 1MiB).
    #[arg(long, value_parser = parse_size)]
    active_bytes: Option<u64>,
    /// Churned connections (0 skips the scenario).
    #[arg(long)]
    churn: Option<usize>,
    /// Connections per churn burst.
    #[arg(long, default_value_t = 500)]
    burst: usize,
    /// Seconds the relay's descriptors may take to return to their baseline after the churn.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.trim().parse::<bytesize_lite::Size>().map(|s| s.0)
}

/// Just enough size parsing for `--active-bytes` (`65536`, `256KiB`, `1MiB`).
mod bytesize_lite {
    pub struct Size(pub u64);

    impl std::str::FromStr for Size {
        type Err = String;
        fn from_str(text: &str) -> Result<Size, String> {
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: u64 = number.parse().map_err(|e| format!("{text:?}: {e}"))?;
            let factor = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "K" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                other => return Err(format!("unknown unit {other:?} (B, KiB, MiB, GiB)")),
            };
            Ok(Size(number * factor))
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("scale: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let relay = if args.in_process {
        RelayChoice::InProcess
    } else {
        RelayChoice::Child(args.spliceway.clone())
    };
    let mut options = if args.quick {
        Options::quick(relay)
    } else {
        Options::standard(relay)
    };
    options.haproxy = args.haproxy.clone();
    options.idle = args.idle.unwrap_or(options.idle);
    options.active = args.active.unwrap_or(options.active);
    options.active_bytes = args.active_bytes.unwrap_or(options.active_bytes);
    options.churn = args.churn.unwrap_or(options.churn);
    options.burst = args.burst;
    options.settle = Duration::from_secs(args.settle_seconds);
    let report =
        scale::run(&options, &mut |table| println!("{table}")).context("scale benchmark")?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    for failure in &report.failures {
        eprintln!("FAILED: {failure}");
    }
    Ok(report.failures.is_empty())
}
