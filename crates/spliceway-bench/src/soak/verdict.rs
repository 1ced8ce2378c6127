//! The verdict on a soak's figures: pure functions of a [`Run`], exercised by the self-test
//! on synthetic runs (healthy, leaking, too short, wrong endings, a bad log).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::abuse::{HEALTH_POLL_INTERVAL, METRICS_PIPELINED_REQUESTS};
use super::payload::MIB;
use super::relay_log::LogSummary;
use super::samples::Sample;
use super::tally::Counts;

/// Growth per minute after warm-up that counts as a leak.
const RSS_SLOPE_LIMIT_KIB_PER_MIN: f64 = 64.0;
const FD_SLOPE_LIMIT_PER_MIN: f64 = 1.0;
/// Warm-up: the first 20 % of the run or 60 s, whichever is longer, but at most half the run
/// (so that a short run still has samples to fit).
const WARMUP_FRACTION: f64 = 0.2;
const WARMUP_MIN_SECONDS: f64 = 60.0;
/// Every /healthz answer must take at most this, while the metrics port is abused.
pub(crate) const HEALTH_LATENCY_LIMIT_MS: f64 = 200.0;

/// How the relay's `closed` lines name each planned ending
/// (crates/spliceway/src/connection/close_reason.rs); the counts must match the plan.
pub(crate) const RELAY_END_OF_PLAN: [(&str, &str); 4] = [
    ("clean", "both finished"),
    ("client_reset", "reset by client"),
    // A client that half-closed (every byte of it, then its end, passed on) and then reset:
    // not an abort of anything it sent.
    (
        "client_reset_after_end",
        "reset by client after its end of stream",
    ),
    ("upstream_reset", "reset by upstream"),
];

/// (column of samples.csv, check, unit, limit, whether a fall counts too). RSS may fall
/// (memory given back); descriptors may not drift either way. `other_fds` (descriptors not
/// held by an open connection or a pipe: listeners, epoll, metrics, files) is nearly constant
/// under any load, so it shows a leak of a closed connection's socket, or one per reload,
/// even in a short run where the load's own ups and downs hide it in `fds`.
pub(crate) const SLOPE_CHECKS: [(&str, &str, &str, f64, bool); 3] = [
    (
        "rss_kib",
        "RSS flat",
        "KiB/min",
        RSS_SLOPE_LIMIT_KIB_PER_MIN,
        false,
    ),
    (
        "fds",
        "descriptors flat",
        "fds/min",
        FD_SLOPE_LIMIT_PER_MIN,
        true,
    ),
    (
        "other_fds",
        "descriptors besides connections and pipes flat",
        "fds/min",
        FD_SLOPE_LIMIT_PER_MIN,
        true,
    ),
];

/// What a soak measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub(crate) counts: Counts,
    pub(crate) problems: Vec<String>,
    pub(crate) samples: Vec<Sample>,
    /// Seconds of load.
    pub(crate) duration_s: f64,
    pub(crate) log: LogSummary,
    pub(crate) reloads_sent: u64,
    pub(crate) signal_pairs: u64,
    /// Exit code after SIGTERM (minus the signal that killed it); None: killed after the
    /// drain timeout.
    pub(crate) relay_status: Option<i32>,
    pub(crate) active_at_end: Option<u64>,
    pub(crate) fds_first: Option<f64>,
    pub(crate) fds_end: Option<f64>,
    pub(crate) pipe_fds_end: Option<f64>,
    pub(crate) relay_accepted: Option<u64>,
    pub(crate) relay_bytes: Option<f64>,
    pub(crate) relay_cpu_s: Option<f64>,
    pub(crate) soak_cpu_s: Option<f64>,
    /// (latency ms, status) of every /healthz poll.
    pub(crate) health: Vec<(f64, u16)>,
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub(crate) ok: bool,
    pub(crate) title: String,
    pub(crate) detail: String,
}

fn check(ok: bool, title: &str, detail: String) -> Check {
    Check {
        ok,
        title: title.to_owned(),
        detail,
    }
}

/// Slope and intercept of the least-squares line, and the slope's standard error.
pub(crate) fn least_squares(xs: &[f64], ys: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return (0.0, my, f64::INFINITY);
    }
    let slope = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / sxx;
    let intercept = my - slope * mx;
    let residual: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - intercept - slope * x).powi(2))
        .sum();
    let stderr = if xs.len() > 2 {
        (residual / (n - 2.0) / sxx).sqrt()
    } else {
        f64::INFINITY
    };
    (slope, intercept, stderr)
}

/// First 20 % or 60 s, whichever is longer, but at most half the run.
pub(crate) fn warmup_seconds(duration: f64) -> f64 {
    (WARMUP_FRACTION * duration)
        .max(WARMUP_MIN_SECONDS)
        .min(0.5 * duration)
}

/// A fitted growth: per minute, with its standard error widened for correlated samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Growth {
    pub(crate) slope: f64,
    pub(crate) stderr: f64,
    pub(crate) intercept: f64,
}

/// Least-squares slope per minute of `column` over the samples after warm-up and before the
/// load stopped (the idle tail after it would read as a fall); None with fewer than 10
/// samples. Also the warm-up and the samples used.
pub(crate) fn growth(
    samples: &[Sample],
    column: &str,
    duration: f64,
) -> (Option<Growth>, f64, usize) {
    let warm = warmup_seconds(duration);
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| warm <= s.t_s && s.t_s <= duration)
        .filter_map(|s| Some((s.t_s / 60.0, s.column(column)?)))
        .collect();
    if points.len() < 10 {
        return (None, warm, points.len());
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let (slope, intercept, stderr) = least_squares(&xs, &ys);
    let residuals: Vec<f64> = points
        .iter()
        .map(|(x, y)| y - intercept - slope * x)
        .collect();
    let growth = Growth {
        slope,
        stderr: stderr * correlation_factor(&residuals),
        intercept,
    };
    (Some(growth), warm, points.len())
}

/// How much to widen a least-squares standard error when successive residuals are alike (RSS
/// moves in steps and stays there; a multipart cycle lasts seconds): sqrt((1+r)/(1-r)) for the
/// lag-1 autocorrelation r, as for an AR(1) series. Without it a minute of two RSS steps would
/// look like a precisely measured slope.
pub(crate) fn correlation_factor(residuals: &[f64]) -> f64 {
    let n = residuals.len() as f64;
    let mean = residuals.iter().sum::<f64>() / n;
    let spread: f64 = residuals.iter().map(|e| (e - mean).powi(2)).sum();
    if spread == 0.0 {
        return 1.0;
    }
    let r = residuals
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum::<f64>()
        / spread;
    let r = r.clamp(0.0, 0.99);
    ((1.0 + r) / (1.0 - r)).sqrt()
}

/// PASS when the fitted slope is inside the limit and the fit is precise enough to say so: a
/// standard error of half the limit or more (a run too short for the load's ups and downs to
/// average out) is a FAIL that says "too short to tell", not a guess.
fn slope_check(
    run: &Run,
    column: &str,
    name: &str,
    unit: &str,
    limit: f64,
    two_sided: bool,
) -> Check {
    let (fit, warm, used) = growth(&run.samples, column, run.duration_s);
    let Some(Growth { slope, stderr, .. }) = fit else {
        return check(
            false,
            name,
            format!("only {used} samples after the {warm:.0} s warm-up: too short to tell"),
        );
    };
    let bound = if two_sided {
        format!("|slope| < {}", g(limit))
    } else {
        format!("slope < {}", g(limit))
    };
    let detail = format!(
        "{slope:+.2} {unit} (± {stderr:.2}) over {used} samples after {warm:.0} s; needs {bound} {unit}"
    );
    if 2.0 * stderr >= limit {
        return check(
            false,
            name,
            format!(
                "{detail} with ± < {}: too short to tell, run longer",
                g(limit / 2.0)
            ),
        );
    }
    let ok = if two_sided {
        slope.abs() < limit
    } else {
        slope < limit
    };
    check(ok, name, detail)
}

/// A number as Python's `{:g}` prints the limits here (no trailing zeros).
fn g(value: f64) -> String {
    crate::plot::g(value)
}

/// The p-th percentile (nearest rank) of `values` (not empty).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut ordered = values.to_vec();
    ordered.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * ordered.len() as f64).ceil() as usize;
    ordered[rank.saturating_sub(1).min(ordered.len() - 1)]
}

/// The verdict on the health answers while the metrics port was abused.
fn health_check(run: &Run) -> Check {
    let c = &run.counts;
    let title = "health under metrics abuse";
    let abused = format!(
        "{} idle connections opened ({} closed by the server), {} non-reading clients of {} \
         pipelined GET /metrics closed by the server, {} oversized heads refused",
        c.get("metrics_idle_opened"),
        c.get("metrics_idle_closed_by_server"),
        c.get("metrics_nonreaders_closed"),
        METRICS_PIPELINED_REQUESTS,
        c.get("metrics_oversized_refused"),
    );
    if run.health.is_empty() {
        return check(false, title, format!("no /healthz poll was made; {abused}"));
    }
    let latencies: Vec<f64> = run.health.iter().map(|(l, _)| *l).collect();
    let failed = run.health.iter().filter(|(_, s)| *s != 200).count();
    let worst = latencies.iter().copied().fold(0.0, f64::max);
    let ok = failed == 0 && worst <= HEALTH_LATENCY_LIMIT_MS && c.get("metrics_abuse") == 0;
    let mut detail = format!(
        "{} /healthz polls every {} ms: max {worst:.1} ms, p99 {:.1} ms, median {:.1} ms, \
         {failed} not answered 200; needs max <= {} ms; while {abused}; {} defences failed",
        run.health.len(),
        HEALTH_POLL_INTERVAL.as_millis(),
        percentile(&latencies, 99.0),
        percentile(&latencies, 50.0),
        g(HEALTH_LATENCY_LIMIT_MS),
        c.get("metrics_abuse"),
    );
    detail += &examples(&run.problems, "metrics_abuse");
    check(ok, title, detail)
}

/// The first five problems of a kind, indented under a check.
fn examples(problems: &[String], kind: &str) -> String {
    let prefix = format!("{kind}:");
    problems
        .iter()
        .filter(|p| p.starts_with(&prefix))
        .take(5)
        .map(|p| format!("\n        {p}"))
        .collect()
}

/// The verdict: one check per property the soak holds the relay to.
pub(crate) fn judge(run: &Run) -> Vec<Check> {
    let c = &run.counts;
    let mut checks = Vec::new();
    let kinds: Vec<String> =
        c.0.iter()
            .filter_map(|(k, v)| Some(format!("{} {v}", k.strip_prefix("checked_")?)))
            .collect();
    let mismatches = c.get("hash_mismatch");
    checks.push(check(
        mismatches == 0 && c.get("hash_checked") > 0,
        "hashes",
        format!(
            "{} transfers checked by SHA-256 ({}) and {} echoes compared; {mismatches} mismatches{}",
            c.get("hash_checked"),
            kinds.join(", "),
            c.get("echoes"),
            examples(&run.problems, "hash_mismatch"),
        ),
    ));
    let wrong = c.get("wrong_ending");
    checks.push(check(
        wrong == 0 && c.get("abort_checked") > 0,
        "aborts",
        format!(
            "{} resets checked at the other side; {wrong} wrong endings{}",
            c.get("abort_checked"),
            examples(&run.problems, "wrong_ending"),
        ),
    ));
    let failed = c.get("exchange_failed");
    checks.push(check(
        failed == 0,
        "clean exchanges",
        format!(
            "{} connections, {} planned clean; {failed} failed{}",
            c.get("connections"),
            c.get("plan_clean"),
            examples(&run.problems, "exchange_failed"),
        ),
    ));
    for (column, name, unit, limit, two_sided) in SLOPE_CHECKS {
        checks.push(slope_check(run, column, name, unit, limit, two_sided));
    }
    let log = &run.log;
    let expected = if log.expected.is_empty() {
        "none".to_owned()
    } else {
        log.expected
            .iter()
            .map(|(p, n)| format!("{n} x /{p}/"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    checks.push(check(
        log.unexpected_count == 0,
        "relay log",
        format!(
            "{} lines; {} unexpected WARN/ERROR lines; expected: {expected}{}",
            log.lines,
            log.unexpected_count,
            log.unexpected
                .iter()
                .take(10)
                .map(|l| format!("\n        {l}"))
                .collect::<String>(),
        ),
    ));
    checks.push(closed_lines_check(run));
    checks.push(check(
        log.reloaded == run.reloads_sent && log.reloaded_unchanged == 0 && run.reloads_sent > 0,
        "reloads",
        format!(
            "{} SIGHUPs sent, {} reloads logged ({} that changed nothing); {} SIGUSR1/SIGUSR2 pairs",
            run.reloads_sent, log.reloaded, log.reloaded_unchanged, run.signal_pairs
        ),
    ));
    let active = run.active_at_end.map_or_else(
        || "an unknown number of (no metrics)".to_owned(),
        |a| a.to_string(),
    );
    checks.push(check(
        run.active_at_end == Some(0),
        "idle at the end",
        format!(
            "{active} connections active after the load stopped; descriptors {} at the first \
             sample, {} at the end ({} of them the pool's idle pipes)",
            opt(run.fds_first),
            opt(run.fds_end),
            opt(run.pipe_fds_end)
        ),
    ));
    checks.push(health_check(run));
    let how = match run.relay_status {
        None => "did not exit within the drain timeout (killed)".to_owned(),
        Some(s) if s < 0 => format!("was killed by signal {}", -s),
        Some(s) => format!("exited with status {s} after SIGTERM"),
    };
    checks.push(check(
        run.relay_status == Some(0),
        "SIGTERM",
        format!("the relay {how} (it must drain and exit 0)"),
    ));
    checks
}

/// The relay's `closed` lines against the plan: every planned ending logged as often as
/// planned, and no other ending.
fn closed_lines_check(run: &Run) -> Check {
    let planned: Vec<(&str, u64)> = RELAY_END_OF_PLAN
        .iter()
        .map(|(plan, end)| (*end, run.counts.get(&format!("plan_{plan}"))))
        .collect();
    let logged = &run.log.ends;
    let others: BTreeMap<&String, &u64> = logged
        .iter()
        .filter(|(end, _)| !planned.iter().any(|(p, _)| p == end))
        .collect();
    let agree = planned
        .iter()
        .all(|(end, n)| logged.get(*end).copied().unwrap_or(0) == *n)
        && others.is_empty();
    let mut detail = format!(
        "planned {}; logged {}",
        planned
            .iter()
            .map(|(end, n)| format!("{n} '{end}'"))
            .collect::<Vec<_>>()
            .join(", "),
        planned
            .iter()
            .map(|(end, _)| format!("{} '{end}'", logged.get(*end).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (end, n) in others {
        let _ = write!(detail, ", {n} '{end}' (unplanned)");
    }
    check(agree, "relay's closed lines", detail)
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v}"))
}

/// The run's size, for the reader of the verdict (not judged).
fn totals_lines(run: &Run) -> Vec<String> {
    let c = &run.counts;
    let mib = MIB as f64;
    let mut lines = vec![
        format!(
            "length: {:.1} min of load, {} samples",
            run.duration_s / 60.0,
            run.samples.len()
        ),
        format!(
            "connections made: {} (relay accepted {})",
            c.get("connections"),
            run.relay_accepted
                .map_or_else(|| "?".to_owned(), |a| a.to_string())
        ),
        format!(
            "bytes moved: {:.0} MiB sent, {:.0} MiB received by the clients{}",
            c.get("bytes_sent") as f64 / mib,
            c.get("bytes_received") as f64 / mib,
            run.relay_bytes
                .map(|b| format!("; relay: {:.0} MiB both ways", b / mib))
                .unwrap_or_default()
        ),
        format!(
            "reloads done: {}; multipart cycles: {}",
            run.reloads_sent,
            c.get("multipart_cycles")
        ),
    ];
    if let (Some(relay), Some(soak)) = (run.relay_cpu_s, run.soak_cpu_s) {
        lines.push(format!(
            "CPU: relay {relay:.0} s, the soak {soak:.0} s ({:.0} % and {:.0} % of one core)",
            relay / run.duration_s * 100.0,
            soak / run.duration_s * 100.0
        ));
    }
    let with_metric: Vec<&Sample> = run
        .samples
        .iter()
        .filter(|s| s.pipes_open.is_some())
        .collect();
    if !with_metric.is_empty() {
        let agree = with_metric
            .iter()
            .filter(|s| Some(s.pipe_fds) == s.pipes_open.map(|p| 2.0 * p))
            .count();
        lines.push(format!(
            "pipe fds = 2 x spliceway_pipes_open in {agree} of {} samples (not judged)",
            with_metric.len()
        ));
    }
    for (column, label) in [
        ("threads", "threads"),
        ("pipe_fds", "pipe fds"),
        ("tcp_mem_pages", "TCP mem pages (system-wide)"),
    ] {
        let (fit, _, _) = growth(&run.samples, column, run.duration_s);
        let values: Vec<f64> = run
            .samples
            .iter()
            .filter_map(|s| s.column(column))
            .collect();
        if let Some(fit) = fit
            && !values.is_empty()
        {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lines.push(format!(
                "{label}: {lo}..{hi}, slope {:+.2}/min (not judged)",
                fit.slope
            ));
        }
    }
    lines
}

/// The verdict as text: one PASS/FAIL line per check, then the totals.
pub(crate) fn format_verdict(checks: &[Check], run: &Run) -> String {
    let mut out = String::from("spliceway soak verdict\n\n");
    for c in checks {
        let _ = writeln!(
            out,
            "{}  {}: {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.title,
            c.detail
        );
    }
    out.push('\n');
    for line in totals_lines(run) {
        let _ = writeln!(out, "      {line}");
    }
    let passed = checks.iter().all(|c| c.ok);
    let _ = writeln!(out, "\nVERDICT: {}", if passed { "PASS" } else { "FAIL" });
    out
}
