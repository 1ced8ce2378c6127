//! Results: per-run figures, medians per path, the text table and the JSON object.

use serde::Serialize;

use crate::latency::Percentiles;

/// Bytes in a GiB, for CPU seconds per GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// The origin's hand measurement (docs: CONTEXT.md): a 512 MB upload over a 115.94 Mbit/s
/// home uplink, with stone on a t2.micro as the relay.
pub(crate) const ORIGIN_DIRECT_SECONDS: f64 = 24.382;
pub(crate) const ORIGIN_VPC_SECONDS: f64 = 16.407;
pub(crate) const ORIGIN_RELAY_SECONDS: f64 = 46.320;
pub(crate) const ORIGIN_UPLINK_MBIT: f64 = 115.94;

/// One run: an upload, or one run of request/response exchanges (rtt, connect).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RunResult {
    /// 1-based run number.
    pub(crate) run: u32,
    pub(crate) seconds: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    pub(crate) relay_cpu_seconds: Option<f64>,
    pub(crate) bytes_received: Option<u64>,
    pub(crate) integrity: bool,
    /// With `--part-size`: the sink's answers, and how many did not match the part sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts: Option<PartCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Request workloads: round trips or connections completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) requests: Option<u64>,
    /// Request workloads: requests per second over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) per_second: Option<f64>,
    /// Request workloads: `p50_us`, `p99_us`, `p999_us`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) latency: Option<Percentiles>,
    /// Request workloads: the relay's CPU time divided by the requests, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) relay_cpu_us_per_request: Option<f64>,
}

impl RunResult {
    /// A run that did not complete: its error, and the relay's CPU time if it was measured.
    pub(crate) fn failed(run: u32, error: &anyhow::Error, relay_cpu_seconds: Option<f64>) -> Self {
        RunResult {
            run,
            relay_cpu_seconds,
            error: Some(format!("{error:#}")),
            ..RunResult::default()
        }
    }
}

/// The part answers of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PartCounts {
    pub(crate) answered: u64,
    pub(crate) failed: u64,
}

/// One path: medians over its runs.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PathResult {
    pub(crate) path: String,
    /// Median seconds over the runs that completed.
    pub(crate) seconds: Option<f64>,
    /// The fastest and the slowest completed run, in seconds. A median of three hides how far
    /// runs wander: two identical `bench --size 64MiB` runs on loopback gave relay-splice 2.26x
    /// and 1.08x of direct, so the table shows the spread beside the median.
    pub(crate) seconds_min: Option<f64>,
    pub(crate) seconds_max: Option<f64>,
    /// Decimal megabytes (10^6 bytes) per second at the median.
    pub(crate) mb_per_s: Option<f64>,
    /// Median user+system CPU seconds of the relay process per run; null without one.
    pub(crate) relay_cpu_seconds: Option<f64>,
    pub(crate) relay_cpu_seconds_per_gib: Option<f64>,
    /// The cheapest and the dearest run's relay CPU seconds per GiB.
    pub(crate) relay_cpu_seconds_per_gib_min: Option<f64>,
    pub(crate) relay_cpu_seconds_per_gib_max: Option<f64>,
    /// Median seconds divided by the direct path's.
    pub(crate) relative_to_direct: Option<f64>,
    /// The smallest and largest ratio of one run to the direct path's run of the same number.
    /// Runs are interleaved across paths (direct 1, splice 1, copy 1, direct 2, ...), so run k
    /// of every path met the same moment of the machine: pairing by run number shows what a
    /// single comparison could have said, where a ratio of medians cannot.
    pub(crate) relative_to_direct_min: Option<f64>,
    pub(crate) relative_to_direct_max: Option<f64>,
    /// Every run's sink hash equalled the sender's.
    pub(crate) integrity: bool,
    /// The relay's command line, for relays the bench started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) command: Option<String>,
    /// The origin's figure for the same kind of path (emulated topology only). Kept for JSON
    /// readers; it is another test (512 MB by hand, stone on a t2.micro), so the table shows
    /// the origin's rows once, below this run's, instead of beside every row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin_seconds: Option<f64>,
    /// Request workloads: medians over the runs of each run's percentile, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p999_us: Option<f64>,
    /// Request workloads: this path's median p50 minus the direct path's (what the relay adds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) added_p50_us: Option<f64>,
    /// Request workloads: median requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) per_second: Option<f64>,
    /// Request workloads: median relay CPU µs per round trip or per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) relay_cpu_us_per_request: Option<f64>,
    pub(crate) runs: Vec<RunResult>,
}

/// Link settings of the emulated topology.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Links {
    pub(crate) internet_mbit: f64,
    pub(crate) vpc_mbit: f64,
    /// `--tbf-burst` as chosen, and the bucket it gave each kind of link.
    pub(crate) tbf_burst: String,
    pub(crate) internet_burst_bytes: u64,
    pub(crate) vpc_burst_bytes: u64,
    pub(crate) tbf_latency: &'static str,
    /// `--nic`: what the veth ends do (offloads), as the heading states it.
    pub(crate) nic: &'static str,
    pub(crate) nic_settings: &'static str,
}

impl Links {
    /// The heading line that states the emulation's settings.
    fn heading(&self) -> String {
        format!(
            "links: internet {} Mbit/s, VPC {} Mbit/s; tbf burst {} B / {} B, {}, latency {}; \
             nic {}: {}\n",
            self.internet_mbit,
            self.vpc_mbit,
            self.internet_burst_bytes,
            self.vpc_burst_bytes,
            self.tbf_burst,
            self.tbf_latency,
            self.nic,
            self.nic_settings
        )
    }
}

/// A row of the origin's measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OriginRow {
    pub(crate) path: &'static str,
    pub(crate) seconds: f64,
    pub(crate) relative_to_direct: f64,
}

/// The origin's measurement, printed beside emulated results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Origin {
    pub(crate) note: &'static str,
    pub(crate) uplink_mbit: f64,
    pub(crate) rows: Vec<OriginRow>,
}

impl Origin {
    pub(crate) fn new() -> Origin {
        let row = |path, seconds: f64| OriginRow {
            path,
            seconds,
            relative_to_direct: seconds / ORIGIN_DIRECT_SECONDS,
        };
        Origin {
            note: "512 MB upload measured by hand; the relay was stone on an EC2 t2.micro",
            uplink_mbit: ORIGIN_UPLINK_MBIT,
            rows: vec![
                row("direct", ORIGIN_DIRECT_SECONDS),
                row("vpc", ORIGIN_VPC_SECONDS),
                row("relay (stone)", ORIGIN_RELAY_SECONDS),
            ],
        }
    }
}

/// This machine.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Host {
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
}

impl Host {
    pub(crate) fn current() -> Host {
        Host {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Everything `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// `--workload`: upload, rtt or connect.
    pub(crate) workload: &'static str,
    /// Request workloads: round trips or connections per run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) requests_per_run: Option<u64>,
    /// Request workloads: bytes of each request and of each answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message_size_bytes: Option<u64>,
    /// The connect workload: connections open at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) concurrency: Option<u32>,
    pub(crate) size_bytes: u64,
    pub(crate) topology: &'static str,
    pub(crate) runs_per_path: u32,
    /// Concurrent connections per upload (`--streams`).
    pub(crate) streams: u32,
    /// `--part-size`; null for continuous uploads.
    pub(crate) part_size_bytes: Option<u64>,
    /// What `seconds` measures.
    pub(crate) timing: &'static str,
    /// `--relay-cpu`, the fraction of one core each relay may use.
    pub(crate) relay_cpu_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) links: Option<Links>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) via: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin: Option<Origin>,
    pub(crate) host: Host,
    /// Seconds since 1970 when the bench finished.
    pub(crate) unix_time: u64,
    pub(crate) results: Vec<PathResult>,
}

impl PathResult {
    /// Medians over `runs`; `relative_to_direct` is filled in by [`Report::relate`].
    pub(crate) fn from_runs(path: &str, size_bytes: u64, runs: Vec<RunResult>) -> PathResult {
        let seconds = median(runs.iter().filter_map(|r| r.seconds).collect());
        let relay_cpu_seconds = median(runs.iter().filter_map(|r| r.relay_cpu_seconds).collect());
        let per_gib = |c: f64| c * GIB / size_bytes as f64;
        let (seconds_min, seconds_max) = min_max(runs.iter().filter_map(|r| r.seconds));
        let (cpu_min, cpu_max) =
            min_max(runs.iter().filter_map(|r| r.relay_cpu_seconds).map(per_gib));
        PathResult {
            path: path.to_owned(),
            seconds,
            seconds_min,
            seconds_max,
            mb_per_s: seconds.map(|s| mb_per_s(size_bytes, s)),
            relay_cpu_seconds,
            relay_cpu_seconds_per_gib: relay_cpu_seconds.map(per_gib),
            relay_cpu_seconds_per_gib_min: cpu_min,
            relay_cpu_seconds_per_gib_max: cpu_max,
            relative_to_direct: None,
            integrity: !runs.is_empty() && runs.iter().all(|r| r.integrity),
            runs,
            ..PathResult::default()
        }
    }

    /// Medians over the runs of a request workload (rtt, connect).
    pub(crate) fn from_request_runs(path: &str, runs: Vec<RunResult>) -> PathResult {
        let median_of =
            |f: fn(&RunResult) -> Option<f64>| median(runs.iter().filter_map(f).collect());
        let (seconds_min, seconds_max) = min_max(runs.iter().filter_map(|r| r.seconds));
        PathResult {
            path: path.to_owned(),
            seconds: median_of(|r| r.seconds),
            seconds_min,
            seconds_max,
            relay_cpu_seconds: median_of(|r| r.relay_cpu_seconds),
            p50_us: median_of(|r| r.latency.map(|l| l.p50_us)),
            p99_us: median_of(|r| r.latency.map(|l| l.p99_us)),
            p999_us: median_of(|r| r.latency.map(|l| l.p999_us)),
            per_second: median_of(|r| r.per_second),
            relay_cpu_us_per_request: median_of(|r| r.relay_cpu_us_per_request),
            integrity: !runs.is_empty() && runs.iter().all(|r| r.integrity),
            runs,
            ..PathResult::default()
        }
    }
}

impl Report {
    /// Fills `relative_to_direct` from the `direct` row.
    pub(crate) fn relate(&mut self) {
        let direct = self
            .results
            .iter()
            .find(|r| r.path == "direct")
            .and_then(|r| r.seconds);
        let direct_p50 = self
            .results
            .iter()
            .find(|r| r.path == "direct")
            .and_then(|r| r.p50_us);
        // Run number -> the direct path's seconds in that run.
        let direct_runs: Vec<(u32, f64)> = self
            .results
            .iter()
            .find(|r| r.path == "direct")
            .map(|r| {
                r.runs
                    .iter()
                    .filter_map(|run| Some((run.run, run.seconds?)))
                    .collect()
            })
            .unwrap_or_default();
        for result in &mut self.results {
            result.relative_to_direct = match (result.seconds, direct) {
                (Some(s), Some(d)) if d > 0.0 => Some(s / d),
                _ => None,
            };
            let ratios = result.runs.iter().filter_map(|run| {
                let seconds = run.seconds?;
                let (_, d) = direct_runs.iter().find(|(n, _)| *n == run.run)?;
                (*d > 0.0).then(|| seconds / d)
            });
            (result.relative_to_direct_min, result.relative_to_direct_max) = min_max(ratios);
            result.added_p50_us = match (result.p50_us, direct_p50) {
                (Some(p), Some(d)) if result.path != "direct" => Some(p - d),
                _ => None,
            };
        }
    }

    /// Paths whose integrity check failed.
    pub(crate) fn failed_paths(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|r| !r.integrity)
            .map(|r| r.path.as_str())
            .collect()
    }

    /// "10 streams, 8 MiB parts ...", for the heading.
    fn upload_shape(&self) -> String {
        let streams = match self.streams {
            1 => "1 connection".to_owned(),
            n => format!("{n} concurrent connections"),
        };
        match self.part_size_bytes {
            Some(p) => format!(
                "{streams} taking {} parts from one queue, each answered before the next",
                bytesize::ByteSize(p).display().iec()
            ),
            None => format!("{streams}, one continuous share each"),
        }
    }

    /// The human-readable table, with a heading line.
    pub(crate) fn table(&self) -> String {
        if self.requests_per_run.is_some() {
            return self.requests_table();
        }
        // With one run per path there is no spread to show: the columns would repeat the median.
        let spread = self.runs_per_path > 1;
        let headers = upload_columns(spread);
        let mut rows: Vec<Vec<String>> = Vec::new();
        for r in &self.results {
            let mut row = vec![r.path.clone(), fmt(r.seconds, 3)];
            if spread {
                row.push(fmt_range(r.seconds_min, r.seconds_max, 3, ""));
            }
            row.extend([
                fmt(r.mb_per_s, 1),
                fmt(r.relay_cpu_seconds, 3),
                fmt(r.relay_cpu_seconds_per_gib, 3),
            ]);
            if spread {
                row.push(fmt_range(
                    r.relay_cpu_seconds_per_gib_min,
                    r.relay_cpu_seconds_per_gib_max,
                    3,
                    "",
                ));
            }
            row.push(
                r.relative_to_direct
                    .map_or("-".into(), |x| format!("{x:.2}x")),
            );
            if spread {
                row.push(if r.path == "direct" {
                    "-".into()
                } else {
                    fmt_range(r.relative_to_direct_min, r.relative_to_direct_max, 2, "x")
                });
            }
            row.push(if r.integrity { "ok" } else { "FAILED" }.into());
            rows.push(row);
        }
        let mut out = format!(
            "spliceway bench: {}, {} topology, {} run(s) per path, medians; seconds = {}\n",
            bytesize::ByteSize(self.size_bytes).display().iec(),
            self.topology,
            self.runs_per_path,
            self.timing
        );
        if self.streams != 1 || self.part_size_bytes.is_some() {
            out += &format!("upload: {}\n", self.upload_shape());
        }
        if let Some(links) = &self.links {
            out += &links.heading();
        }
        if let Some(limit) = self.relay_cpu_limit {
            out += &format!("relay CPU capped at {limit} of one core\n");
        }
        out += &render(&headers, &rows);
        if spread {
            out += "min..max: the fastest and slowest run; vs min..max pairs each run with the \
                    direct run of the same number (runs are interleaved)\n";
        }
        if self.topology == "loopback" {
            out += "note: on loopback every path shares this machine's CPUs and memory, so times \
                    and ratios swing from run to run; the relay's CPU s/GiB is the figure that \
                    means something\n";
        }
        if let Some(origin) = &self.origin {
            out += &origin.table();
        }
        out
    }
}

impl Origin {
    /// The origin's rows, once, headed as the other test they are: beside this run's rows they
    /// read as the same test (a 512 MB row beside 64 MiB ones, stone's 1.90x on relay-copy too).
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                vec![
                    row.path.to_owned(),
                    format!("{:.3}", row.seconds),
                    format!("{:.2}x", row.relative_to_direct),
                ]
            })
            .collect();
        let mut out = format!(
            "origin, another test (not this run): {} ({} Mbit/s uplink)\n",
            self.note, self.uplink_mbit
        );
        for line in render(&["origin path", "seconds", "vs direct"], &rows).lines() {
            out += &format!("  {line}\n");
        }
        out
    }
}

impl Report {
    /// The table of a request workload: latency, rate and relay CPU per request.
    fn requests_table(&self) -> String {
        let per = if self.workload == "rtt" {
            "round trip"
        } else {
            "connection"
        };
        let headers = [
            "path",
            "p50 us",
            "p99 us",
            "p999 us",
            "added p50 us",
            "per second",
            "relay CPU us each",
            "integrity",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.path.clone(),
                    fmt(r.p50_us, 1),
                    fmt(r.p99_us, 1),
                    fmt(r.p999_us, 1),
                    r.added_p50_us.map_or("-".into(), |a| format!("{a:+.1}")),
                    fmt(r.per_second, 0),
                    fmt(r.relay_cpu_us_per_request, 1),
                    if r.integrity { "ok" } else { "FAILED" }.into(),
                ]
            })
            .collect();
        let mut out = format!(
            "spliceway bench --workload {}: {} {per}s of {} B per run, {}{} topology, {} run(s) \
             per path, medians; latency = {}\n",
            self.workload,
            self.requests_per_run.unwrap_or(0),
            self.message_size_bytes.unwrap_or(0),
            self.concurrency
                .map_or(String::new(), |c| format!("{c} at a time, ")),
            self.topology,
            self.runs_per_path,
            self.timing,
        );
        if let Some(links) = &self.links {
            out += &links.heading();
        }
        if let Some(limit) = self.relay_cpu_limit {
            out += &format!("relay CPU capped at {limit} of one core\n");
        }
        out + &render(&headers, &rows)
    }
}

/// Median of some numbers (mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The smallest and largest of some numbers; `(None, None)` for none.
pub(crate) fn min_max(values: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>) {
    values.fold((None, None), |(lo, hi), v| {
        (
            Some(lo.map_or(v, |l: f64| l.min(v))),
            Some(hi.map_or(v, |h: f64| h.max(v))),
        )
    })
}

/// Decimal megabytes per second.
pub(crate) fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    }
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// `lo..hi` with a unit after each (ASCII: the table aligns by bytes).
fn fmt_range(lo: Option<f64>, hi: Option<f64>, decimals: usize, unit: &str) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo:.decimals$}{unit}..{hi:.decimals$}{unit}"),
        _ => "-".into(),
    }
}

/// Aligns columns: the first left, the others right.
fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                s += &format!("{cell:<w$}");
            } else {
                s += &format!("  {cell:>w$}");
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The columns of an upload table, with the spread columns when there was more than one run
/// (the run's own table and `--plot-from --markdown` print the same columns).
pub(crate) fn upload_columns(spread: bool) -> Vec<&'static str> {
    let mut columns = vec!["path", "seconds"];
    if spread {
        columns.push("s min..max");
    }
    columns.extend(["MB/s", "relay CPU s", "CPU s/GiB"]);
    if spread {
        columns.push("CPU min..max");
    }
    columns.push("vs direct");
    if spread {
        columns.push("vs min..max");
    }
    columns.push("integrity");
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u32, seconds: Option<f64>, cpu: Option<f64>, ok: bool) -> RunResult {
        RunResult {
            run: n,
            seconds,
            relay_cpu_seconds: cpu,
            integrity: ok,
            parts: None,
            ..RunResult::default()
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn path_result_and_relation() {
        const SIZE: u64 = 1 << 30;
        let direct = PathResult::from_runs(
            "direct",
            SIZE,
            vec![run(1, Some(2.0), None, true), run(2, Some(1.0), None, true)],
        );
        assert_eq!(direct.seconds, Some(1.5));
        assert_eq!(direct.relay_cpu_seconds, None);
        let relay = PathResult::from_runs(
            "relay-copy",
            SIZE,
            vec![
                run(1, Some(3.0), Some(0.5), true),
                run(2, None, Some(0.7), false),
            ],
        );
        assert!(!relay.integrity);
        assert_eq!(relay.relay_cpu_seconds_per_gib, Some(0.6));
        let mut report = Report {
            workload: "upload",
            requests_per_run: None,
            message_size_bytes: None,
            concurrency: None,
            size_bytes: SIZE,
            topology: "loopback",
            runs_per_path: 2,
            streams: 10,
            part_size_bytes: Some(8 << 20),
            timing: "test",
            relay_cpu_limit: None,
            links: None,
            target: None,
            via: None,
            origin: Some(Origin::new()),
            host: Host::current(),
            unix_time: 0,
            results: vec![direct, relay],
        };
        report.relate();
        assert_eq!(report.results[1].relative_to_direct, Some(2.0));
        assert_eq!(report.failed_paths(), ["relay-copy"]);
        let table = report.table();
        assert!(table.contains("relay-copy"), "{table}");
        assert!(table.contains("FAILED"), "{table}");
        assert!(
            table.contains("10 concurrent connections taking 8.0 MiB parts"),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["results"][0]["relay_cpu_seconds"],
            serde_json::Value::Null
        );
        assert_eq!(json["results"][1]["runs"][1]["integrity"], false);
        assert_eq!(json["streams"], 10);
        assert_eq!(json["part_size_bytes"], 8 << 20);
        // The failed run has no seconds: the spread is the one completed run's.
        assert_eq!(json["results"][1]["seconds_min"], 3.0);
        assert_eq!(json["results"][1]["seconds_max"], 3.0);
        assert_eq!(json["results"][1]["relative_to_direct_min"], 1.5);
        assert_eq!(json["results"][1]["relay_cpu_seconds_per_gib_min"], 0.5);
        assert_eq!(json["results"][1]["relay_cpu_seconds_per_gib_max"], 0.7);
    }

    fn report_of(topology: &'static str, results: Vec<PathResult>) -> Report {
        let runs = results.iter().map(|r| r.runs.len()).max().unwrap_or(0) as u32;
        let mut report = Report {
            workload: "upload",
            requests_per_run: None,
            message_size_bytes: None,
            concurrency: None,
            size_bytes: 1 << 30,
            topology,
            runs_per_path: runs,
            streams: 1,
            part_size_bytes: None,
            timing: "test",
            relay_cpu_limit: None,
            links: None,
            target: None,
            via: None,
            origin: (topology == "emulated").then(Origin::new),
            host: Host::current(),
            unix_time: 0,
            results,
        };
        report.relate();
        report
    }

    #[test]
    fn spread_beside_the_median_pairs_runs_by_number() {
        const SIZE: u64 = 1 << 30;
        let direct = PathResult::from_runs(
            "direct",
            SIZE,
            vec![
                run(1, Some(2.0), None, true),
                run(2, Some(1.0), None, true),
                run(3, Some(4.0), None, true),
            ],
        );
        // Run by run: 3/2 = 1.5x, 2.5/1 = 2.5x, 2/4 = 0.5x. The medians' ratio is 2.5/2 = 1.25x.
        let splice = PathResult::from_runs(
            "relay-splice",
            SIZE,
            vec![
                run(1, Some(3.0), Some(0.2), true),
                run(2, Some(2.5), Some(0.4), true),
                run(3, Some(2.0), Some(0.3), true),
            ],
        );
        let report = report_of("loopback", vec![direct, splice]);
        let row = &report.results[1];
        assert_eq!(row.seconds, Some(2.5));
        assert_eq!((row.seconds_min, row.seconds_max), (Some(2.0), Some(3.0)));
        assert_eq!(row.relative_to_direct, Some(1.25));
        assert_eq!(
            (row.relative_to_direct_min, row.relative_to_direct_max),
            (Some(0.5), Some(2.5))
        );
        assert_eq!(
            (
                row.relay_cpu_seconds_per_gib_min,
                row.relay_cpu_seconds_per_gib_max
            ),
            (Some(0.2), Some(0.4))
        );
        let table = report.table();
        for needle in [
            "s min..max",
            "2.000..3.000",
            "0.200..0.400",
            "0.50x..2.50x",
            "the relay's CPU s/GiB is the figure that means something",
        ] {
            assert!(table.contains(needle), "{needle:?} in\n{table}");
        }
        // The direct row's own ratios are all 1: no range shown for it.
        let direct_line = table.lines().find(|l| l.starts_with("direct")).unwrap();
        assert!(
            direct_line.ends_with("1.00x             -         ok"),
            "{table}"
        );
        // The JSON keeps every earlier key and adds the spread.
        let json = serde_json::to_value(&report).unwrap();
        let row = &json["results"][1];
        for key in [
            "seconds",
            "mb_per_s",
            "relay_cpu_seconds",
            "relay_cpu_seconds_per_gib",
            "relative_to_direct",
            "integrity",
            "runs",
        ] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
        assert_eq!(row["relative_to_direct_max"], 2.5);
        assert_eq!(row["seconds_min"], 2.0);
    }

    #[test]
    fn one_run_shows_no_spread_columns() {
        let direct = PathResult::from_runs("direct", 1 << 30, vec![run(1, Some(1.0), None, true)]);
        let table = report_of("loopback", vec![direct]).table();
        assert!(!table.contains("min..max"), "{table}");
    }

    #[test]
    fn the_origin_is_shown_once_as_another_test() {
        let rows = ["direct", "vpc", "relay-splice", "relay-copy"]
            .map(|path| PathResult::from_runs(path, 64 << 20, vec![run(1, Some(5.0), None, true)]));
        let mut report = report_of("emulated", rows.to_vec());
        for row in &mut report.results {
            row.origin_seconds = Some(ORIGIN_RELAY_SECONDS);
        }
        let table = report.table();
        // Stone's 46.320 s (1.90x) appears once, in the origin's own rows, not on every relay row.
        assert_eq!(table.matches("46.320").count(), 1, "{table}");
        assert_eq!(table.matches("1.90x").count(), 1, "{table}");
        assert!(
            table.contains("origin, another test (not this run)"),
            "{table}"
        );
        assert!(!table.contains("origin s"), "{table}");
        assert!(!table.contains("note: on loopback"), "{table}");
        let origin_line = table.lines().find(|l| l.contains("relay (stone)")).unwrap();
        assert!(
            origin_line.starts_with("  "),
            "indented under its heading: {table}"
        );
        // JSON readers keep origin_seconds and the origin object.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["results"][3]["origin_seconds"], ORIGIN_RELAY_SECONDS);
        assert_eq!(json["origin"]["rows"][2]["seconds"], ORIGIN_RELAY_SECONDS);
    }
}
