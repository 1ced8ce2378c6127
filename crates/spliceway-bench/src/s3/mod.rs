//! `spliceway bench --s3 s3://BUCKET[/PREFIX]`: the origin's measurement against the real far
//! end. Uploads (and with `--direction`, downloads) the payload to S3 or an S3-compatible
//! service the way the AWS CLI does, on the `direct` path (the endpoint as its name resolves
//! here) and through each `--via` relay (TCP to the relay, TLS to the endpoint's name),
//! interleaved, and reports medians, integrity and the bench's own CPU per GiB.
//!
//! Why rusty-s3 and not aws-sdk-s3 + aws-config: the SDK brings its own HTTP stack (hyper,
//! tokio, its connector), which must be bent to connect to a relay while TLS names S3, and it
//! adds minutes of clean build on a 2-core CI machine; rusty-s3 only signs (SigV4 presigned
//! requests, no I/O), so the bytes on the wire and their timing are all in `http` here, over
//! the rustls the workspace already builds. The price is the credential chain, which
//! `credentials` implements for what a bench needs (environment, shared files through
//! rust-ini, IMDSv2) and refuses, with the command to use instead, what it does not (roles,
//! SSO, credential_process).
//!
//! Modules: `setup` (flags checked), `credentials`, `http` (the client), `ops` (signed
//! requests, S3's answers and errors), `transfer` (one timed upload or download), `report`.

mod credentials;
mod http;
mod ops;
mod report;
mod setup;
mod transfer;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};

use crate::args::{BenchArgs, S3Direction};
use crate::cleanup::Cleanup;
use crate::data::Payload;
use crate::interrupt::SignalGuard;
use crate::progress::Progress;
use crate::s3::http::Client;
use crate::s3::ops::Ops;
use crate::s3::report::{Row, RunFigures, S3Report};
use crate::s3::setup::{S3Path, S3Setup};
use crate::s3::transfer::Parts;

/// Runs `spliceway bench --s3 TARGET`.
pub(crate) fn run(args: &BenchArgs, target: &str) -> anyhow::Result<()> {
    let setup = S3Setup::from_args(args, target)?;
    let ops = Arc::new(Ops {
        bucket: setup.bucket.clone(),
        credentials: setup.credentials.clone(),
        region: setup.region.clone(),
    });
    let cleanup = Arc::new(Cleanup::default());
    let _signals = SignalGuard::install(Arc::clone(&cleanup))?;

    // Every path must reach the bucket before anything is timed: this is where wrong keys,
    // a missing bucket, another region and a relay that does not pass TLS through show.
    for path in &setup.paths {
        let mut client = Client::new(path.peer.clone(), Arc::clone(&setup.tls));
        let response = client
            .send(&ops.probe(&setup.prefix), &|_| {})
            .with_context(|| format!("path {}", path.name))?;
        if !response.is_success() {
            return Err(ops.refusal(
                &format!("path {}: listing the bucket", path.name),
                &response,
            ));
        }
    }

    if !setup.quiet {
        eprintln!(
            "generating {} of pseudo-random data and its checksums",
            bytesize::ByteSize(setup.size as u64).display().iec()
        );
    }
    let payload = Payload::generate(setup.size);
    let parts = Parts::new(&payload.bytes, setup.part_bytes);
    let rows = measure(&setup, &ops, &payload, &parts, &cleanup)?;
    drop(payload);

    let report = S3Report::new(&setup, rows);
    if setup.json {
        println!("{}", serde_json::to_string(&report)?);
        if !setup.quiet {
            eprint!("{}", report.table());
        }
    } else {
        print!("{}", report.table());
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    let failed = report.failed_rows();
    if !failed.is_empty() {
        return Err(anyhow!(
            "S3 run failed on {}: see the errors above",
            failed.join(", ")
        ));
    }
    Ok(())
}

/// This process's user + system CPU seconds (every thread: TLS, hashing, the HTTP client).
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// A name for this run's objects: unique to the process, the path and the run.
fn object_key(setup: &S3Setup, what: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{}spliceway-bench-{stamp}-{}-{what}",
        setup.prefix,
        std::process::id()
    )
}

/// Registers the deletion of `key` (unless `--keep`) before it exists, so an interruption
/// removes it too.
fn track_object(setup: &S3Setup, ops: &Arc<Ops>, path: &S3Path, key: &str, cleanup: &Cleanup) {
    let (ops, peer, tls, key) = (
        Arc::clone(ops),
        path.peer.clone(),
        Arc::clone(&setup.tls),
        key.to_owned(),
    );
    let name = format!("s3 object {key}");
    cleanup.track(name, move || transfer::delete(&ops, &peer, &tls, &key));
}

fn done_with_object(setup: &S3Setup, key: &str, cleanup: &Cleanup) {
    let name = format!("s3 object {key}");
    if setup.keep {
        cleanup.forget(&name);
    } else {
        cleanup.remove(&name);
    }
}

fn measure(
    setup: &S3Setup,
    ops: &Arc<Ops>,
    payload: &Payload,
    parts: &Parts,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<Vec<Row>> {
    let (up, down) = match setup.direction {
        S3Direction::Up => (true, false),
        S3Direction::Down => (false, true),
        S3Direction::Both => (true, true),
    };
    let directions = usize::from(up) + usize::from(down);
    let total = setup.size as u64 * u64::from(setup.runs) * (setup.paths.len() * directions) as u64;
    let progress = Progress::new(total, setup.quiet);

    // --direction down: one object, uploaded untimed over the direct path, read by every run.
    let shared_object = if up {
        None
    } else {
        let key = object_key(setup, "download");
        let direct = &setup.paths[0];
        track_object(setup, ops, direct, &key, cleanup);
        progress.set_stage("uploading the object to download".into());
        let quiet = Progress::new(0, true);
        let sent = transfer::upload(
            ops,
            &direct.peer,
            &setup.tls,
            &key,
            &payload.bytes,
            parts,
            setup.streams,
            &quiet,
            cleanup,
        )
        .context("uploading the object the downloads read")?;
        if !sent.intact {
            return Err(anyhow!(
                "the object the downloads read was not stored intact: {}",
                sent.mismatch.unwrap_or_default()
            ));
        }
        Some(key)
    };

    let mut rows: Vec<Row> = Vec::new();
    for path in &setup.paths {
        if up {
            rows.push(Row::new(&path.name, "up", path.via.clone()));
        }
        if down {
            rows.push(Row::new(&path.name, "down", path.via.clone()));
        }
    }
    for run in 1..=setup.runs {
        for path in &setup.paths {
            let key = match &shared_object {
                Some(key) => key.clone(),
                None => object_key(setup, &format!("{}-{run}", path.name)),
            };
            let mut uploaded = shared_object.is_some();
            if up {
                track_object(setup, ops, path, &key, cleanup);
                progress.set_stage(format!("run {run}/{} {} up", setup.runs, path.name));
                let cpu = own_cpu_seconds();
                let outcome = transfer::upload(
                    ops,
                    &path.peer,
                    &setup.tls,
                    &key,
                    &payload.bytes,
                    parts,
                    setup.streams,
                    &progress,
                    cleanup,
                );
                let figures = RunFigures::from(run, setup.size, outcome, own_cpu_seconds() - cpu);
                uploaded = figures.integrity;
                let row = find_row(&mut rows, &path.name, "up");
                progress.line(&figures.describe(setup.runs, &path.name, "up"));
                row.runs.push(figures);
            }
            if down {
                progress.set_stage(format!("run {run}/{} {} down", setup.runs, path.name));
                let figures = if uploaded {
                    let cpu = own_cpu_seconds();
                    let outcome = transfer::download(
                        ops,
                        &path.peer,
                        &setup.tls,
                        &key,
                        parts,
                        setup.streams,
                        &progress,
                    );
                    RunFigures::from(run, setup.size, outcome, own_cpu_seconds() - cpu)
                } else {
                    RunFigures::from(
                        run,
                        setup.size,
                        Err(anyhow!("not downloaded: the upload before it failed")),
                        0.0,
                    )
                };
                progress.line(&figures.describe(setup.runs, &path.name, "down"));
                find_row(&mut rows, &path.name, "down").runs.push(figures);
            }
            if shared_object.is_none() {
                done_with_object(setup, &key, cleanup);
            }
        }
    }
    progress.finish();
    if let Some(key) = &shared_object {
        done_with_object(setup, key, cleanup);
    }
    Ok(rows)
}

fn find_row<'a>(rows: &'a mut [Row], path: &str, direction: &str) -> &'a mut Row {
    rows.iter_mut()
        .find(|r| r.path == path && r.direction == direction)
        .expect("a row per path and direction")
}
