//! `spliceway soak --self-test`: the verdict code against synthetic runs, and the load's own
//! checks against the upstream servers without a relay (every hash right, every reset seen),
//! with a flipped byte and through a relay that hides resets (both must be caught). Seconds;
//! it runs in the default test suite.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

use anyhow::{Context as _, ensure};

use super::load::{ABORTS, Load};
use super::payload::{Block, Corruptor, MIB};
use super::relay_log::LogSummary;
use super::rng::Rng;
use super::samples::Sample;
use super::stop::Stop;
use super::tally::{Counts, Tally};
use super::upstream::{Upstream, wait_idle};
use super::verdict::{
    Check, Run, SLOPE_CHECKS, correlation_factor, judge, least_squares, percentile, warmup_seconds,
};

/// Growth rates and length of a synthetic run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Synthetic {
    rss_per_min: f64,
    fds_per_min: f64,
    other_per_min: f64,
    minutes: f64,
    noise: bool,
}

impl Default for Synthetic {
    fn default() -> Synthetic {
        Synthetic {
            rss_per_min: 0.0,
            fds_per_min: 0.0,
            other_per_min: 0.0,
            minutes: 10.0,
            noise: true,
        }
    }
}

/// A run as the soak builds it, with samples growing at the given rates; healthy otherwise.
pub(crate) fn synthetic_run(s: Synthetic) -> Run {
    let mut rng = Rng::new(7);
    let mut noise = |spread: f64| {
        if s.noise {
            rng.uniform(-spread, spread)
        } else {
            0.0
        }
    };
    let samples = (0..(s.minutes * 60.0) as u32)
        .map(|i| {
            let t = f64::from(i);
            Sample {
                t_s: t,
                rss_kib: 20_000.0 + s.rss_per_min * t / 60.0 + noise(300.0),
                fds: (40.0 + s.fds_per_min * t / 60.0 + noise(6.5)).round(),
                other_fds: Some((14.0 + s.other_per_min * t / 60.0 + noise(1.5)).round()),
                pipe_fds: 10.0,
                pipes_open: Some(5.0),
                threads: 5.0,
                tcp_mem_pages: 100.0,
                ..Sample::default()
            }
        })
        .collect();
    let counts = Counts::default()
        .with("hash_checked", 500)
        .with("checked_upload", 500)
        .with("echoes", 900)
        .with("abort_checked", 70)
        .with("connections", 1000)
        .with("plan_clean", 930)
        .with("plan_client_reset", 40)
        .with("plan_upstream_reset", 30);
    let ends = [
        ("both finished", 930),
        ("reset by client", 40),
        ("reset by upstream", 30),
    ];
    let log = LogSummary {
        lines: 1000,
        ends: ends.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect(),
        reloaded: 20,
        ..LogSummary::default()
    };
    let mut poll_rng = Rng::new(8);
    Run {
        counts,
        samples,
        duration_s: s.minutes * 60.0,
        log,
        reloads_sent: 20,
        signal_pairs: 10,
        relay_status: Some(0),
        active_at_end: Some(0),
        fds_first: Some(40.0),
        fds_end: Some(40.0),
        health: (0..(s.minutes * 600.0) as u32)
            .map(|_| (poll_rng.uniform(0.3, 20.0), 200))
            .collect(),
        ..Run::default()
    }
}

fn failed(run: &Run) -> BTreeSet<String> {
    judge(run)
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.title)
        .collect()
}

fn set(titles: &[&str]) -> BTreeSet<String> {
    titles.iter().map(|t| (*t).to_owned()).collect()
}

fn detail(run: &Run, title: &str) -> String {
    judge(run)
        .into_iter()
        .find(|c| c.title == title)
        .map(|c: Check| c.detail)
        .unwrap_or_default()
}

/// The verdict must pass a healthy run and catch growth, mismatches, wrong endings, bad logs.
pub(crate) fn check_verdict() -> anyhow::Result<()> {
    ensure!((least_squares(&[0.0, 1.0, 2.0, 3.0], &[1.0, 3.0, 5.0, 7.0]).0 - 2.0).abs() < 1e-9);
    ensure!(
        warmup_seconds(120.0) == 60.0
            && warmup_seconds(1800.0) == 360.0
            && warmup_seconds(60.0) == 30.0
    );
    let healthy = synthetic_run(Synthetic::default());
    ensure!(
        failed(&healthy).is_empty(),
        "a healthy run failed: {:?}",
        judge(&healthy)
    );
    let grow = |s: Synthetic| failed(&synthetic_run(s));
    ensure!(
        grow(Synthetic {
            rss_per_min: 200.0,
            ..Synthetic::default()
        }) == set(&["RSS flat"])
    );
    ensure!(
        grow(Synthetic {
            rss_per_min: -200.0,
            ..Synthetic::default()
        })
        .is_empty(),
        "shrinking RSS is no leak"
    );
    ensure!(
        grow(Synthetic {
            fds_per_min: 2.0,
            ..Synthetic::default()
        }) == set(&["descriptors flat"])
    );
    ensure!(
        grow(Synthetic {
            fds_per_min: -2.0,
            ..Synthetic::default()
        }) == set(&["descriptors flat"])
    );
    ensure!(
        grow(Synthetic {
            other_per_min: 1.5,
            ..Synthetic::default()
        }) == set(&["descriptors besides connections and pipes flat"])
    );
    // 9 samples, 4 after warm-up.
    let short = synthetic_run(Synthetic {
        minutes: 0.15,
        noise: false,
        ..Synthetic::default()
    });
    let slopes: BTreeSet<String> = SLOPE_CHECKS.iter().map(|c| c.1.to_owned()).collect();
    ensure!(failed(&short) == slopes, "{:?}", judge(&short));
    ensure!(
        judge(&short)
            .iter()
            .all(|c| c.ok || c.detail.contains("too short"))
    );
    let alternating: Vec<f64> = (0..40)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    ensure!(
        (correlation_factor(&alternating) - 1.0).abs() < 1e-9,
        "alternating: no widening"
    );
    let step: Vec<f64> = (0..40).map(|i| if i < 20 { -1.0 } else { 1.0 }).collect();
    ensure!(correlation_factor(&step) > 5.0, "one step: much wider");
    let mut stepped = synthetic_run(Synthetic {
        minutes: 2.0,
        noise: false,
        ..Synthetic::default()
    });
    for sample in &mut stepped.samples {
        if sample.t_s >= 90.0 {
            sample.rss_kib += 300.0; // one allocator step after warm-up
        }
    }
    ensure!(
        failed(&stepped).contains("RSS flat"),
        "{:?}",
        judge(&stepped)
    );
    ensure!(detail(&stepped, "RSS flat").contains("too short"));
    // A flat but noisy 90 s: descriptors cannot be told.
    let noisy = synthetic_run(Synthetic {
        minutes: 1.5,
        ..Synthetic::default()
    });
    ensure!(
        failed(&noisy).contains("descriptors flat"),
        "{:?}",
        judge(&noisy)
    );
    ensure!(
        judge(&noisy)
            .iter()
            .all(|c| c.ok || c.detail.contains("too short"))
    );

    for (key, title) in [
        ("hash_mismatch", "hashes"),
        ("wrong_ending", "aborts"),
        ("exchange_failed", "clean exchanges"),
    ] {
        let mut bad = healthy.clone();
        bad.counts.add(key, 1);
        bad.problems.push(format!("{key}: synthetic"));
        ensure!(failed(&bad) == set(&[title]), "{key}: {:?}", failed(&bad));
    }
    let mut bad_log = healthy.clone();
    bad_log.log.unexpected_count = 1;
    bad_log.log.unexpected.push("ERROR x".into());
    ensure!(failed(&bad_log) == set(&["relay log"]));
    let mut unplanned = healthy.clone();
    unplanned.log.ends.insert("idle timeout".into(), 1);
    ensure!(failed(&unplanned) == set(&["relay's closed lines"]));
    let mut after_end = healthy.clone();
    after_end.counts.add("plan_client_reset_after_end", 3);
    ensure!(
        failed(&after_end) == set(&["relay's closed lines"]),
        "3 planned, none logged"
    );
    after_end
        .log
        .ends
        .insert("reset by client after its end of stream".into(), 3);
    ensure!(
        failed(&after_end).is_empty(),
        "reset after the client's end, planned and logged"
    );
    let mut missed_reload = healthy.clone();
    missed_reload.log.reloaded = 19;
    ensure!(failed(&missed_reload) == set(&["reloads"]));
    for status in [Some(1), None, Some(-9)] {
        let mut stopped = healthy.clone();
        stopped.relay_status = status;
        ensure!(failed(&stopped) == set(&["SIGTERM"]), "{status:?}");
    }
    for extra in [vec![(250.0, 200)], vec![(5.0, 503)], vec![(5000.0, 0)]] {
        let mut slow = healthy.clone();
        slow.health.extend(extra.clone());
        ensure!(
            failed(&slow) == set(&["health under metrics abuse"]),
            "{extra:?}"
        );
    }
    let mut unpolled = healthy.clone();
    unpolled.health.clear();
    ensure!(failed(&unpolled) == set(&["health under metrics abuse"]));
    let mut abused = healthy.clone();
    abused.counts.add("metrics_abuse", 1);
    abused.problems.push("metrics_abuse: x".into());
    ensure!(failed(&abused) == set(&["health under metrics abuse"]));
    ensure!(percentile(&[5.0, 1.0, 4.0, 2.0, 3.0], 50.0) == 3.0);
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    ensure!(percentile(&hundred, 99.0) == 99.0);
    ensure!(detail(&healthy, "health under metrics abuse").contains("p99 "));
    let mut busy = healthy.clone();
    busy.active_at_end = Some(3);
    ensure!(failed(&busy) == set(&["idle at the end"]));
    Ok(())
}

/// A deliberately wrong relay: it passes bytes on but ends every connection with a clean FIN,
/// whatever happened. The soak must call that a wrong ending.
fn laundering_proxy(upstream_port: u16, stop: Arc<Stop>) -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("laundering-proxy".into())
        .spawn(move || {
            for client in listener.incoming() {
                if stop.is_set() {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)) else {
                    continue;
                };
                for (from, to) in [(&client, &upstream), (&upstream, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let _ = std::thread::Builder::new().spawn(move || pump(from, to));
                }
            }
        })?;
    Ok(port)
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; MIB];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    for sock in [&to, &from] {
        let _ = sock.shutdown(Shutdown::Both); // a FIN, never a reset
    }
}

/// The load's checks straight to an upstream: all clean, every reset seen; a flipped byte is
/// a mismatch; through a relay that turns resets into clean ends, resets are wrong endings.
pub(crate) fn check_load() -> anyhow::Result<()> {
    let block = Arc::new(Block::generate(0x50A4));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(Stop::default());
    let server = Upstream::start("direct", Arc::clone(&tally), Arc::clone(&block))?;
    let ports = BTreeMap::from([("direct".to_owned(), server.port)]);
    let mut load = Load::new(
        ports,
        Arc::clone(&block),
        Arc::clone(&tally),
        Arc::clone(&stop),
        Corruptor::default(),
    );
    let mut rng = Rng::new(3);
    let fail = |what: &str, e| anyhow::anyhow!("{what}: {e}");
    load.upload("direct", 8 * MIB, 0)
        .map_err(|e| fail("upload", e))?;
    load.download("direct", 8 * MIB, MIB, None, "download")
        .map_err(|e| fail("download", e))?;
    load.multipart("direct", 2, &mut rng)
        .map_err(|e| fail("multipart", e))?;
    load.short_echo("direct", &mut rng)
        .map_err(|e| fail("echo", e))?;
    load.half_close("direct", &mut rng)
        .map_err(|e| fail("half-close", e))?;
    for (name, abort) in ABORTS {
        abort(&load, "direct", &mut rng).map_err(|e| fail(name, e))?;
    }
    wait_idle(&[&server]);
    let (counts, problems) = tally.snapshot();
    ensure!(problems.is_empty(), "direct to the upstream: {problems:?}");
    ensure!(
        counts.get("abort_checked") == ABORTS.len() as u64 && counts.get("hash_checked") == 5,
        "direct to the upstream: {counts:?}"
    );

    load.corrupt = Corruptor::new(true);
    load.download("direct", 8 * MIB, 0, None, "download")
        .map_err(|e| fail("download", e))?;
    ensure!(
        tally.snapshot().0.get("hash_mismatch") == 1,
        "a flipped byte went unnoticed"
    );

    let laundered_tally = Arc::new(Tally::default());
    let laundered = Upstream::start(
        "laundered",
        Arc::clone(&laundered_tally),
        Arc::clone(&block),
    )?;
    let proxy =
        laundering_proxy(laundered.port, Arc::clone(&stop)).context("starting the proxy")?;
    let ports = BTreeMap::from([("laundered".to_owned(), proxy)]);
    let through = Load::new(
        ports,
        block,
        Arc::clone(&laundered_tally),
        Arc::clone(&stop),
        Corruptor::default(),
    );
    through
        .client_reset_upload("laundered", &mut rng)
        .map_err(|e| fail("client reset", e))?;
    through
        .upstream_reset_download("laundered", &mut rng)
        .map_err(|e| fail("upstream reset", e))?;
    wait_idle(&[&laundered]);
    let (counts, problems) = laundered_tally.snapshot();
    ensure!(
        counts.get("wrong_ending") == 2,
        "a relay that hides resets passed: {counts:?} {problems:?}"
    );
    stop.set();
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy)); // wakes the proxy to stop
    Ok(())
}

/// Both parts; the line printed on success names what was checked.
pub(crate) fn run() -> anyhow::Result<()> {
    check_verdict().context("soak self-test: the verdict code")?;
    check_load().context("soak self-test: the load's checks")?;
    println!(
        "soak self-test: passed (slopes, warm-up, verdict on synthetic runs, log analysis, the \
         load's hash and ending checks direct, a flipped byte, a relay that hides resets)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verdict_passes_a_healthy_run_and_catches_each_fault() {
        super::check_verdict().unwrap();
    }

    #[test]
    fn the_load_catches_a_flipped_byte_and_hidden_resets() {
        super::check_load().unwrap();
    }
}
