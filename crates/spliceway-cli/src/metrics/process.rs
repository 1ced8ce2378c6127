//! The process metrics every Prometheus client library exports, under their standard names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), and `spliceway_build_info`: read from
//! `/proc/self` at each scrape (issue 25), so that the usual dashboards and alerts (memory,
//! descriptors near the limit, restarts) work without a node exporter's process collector.
//!
//! The parsers take the files' text and are unit-tested; a file that cannot be read or parsed
//! leaves its metric out of that scrape rather than failing it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};

use super::family::{Family, Kind, Label};

/// What one scrape read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl Process {
    fn read() -> Process {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK);
        let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE);
        let stat = read("/proc/self/stat").and_then(|text| parse_stat(&text));
        let boot = read("/proc/stat").and_then(|text| parse_boot_time(&text));
        Process {
            cpu_seconds: stat
                .zip(ticks)
                .map(|(s, hz)| (s.utime + s.stime) as f64 / hz as f64),
            resident_bytes: read("/proc/self/statm")
                .and_then(|text| parse_statm_resident(&text))
                .zip(page)
                .map(|(pages, size)| pages * size),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|text| parse_max_open_files(&text)),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot)
                .map(|((s, hz), boot)| boot as f64 + s.start_ticks as f64 / hz as f64),
        }
    }
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<u64> {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// When the process started, after boot.
    start_ticks: u64,
}

/// Fields 14, 15 and 22 of proc_pid_stat(5). The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself: the fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (the state).
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// Resident pages: the second field of proc_pid_statm(5).
fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit of "Max open files" in proc_pid_limits(5) (none when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time in seconds since the epoch: `btime` in proc_stat(5).
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The process's CPU time.
const CPU_SECONDS: Family = Family {
    name: "process_cpu_seconds",
    help: "Total user and system CPU time spent in seconds.",
    kind: Kind::Counter,
    labels: &[],
};

/// Resident memory.
const RESIDENT_MEMORY: Family = Family {
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    kind: Kind::Gauge,
    labels: &[],
};

/// Descriptors open.
const OPEN_FDS: Family = Family {
    name: "process_open_fds",
    help: "Number of open file descriptors.",
    kind: Kind::Gauge,
    labels: &[],
};

/// The soft open-file limit.
const MAX_FDS: Family = Family {
    name: "process_max_fds",
    help: "Maximum number of open file descriptors.",
    kind: Kind::Gauge,
    labels: &[],
};

/// When the process started.
const START_TIME: Family = Family {
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
    kind: Kind::Gauge,
    labels: &[],
};

/// The version running.
const BUILD_INFO: Family = Family {
    name: "spliceway_build_info",
    help: "The version of spliceway running, in the label; always 1.",
    kind: Kind::Gauge,
    labels: &[Label {
        name: "version",
        values: &[],
    }],
};

/// The process's families, in the order a scrape shows them.
#[cfg(test)]
pub fn families() -> impl Iterator<Item = Family> {
    [
        CPU_SECONDS,
        RESIDENT_MEMORY,
        OPEN_FDS,
        MAX_FDS,
        START_TIME,
        BUILD_INFO,
    ]
    .into_iter()
}

/// Encodes the process metrics and `spliceway_build_info`.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let process = Process::read();
        if let Some(seconds) = process.cpu_seconds {
            CPU_SECONDS
                .describe(&mut encoder)?
                .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
        }
        let gauges = [
            (RESIDENT_MEMORY, process.resident_bytes),
            (OPEN_FDS, process.open_fds),
            (MAX_FDS, process.max_fds),
        ];
        for (family, value) in gauges {
            if let Some(value) = value {
                family.describe(&mut encoder)?.encode_gauge(&value)?;
            }
        }
        if let Some(seconds) = process.start_time_seconds {
            START_TIME.describe(&mut encoder)?.encode_gauge(&seconds)?;
        }
        BUILD_INFO
            .describe(&mut encoder)?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1u64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let text = "1439 (a (strange) name) R 1437 1437 3754 0 -1 4194304 99 0 0 0 12 34 0 0 20 \
                    0 1 0 245917 3133440 414 18446744073709551615 94016339079168\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 12,
                stime: 34,
                start_ticks: 245_917
            })
        );
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn statm_limits_and_boot_time_are_read() {
        assert_eq!(parse_statm_resident("765 438 410 5 0 123 0\n"), Some(438));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95585                95585                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1796611059\nprocesses 9\n"),
            Some(1_796_611_059)
        );
    }

    #[test]
    fn this_process_reads_plausibly() {
        let process = Process::read();
        assert!(process.cpu_seconds.is_some_and(|s| s >= 0.0), "{process:?}");
        assert!(
            process.resident_bytes.is_some_and(|b| b > 1 << 20),
            "{process:?}"
        );
        assert!(
            process
                .open_fds
                .zip(process.max_fds)
                .is_some_and(|(o, m)| o >= 3 && o <= m),
            "{process:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            process
                .start_time_seconds
                .is_some_and(|s| s <= now + 1.0 && s > now - 7.0 * 86_400.0 * 365.0),
            "{process:?}"
        );
    }
}
