//! `spliceway bench`: uploads the same pseudo-random payload over several paths (direct,
//! through spliceway in splice and copy mode, through external relays) and compares time,
//! throughput, the relay's CPU and integrity. See docs/benchmarks.md.
//!
//! Modules, in the order a run uses them:
//!
//! - `args`: the flags, validated into one `Plan` (usage errors exit 2).
//! - `data`: the payload, generated and hashed before any timing.
//! - `netns`: the emulated topology (namespaces, veth links, tbf), removed on drop.
//! - `cgroup`: `--relay-cpu`, a CFS quota per relay (cgroup v1 or v2).
//! - `cleanup`: what to undo on Ctrl-C or SIGTERM, and the signal thread that does it.
//! - `paths`: path kinds and `--peer` command templates.
//! - `child`: relay processes: spawn, readiness, stop by PID.
//! - `local_sink`: the in-process sink (timing at end of stream, hash after).
//! - `protocol`: the sink's one-line answer, shared with `spliceway sink`.
//! - `client`: one upload.
//! - `cpu`: a relay's CPU time from /proc.
//! - `runner`: the interleaved runs.
//! - `progress`: the progress bar and per-run lines on stderr.
//! - `report`: medians, the table and the JSON.
//! - `corrupt`: the hidden `corrupting-relay` command used by the integrity tests.

mod args;
mod cgroup;
mod child;
mod cleanup;
mod client;
mod corrupt;
mod cpu;
mod data;
mod local_sink;
mod netns;
mod paths;
mod progress;
pub mod protocol;
mod report;
mod runner;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::anyhow;

pub use args::BenchArgs;
pub use corrupt::{CorruptingRelayArgs, run as corrupting_relay};

use args::{Plan, Setting};
use cleanup::{Cleanup, SignalGuard};
use data::Payload;
use report::{Links, Origin, Report};

/// Runs `spliceway bench`. Exits 1 (an error) when any path fails its integrity check, after
/// printing the results.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(args)?;
    crate::logging::init(
        if plan.quiet {
            1
        } else {
            crate::logging::DEFAULT_LEVEL
        },
        crate::logging::LogFormat::Text,
    );
    let cleanup = Arc::new(Cleanup::default());
    let _signals = SignalGuard::install(Arc::clone(&cleanup))?;

    if !plan.quiet {
        eprintln!(
            "generating {} of pseudo-random data and its SHA-256",
            bytesize::ByteSize(plan.size as u64).display().iec()
        );
    }
    let payload = Payload::generate(plan.size);
    let measured = runner::measure(&plan, &payload, &cleanup)?;
    drop(payload);

    let report = build_report(&plan, measured);
    if plan.json {
        println!("{}", serde_json::to_string(&report)?);
        if !plan.quiet {
            eprint!("{}", report.table());
        }
    } else {
        print!("{}", report.table());
    }
    let failed = report.failed_paths();
    if !failed.is_empty() {
        return Err(anyhow!(
            "integrity check failed on {}: the sink did not receive what was sent",
            failed.join(", ")
        ));
    }
    Ok(())
}

fn build_report(plan: &Plan, measured: runner::Measured) -> Report {
    let (links, origin, target, via) = match &plan.setting {
        Setting::Loopback => (None, None, None, None),
        Setting::Emulated { internet, vpc } => (
            Some(Links {
                internet_mbit: internet.mbit(),
                vpc_mbit: vpc.mbit(),
                tbf_burst: netns::TBF_BURST,
                tbf_latency: netns::TBF_LATENCY,
            }),
            Some(Origin::new()),
            None,
            None,
        ),
        Setting::Remote { target, via } => (
            None,
            None,
            Some(target.given.clone()),
            via.as_ref().map(|v| v.given.clone()),
        ),
    };
    let mut results = measured.results;
    if origin.is_some() {
        for result in &mut results {
            result.origin_seconds = Some(match result.path.as_str() {
                "direct" => report::ORIGIN_DIRECT_SECONDS,
                "vpc" => report::ORIGIN_VPC_SECONDS,
                _ => report::ORIGIN_RELAY_SECONDS,
            });
        }
    }
    let mut report = Report {
        size_bytes: plan.size as u64,
        topology: plan.setting.name(),
        runs_per_path: plan.runs,
        timing: measured.timing,
        relay_cpu_limit: plan.relay_cpu,
        links,
        target,
        via,
        origin,
        host: report::Host::current(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        results,
    };
    report.relate();
    report
}
