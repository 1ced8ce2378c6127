//! Once a second, the relay's state: RSS, descriptors (all, pipes, metrics connections, and
//! those neither an open connection nor a pipe explains), threads, the kernel's TCP memory, and
//! pipes and active connections from /metrics; into samples.csv and the verdict.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procfs::KernelMemory;

use super::relay::{metric_sum, scrape};
use super::stop::Stop;

/// One row of samples.csv (blank columns are None).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    pub(crate) rss_kib: f64,
    pub(crate) fds: f64,
    pub(crate) pipe_fds: f64,
    pub(crate) pipes_open: Option<f64>,
    pub(crate) threads: f64,
    pub(crate) tcp_mem_pages: f64,
    pub(crate) tcp_inuse: f64,
    pub(crate) tcp_tw: f64,
    pub(crate) conns_active: Option<f64>,
    pub(crate) metrics_fds: f64,
    pub(crate) other_fds: Option<f64>,
}

pub(crate) const COLUMNS: [&str; 12] = [
    "t_s",
    "rss_kib",
    "fds",
    "pipe_fds",
    "pipes_open",
    "threads",
    "tcp_mem_pages",
    "tcp_inuse",
    "tcp_tw",
    "conns_active",
    "metrics_fds",
    "other_fds",
];

impl Sample {
    /// A column by its name in samples.csv; None when blank.
    pub(crate) fn column(&self, name: &str) -> Option<f64> {
        match name {
            "t_s" => Some(self.t_s),
            "rss_kib" => Some(self.rss_kib),
            "fds" => Some(self.fds),
            "pipe_fds" => Some(self.pipe_fds),
            "pipes_open" => self.pipes_open,
            "threads" => Some(self.threads),
            "tcp_mem_pages" => Some(self.tcp_mem_pages),
            "tcp_inuse" => Some(self.tcp_inuse),
            "tcp_tw" => Some(self.tcp_tw),
            "conns_active" => self.conns_active,
            "metrics_fds" => Some(self.metrics_fds),
            "other_fds" => self.other_fds,
            _ => None,
        }
    }

    fn csv_row(&self) -> String {
        COLUMNS
            .iter()
            .map(|c| match self.column(c) {
                Some(v) if *c == "t_s" => format!("{v:.2}"),
                Some(v) => format!("{v}"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The ports whose connections the census tells apart.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    /// The metrics listener: connections accepted on it are the metrics server's.
    pub(crate) metrics: u16,
    /// The relay's listeners and its upstreams: sockets accepted on the one or connected to
    /// the other are relayed connections.
    pub(crate) listen: Vec<u16>,
    pub(crate) upstream: Vec<u16>,
}

/// Socket inodes of the metrics server's connections and of relayed connections
/// (/proc/net/tcp{,6}; local port in hex, state other than LISTEN).
fn connection_inodes(watched: &Watched) -> (HashSet<String>, HashSet<String>) {
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let (mut metrics, mut relayed) = (HashSet::new(), HashSet::new());
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() <= 9 || fields[3] == "0A" {
                continue;
            }
            let (local, remote) = (port_of(fields[1]), port_of(fields[2]));
            if local == Some(watched.metrics) {
                metrics.insert(fields[9].to_owned());
            } else if local.is_some_and(|p| watched.listen.contains(&p))
                || remote.is_some_and(|p| watched.upstream.contains(&p))
            {
                relayed.insert(fields[9].to_owned());
            }
        }
    }
    (metrics, relayed)
}

/// The relay's descriptors: how many, how many pipes, how many connections of the metrics
/// port, and how many are none of these nor a relayed connection's socket (`other_fds`:
/// listeners, epoll, eventfds, files; constant under any load, so a leaked socket of a closed
/// connection shows there). A socket counts as a connection's if the kernel listed it just
/// before or just after the descriptors were read (connections come and go every moment).
fn fd_census(pid: i32, watched: &Watched) -> std::io::Result<(usize, usize, usize, usize)> {
    let (mut metrics, mut relayed) = connection_inodes(watched);
    let dir = format!("/proc/{pid}/fd");
    let mut targets = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let target = fs::read_link(Path::new(&dir).join(name))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default(); // closed between the listing and the readlink
        targets.push(target);
    }
    let (after_metrics, after_relayed) = connection_inodes(watched);
    metrics.extend(after_metrics);
    relayed.extend(after_relayed);
    let inode = |t: &str| {
        t.strip_prefix("socket:[")?
            .strip_suffix(']')
            .map(str::to_owned)
    };
    let (mut pipes, mut metrics_fds, mut connection_fds) = (0, 0, 0);
    for target in &targets {
        if target.starts_with("pipe:") {
            pipes += 1;
        } else if let Some(inode) = inode(target) {
            if metrics.contains(&inode) {
                metrics_fds += 1;
            } else if relayed.contains(&inode) {
                connection_fds += 1;
            }
        }
    }
    let fds = targets.len();
    Ok((
        fds,
        pipes,
        metrics_fds,
        fds - pipes - metrics_fds - connection_fds,
    ))
}

/// VmRSS (KiB) and Threads from /proc/PID/status.
fn status_of(pid: i32) -> std::io::Result<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((field("VmRSS:"), field("Threads:")))
}

/// One sample of the relay `pid`.
pub(crate) fn read_sample(pid: i32, watched: &Watched, t0: Instant) -> std::io::Result<Sample> {
    let t_s = t0.elapsed().as_secs_f64();
    let (rss_kib, threads) = status_of(pid)?;
    let (fds, pipes, metrics_fds, other_fds) = fd_census(pid, watched)?;
    let kernel = KernelMemory::read().unwrap_or_default();
    let values = scrape(watched.metrics, Duration::from_secs(2));
    Ok(Sample {
        t_s,
        rss_kib,
        fds: fds as f64,
        pipe_fds: pipes as f64,
        pipes_open: metric_sum(values.as_ref(), "spliceway_pipes_open"),
        threads,
        tcp_mem_pages: kernel.tcp_mem_pages as f64,
        tcp_inuse: kernel.tcp_inuse as f64,
        tcp_tw: kernel.tcp_tw as f64,
        conns_active: metric_sum(values.as_ref(), "spliceway_connections_active"),
        metrics_fds: metrics_fds as f64,
        other_fds: Some(other_fds as f64),
    })
}

/// Once a second until stopped or the relay is gone: a row into samples.csv (flushed) and
/// into `samples`.
pub(crate) fn sample_loop(
    pid: i32,
    watched: &Watched,
    t0: Instant,
    csv: &Path,
    samples: &Arc<Mutex<Vec<Sample>>>,
    stop: &Stop,
) -> std::io::Result<()> {
    let mut file = fs::File::create(csv)?;
    writeln!(file, "{}", COLUMNS.join(","))?;
    let mut next_at = Instant::now();
    while !stop.is_set() {
        let Ok(sample) = read_sample(pid, watched, t0) else {
            break; // the relay went away
        };
        writeln!(file, "{}", sample.csv_row())?;
        file.flush()?;
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
        next_at += Duration::from_secs(1);
        stop.wait(next_at.saturating_duration_since(Instant::now()));
    }
    Ok(())
}
