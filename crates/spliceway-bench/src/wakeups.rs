//! Wake-ups of a relay: the voluntary context switches of its threads and its live children's
//! (`voluntary_ctxt_switches` in `/proc/PID/task/TID/status`). A thread switches voluntarily
//! each time it blocks (epoll_wait, a futex, a sleep) and is woken again, so the count over a
//! transfer says how often the relay was woken to move it: what a rate limit's timers cost,
//! beside the CPU time `cpu` reads. The bench reads it before and after an upload.

use std::fs;

/// Voluntary context switches so far of `pid`'s live threads and of its live descendants'
/// (an nginx master's workers), or `None` when `pid` is gone. Threads that exited are not
/// counted (their counts go to the process's rusage, which /proc does not show per thread),
/// which matters little: a relay's worker threads live as long as it does.
pub(crate) fn voluntary_switches(pid: i32) -> Option<u64> {
    voluntary_switches_bounded(pid, MAX_DEPTH)
}

/// How deep the process tree is followed: a wrapper, the relay, its workers.
const MAX_DEPTH: u32 = 4;

fn voluntary_switches_bounded(pid: i32, depth: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread has just exited
        };
        total += status_field(&text, "voluntary_ctxt_switches").unwrap_or(0);
    }
    if depth > 0 {
        total += crate::cpu::children_of(pid)
            .into_iter()
            .filter_map(|child| voluntary_switches_bounded(child, depth - 1))
            .sum::<u64>();
    }
    Some(total)
}

/// The number after `NAME:` in a /proc status file.
fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_voluntary_count_not_the_involuntary_one() {
        let status = "Name:\tspliceway\nState:\tS (sleeping)\n\
                      voluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(1234));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches"), Some(56));
        assert_eq!(status_field(status, "missing"), None);
    }

    #[test]
    fn this_process_has_woken_and_a_gone_one_has_no_count() {
        let pid = std::process::id() as i32;
        let before = voluntary_switches(pid).expect("this process's status");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let after = voluntary_switches(pid).expect("this process's status");
        assert!(after > before, "{before} -> {after}");
        assert_eq!(voluntary_switches(i32::MAX), None);
    }
}
