//! CPU time from /proc: of a relay process and its children (`spliceway bench`, `--compare`),
//! and of one thread of this process (the microbenchmarks' in-process relay). The one place
//! the measurement stack reads CPU time.
//!
//! Of a thread: the first field of `/proc/self/task/TID/schedstat`, nanoseconds on a CPU, user
//! and system, including softirq work done in its context. The relay under a microbenchmark
//! runs in the benchmark's process, so `getrusage` would mix its CPU time with the clients'.
//!
//! Of a process: the sum over its live threads of `/proc/PID/task/TID/schedstat`'s first
//! field (nanoseconds on CPU, precise), plus `cutime + cstime` from `/proc/PID/stat` (clock
//! ticks of children it has reaped: socat's fork mode handles each connection in a child),
//! plus the same for each live child. Where schedstat is unavailable, `utime + stime` ticks
//! stand in for the thread sum. The bench reads this before and after each run and keeps the
//! difference.

use std::fs;
use std::io;
use std::time::Duration;

/// Attempts at a consistent reading before settling for the last one.
const CONSISTENT_READ_ATTEMPTS: usize = 10;

/// CPU time thread `tid` of this process has used (`gettid`'s number).
pub fn thread_cpu_time(tid: i32) -> io::Result<Duration> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = fs::read_to_string(&path)?;
    schedstat_ns(&text)
        .map(Duration::from_nanos)
        .ok_or_else(|| io::Error::other(format!("unexpected {path}: {text:?}")))
}

/// The first field of a schedstat file: nanoseconds on a CPU.
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time used so far by `pid`, its threads and its descendants (live or reaped).
pub fn process_tree_cpu(pid: i32) -> Option<Duration> {
    // A child reaped between reading the parent's cutime and scanning the children would be
    // counted in neither: read again until the parent's reaped-children times did not move.
    let mut total = None;
    for _ in 0..CONSISTENT_READ_ATTEMPTS {
        let before = Stat::read(pid)?;
        total = Some(tree_cpu_from(pid, before));
        let after = Stat::read(pid)?;
        if (after.cutime, after.cstime) == (before.cutime, before.cstime) {
            break;
        }
    }
    total
}

fn tree_cpu_from(pid: i32, stat: Stat) -> Duration {
    let tick_ns = 1_000_000_000 / clock_ticks_per_second();
    let own = threads_cpu_ns(pid)
        .filter(|&ns| ns > 0 || stat.utime + stat.stime == 0)
        .unwrap_or((stat.utime + stat.stime) * tick_ns);
    let reaped = (stat.cutime + stat.cstime) * tick_ns;
    let live_children: u64 = children_of(pid)
        .into_iter()
        .filter_map(process_tree_cpu)
        .map(|d| d.as_nanos() as u64)
        .sum();
    Duration::from_nanos(own + reaped + live_children)
}

/// The fields of /proc/PID/stat used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        Stat::parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parses a stat line. The command name (field 2) may hold spaces and parentheses, so
    /// fields are counted from the last ')'.
    fn parse(line: &str) -> Option<Stat> {
        let rest = &line[line.rfind(')')? + 1..];
        // rest: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17)
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            ppid: fields.get(1)?.parse().ok()?,
            utime: field(14)?,
            stime: field(15)?,
            cutime: field(16)?,
            cstime: field(17)?,
        })
    }
}

/// Sum of the first schedstat field over the live threads, or None if unreadable.
fn threads_cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread has just exited
        };
        total += schedstat_ns(&text)?;
    }
    Some(total)
}

/// Live children of `pid` (a scan of /proc: /proc/PID/task/TID/children needs
/// CONFIG_PROC_CHILDREN, which not every kernel has).
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| Stat::read(child).is_some_and(|s| s.ppid == pid))
        .collect()
}

fn clock_ticks_per_second() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 \
                    100 1000 200 18446744073709551615";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                ppid: 1,
                utime: 7,
                stime: 3,
                cutime: 11,
                cstime: 13
            }
        );
        assert!(Stat::parse("garbage").is_none());
    }

    #[test]
    fn a_busy_child_accumulates_cpu() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let before = process_tree_cpu(pid).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let after = process_tree_cpu(pid).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            after >= before + Duration::from_millis(50),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn a_busy_thread_accumulates_cpu_time() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let _ = done_rx.recv();
            x
        });
        let tid = tid_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let used = thread_cpu_time(tid).unwrap();
        // 30 ms of spinning; the machine may be shared, so only ask for part of it.
        assert!(used >= Duration::from_millis(1), "{used:?}");
        assert!(used < Duration::from_secs(5), "{used:?}");
        done_tx.send(()).unwrap();
        handle.join().unwrap();
        assert_eq!(schedstat_ns("123 45 6\n"), Some(123));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn a_missing_process_has_no_cpu() {
        assert!(process_tree_cpu(i32::MAX).is_none());
    }
}
