//! `--s3` results: per-run figures, medians per path and direction, the table and the JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::report::{Host, mb_per_s, median, min_max};
use crate::s3::setup::S3Setup;
use crate::s3::transfer::Transfer;

const GIB: f64 = (1u64 << 30) as f64;

/// Above this many cores of the bench's own CPU at the measured rate, the client may be what
/// limits the path, and the report says so.
const CLIENT_CORES_WARNING: f64 = 0.5;

/// One timed transfer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunFigures {
    pub(crate) run: u32,
    pub(crate) seconds: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    /// The bench process's user + system CPU seconds over the transfer (TLS included).
    pub(crate) client_cpu_seconds: f64,
    pub(crate) integrity: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl RunFigures {
    pub(crate) fn from(
        run: u32,
        size: usize,
        outcome: anyhow::Result<Transfer>,
        client_cpu_seconds: f64,
    ) -> RunFigures {
        match outcome {
            Ok(t) => {
                let seconds = t
                    .finished
                    .saturating_duration_since(t.started)
                    .as_secs_f64();
                RunFigures {
                    run,
                    seconds: Some(seconds),
                    mb_per_s: Some(mb_per_s(size as u64, seconds)),
                    client_cpu_seconds,
                    integrity: t.intact,
                    error: t.mismatch.map(|m| format!("integrity: {m}")),
                }
            }
            Err(error) => RunFigures {
                run,
                seconds: None,
                mb_per_s: None,
                client_cpu_seconds,
                integrity: false,
                error: Some(format!("{error:#}")),
            },
        }
    }

    pub(crate) fn describe(&self, runs: u32, path: &str, direction: &str) -> String {
        let mut line = format!("run {}/{runs} {path} {direction}:", self.run);
        if let (Some(s), Some(m)) = (self.seconds, self.mb_per_s) {
            line += &format!(" {s:.3} s, {m:.1} MB/s");
        }
        line += &format!(", bench CPU {:.3} s", self.client_cpu_seconds);
        line += if self.integrity {
            ", integrity ok"
        } else {
            ", integrity FAILED"
        };
        if let Some(e) = &self.error {
            line += &format!(": {e}");
        }
        line
    }
}

/// One path in one direction: medians over its runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) path: String,
    pub(crate) direction: &'static str,
    /// The relay's address (`--via`), None for direct.
    pub(crate) via: Option<String>,
    pub(crate) seconds: Option<f64>,
    pub(crate) seconds_min: Option<f64>,
    pub(crate) seconds_max: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    /// Median CPU seconds of the bench process per GiB moved.
    pub(crate) client_cpu_seconds_per_gib: Option<f64>,
    /// Median CPU seconds over median seconds: the cores the bench kept busy.
    pub(crate) client_cores: Option<f64>,
    pub(crate) relative_to_direct: Option<f64>,
    /// Every run completed and everything S3 answered matched the data.
    pub(crate) integrity: bool,
    pub(crate) runs: Vec<RunFigures>,
}

impl Row {
    pub(crate) fn new(path: &str, direction: &'static str, via: Option<String>) -> Row {
        Row {
            path: path.to_owned(),
            direction,
            via,
            seconds: None,
            seconds_min: None,
            seconds_max: None,
            mb_per_s: None,
            client_cpu_seconds_per_gib: None,
            client_cores: None,
            relative_to_direct: None,
            integrity: false,
            runs: Vec::new(),
        }
    }

    fn summarise(&mut self, size: usize) {
        let done: Vec<&RunFigures> = self.runs.iter().filter(|r| r.seconds.is_some()).collect();
        self.seconds = median(done.iter().filter_map(|r| r.seconds).collect());
        (self.seconds_min, self.seconds_max) = min_max(done.iter().filter_map(|r| r.seconds));
        self.mb_per_s = self.seconds.map(|s| mb_per_s(size as u64, s));
        let gib = size as f64 / GIB;
        let cpu = median(done.iter().map(|r| r.client_cpu_seconds).collect());
        self.client_cpu_seconds_per_gib = cpu.filter(|_| gib > 0.0).map(|c| c / gib);
        self.client_cores = match (cpu, self.seconds) {
            (Some(c), Some(s)) if s > 0.0 => Some(c / s),
            _ => None,
        };
        self.integrity = !self.runs.is_empty() && self.runs.iter().all(|r| r.integrity);
    }
}

/// The `--s3` report: what was measured where, and the rows.
#[derive(Debug, Serialize)]
pub(crate) struct S3Report {
    pub(crate) workload: &'static str,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) endpoint: String,
    pub(crate) region: String,
    /// What the endpoint's name resolved to from where the bench ran (on an EC2 instance with
    /// a gateway endpoint: S3's addresses through the VPC endpoint).
    pub(crate) endpoint_resolved: Vec<String>,
    pub(crate) credentials: String,
    pub(crate) direction: &'static str,
    pub(crate) size_bytes: u64,
    pub(crate) runs_per_path: u32,
    pub(crate) streams: u32,
    pub(crate) part_size_bytes: u64,
    pub(crate) multipart: bool,
    pub(crate) timing: &'static str,
    pub(crate) hostname: String,
    pub(crate) host: Host,
    pub(crate) unix_time: u64,
    pub(crate) warnings: Vec<String>,
    pub(crate) results: Vec<Row>,
}

impl S3Report {
    pub(crate) fn new(setup: &S3Setup, mut rows: Vec<Row>) -> S3Report {
        for row in &mut rows {
            row.summarise(setup.size);
        }
        let directs: Vec<(&'static str, Option<f64>)> = rows
            .iter()
            .filter(|r| r.path == "direct")
            .map(|r| (r.direction, r.seconds))
            .collect();
        for row in &mut rows {
            if let Some((_, Some(direct))) = directs.iter().find(|d| d.0 == row.direction)
                && let Some(s) = row.seconds
                && *direct > 0.0
            {
                row.relative_to_direct = Some(s / direct);
            }
        }
        let warnings = rows
            .iter()
            .filter_map(|r| {
                r.client_cores.filter(|c| *c > CLIENT_CORES_WARNING).map(|c| {
                    format!(
                        "the bench itself used {c:.2} cores on {} {} (over {CLIENT_CORES_WARNING}): \
                         this host's CPU may be what limits that path, not the network",
                        r.path, r.direction
                    )
                })
            })
            .collect();
        S3Report {
            workload: "s3",
            bucket: setup.bucket.name().to_owned(),
            prefix: setup.prefix.clone(),
            endpoint: setup.endpoint.to_string(),
            region: setup.region.clone(),
            endpoint_resolved: setup.resolved.iter().map(|a| a.ip().to_string()).collect(),
            credentials: setup.credentials_from.clone(),
            direction: match setup.direction {
                crate::args::S3Direction::Up => "up",
                crate::args::S3Direction::Down => "down",
                crate::args::S3Direction::Both => "both",
            },
            size_bytes: setup.size as u64,
            runs_per_path: setup.runs,
            streams: setup.streams,
            part_size_bytes: setup.part_bytes as u64,
            multipart: setup.size > setup.part_bytes,
            timing: "up: from the first request to S3's answer to the last (PUT, or \
                     CompleteMultipartUpload); down: from the first GET to the last byte",
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            host: Host::current(),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            warnings,
            results: rows,
        }
    }

    /// The rows with a failed run: `path direction`.
    pub(crate) fn failed_rows(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| !r.integrity)
            .map(|r| format!("{} {}", r.path, r.direction))
            .collect()
    }

    pub(crate) fn table(&self) -> String {
        let mut out = format!(
            "S3 bench: {} to s3://{}/{} at {} ({}), {} runs per path, {}\n\
             ran on {} ({} CPUs); the endpoint's name resolved to {}; credentials: {}\n",
            bytesize::ByteSize(self.size_bytes).display().iec(),
            self.bucket,
            self.prefix,
            self.endpoint,
            self.region,
            self.runs_per_path,
            if self.multipart {
                format!(
                    "multipart: {} connections, {} parts",
                    self.streams,
                    bytesize::ByteSize(self.part_size_bytes).display().iec()
                )
            } else {
                "single PUT/GET".to_owned()
            },
            self.hostname,
            self.host.cpus,
            self.endpoint_resolved.join(", "),
            self.credentials,
        );
        out += &format!(
            "{:<14} {:<4} {:>9} {:>17} {:>9} {:>9} {:>15} {:>10}  {}\n",
            "path",
            "dir",
            "median s",
            "min-max s",
            "MB/s",
            "vs direct",
            "bench CPU s/GiB",
            "bench cores",
            "integrity"
        );
        let num =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        for r in &self.results {
            let spread = match (r.seconds_min, r.seconds_max) {
                (Some(a), Some(b)) => format!("{a:.3}-{b:.3}"),
                _ => "-".to_owned(),
            };
            out += &format!(
                "{:<14} {:<4} {:>9} {:>17} {:>9} {:>9} {:>15} {:>10}  {}\n",
                r.path,
                r.direction,
                num(r.seconds, 3),
                spread,
                num(r.mb_per_s, 1),
                num(r.relative_to_direct, 2),
                num(r.client_cpu_seconds_per_gib, 3),
                num(r.client_cores, 2),
                if r.integrity { "ok" } else { "FAILED" }
            );
        }
        for r in &self.results {
            if let Some(via) = &r.via
                && r.direction == "up"
            {
                out += &format!("{}: through {via}\n", r.path);
            }
        }
        for warning in &self.warnings {
            out += &format!("warning: {warning}\n");
        }
        out
    }
}
