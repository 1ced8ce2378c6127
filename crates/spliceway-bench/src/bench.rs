//! `spliceway bench`: uploads the same pseudo-random payload over several paths (direct,
//! through spliceway in splice and copy mode, through external relays) and compares time,
//! throughput, the relay's CPU and integrity. See docs/benchmarks.md.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::anyhow;

use crate::args::{BenchArgs, WorkloadKind};
use crate::cleanup::Cleanup;
use crate::compare;
use crate::data::Payload;
use crate::error::usage;
use crate::interrupt::SignalGuard;
use crate::netns::topology;
use crate::plan::{Plan, Setting, Workload};
use crate::plot;
use crate::report::{self, Links, Origin, Report};
use crate::runner;

/// Runs `spliceway bench` inside the `spliceway` binary (it starts `spliceway relay` from the
/// running executable) once the caller has set up logging: warnings only with `--quiet`
/// ([`BenchArgs::quiet`]). Prints the results, then returns an error when any path failed its
/// integrity check (the binary exits 1), or a [`UsageError`](crate::error::UsageError) when
/// the flags do not make a plan (it exits 2).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(target) = &args.s3 {
        return crate::s3::run(&args, target);
    }
    if !args.compare.is_empty()
        || !args.compare_connect_proxy.is_empty()
        || !args.compare_peer.is_empty()
        || !args.compare_top.is_empty()
        || args.release_profile
    {
        return compare::run(&args);
    }
    for (flag, given) in [
        ("--release-profile", args.release_profile),
        ("--starts", args.starts.is_some()),
        ("--idle-connections", args.idle_connections.is_some()),
    ] {
        if given {
            return Err(usage(anyhow!("{flag} needs --compare")));
        }
    }
    if !args.plot_from.is_empty() {
        return plot_saved(&args);
    }
    if args.workload == WorkloadKind::Udp {
        // A table of its own (datagrams, not bytes): none of the upload plan applies.
        let cleanup = Arc::new(Cleanup::default());
        let _signals = SignalGuard::install(Arc::clone(&cleanup))?;
        return crate::udp::run(&args, &cleanup);
    }
    let plot_to = args.plot.clone();
    let plot_title = args.plot_title.clone();
    let plot_metric = match &plot_to {
        Some(_) => Some(plot::fits(
            args.workload != WorkloadKind::Upload,
            args.plot_metric,
        )?),
        None if args.plot_metric.is_some() || plot_title.is_some() => {
            return Err(usage(anyhow!(
                "--plot-metric and --plot-title need --plot FILE.svg"
            )));
        }
        None => None,
    };
    let plan = Plan::from_args(args)?;
    let cleanup = Arc::new(Cleanup::default());
    let _signals = SignalGuard::install(Arc::clone(&cleanup))?;

    // Request workloads make their messages as they go: no payload to generate.
    let payload_len = match plan.workload {
        Workload::Upload => plan.size,
        _ => 0,
    };
    if !plan.quiet && payload_len > 0 {
        eprintln!(
            "generating {} of pseudo-random data and its SHA-256",
            bytesize::ByteSize(payload_len as u64).display().iec()
        );
    }
    let payload = Payload::generate(payload_len);
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
    if let Some(path) = &plot_to {
        let value = serde_json::to_value(&report)?;
        plot::write(path, &[value], plot_metric, plot_title.as_deref())?;
        if !plan.quiet {
            eprintln!("wrote {}", path.display());
        }
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

/// `--plot-from`: draws or tabulates saved reports, runs nothing.
fn plot_saved(args: &BenchArgs) -> anyhow::Result<()> {
    if args.plot.is_none() && !args.markdown {
        return Err(usage(anyhow!(
            "--plot-from needs --plot FILE.svg, --markdown, or both"
        )));
    }
    let reports = args
        .plot_from
        .iter()
        .map(|path| plot::load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.markdown {
        let tables: Vec<String> = reports.iter().map(plot::markdown).collect();
        print!("{}", tables.join("\n"));
    }
    if let Some(path) = &args.plot {
        plot::write(path, &reports, args.plot_metric, args.plot_title.as_deref())?;
        if !args.quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn build_report(plan: &Plan, measured: runner::Measured) -> Report {
    let (links, origin, target, via) = match &plan.setting {
        Setting::Loopback => (None, None, None, None),
        Setting::Emulated {
            internet,
            vpc,
            nic,
            burst,
        } => (
            Some(Links {
                internet_mbit: internet.mbit(),
                vpc_mbit: vpc.mbit(),
                tbf_burst: burst.describe(),
                internet_burst_bytes: burst.bytes(*internet),
                vpc_burst_bytes: burst.bytes(*vpc),
                tbf_latency: topology::TBF_LATENCY,
                nic: topology::nic_name(*nic),
                nic_settings: topology::nic_settings(*nic),
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
    let (message_size_bytes, concurrency) = match plan.workload {
        Workload::Upload => (None, None),
        Workload::RoundTrips { message_bytes, .. } => (Some(message_bytes as u64), None),
        Workload::Connections {
            message_bytes,
            concurrency,
            ..
        } => (Some(message_bytes as u64), Some(concurrency)),
    };
    let mut report = Report {
        workload: plan.workload.name(),
        requests_per_run: plan.workload.requests(),
        message_size_bytes,
        concurrency,
        size_bytes: plan
            .workload
            .requests()
            .map_or(plan.size as u64, |n| n * message_size_bytes.unwrap_or(0)),
        topology: plan.setting.name(),
        runs_per_path: plan.runs,
        streams: plan.shape.streams,
        part_size_bytes: plan.shape.part_bytes.map(|p| p as u64),
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
