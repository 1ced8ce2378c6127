//! Per-thread CPU time.
//!
//! The relay under benchmark runs in this process, so `getrusage` would mix its CPU time with
//! the clients'. Each thread's own time is in `/proc/self/task/TID/schedstat` (first field:
//! nanoseconds on a CPU, user and system, including softirq work done in its context). The
//! relay's worker reports its own TID (`gettid`) before calling `run()`; [`find_thread`] looks
//! a thread up by name in `/proc/self/task/*/comm` for threads that cannot.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// CPU time thread `tid` of this process has used.
pub fn thread_cpu_time(tid: i32) -> io::Result<Duration> {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected schedstat {text:?}")))?;
    Ok(Duration::from_nanos(nanos))
}

/// The thread id of this process's thread named `name` (its `comm`), if there is exactly one.
pub fn find_thread(name: &str) -> io::Result<Option<i32>> {
    let mut found = None;
    for entry in fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() == name {
            if found.is_some() {
                return Err(io::Error::other(format!("two threads are named {name:?}")));
            }
            found = entry.file_name().to_str().and_then(|s| s.parse().ok());
        }
    }
    Ok(found)
}

/// Waits until a thread named `name` exists; returns its id.
pub fn wait_for_thread(name: &str, timeout: Duration) -> io::Result<i32> {
    let start = Instant::now();
    loop {
        if let Some(tid) = find_thread(name)? {
            return Ok(tid);
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no thread named {name:?} after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_accumulates_cpu_time() {
        let handle = std::thread::Builder::new()
            .name("swb-cpu-test".into())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(30) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                std::thread::sleep(Duration::from_millis(200));
                x
            })
            .unwrap();
        let tid = wait_for_thread("swb-cpu-test", Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let used = thread_cpu_time(tid).unwrap();
        // 30 ms of spinning; the machine may be shared, so only ask for part of it.
        assert!(used >= Duration::from_millis(1), "{used:?}");
        assert!(used < Duration::from_secs(5), "{used:?}");
        handle.join().unwrap();
    }
}
