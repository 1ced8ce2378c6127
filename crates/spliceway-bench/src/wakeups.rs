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

    /// A `cat` is woken once per line it is sent (it blocks reading its stdin in between).
    /// Not this test process: its sum over live threads drops when another test's thread
    /// ends (it once read 123 -> 122 in CI).
    #[test]
    fn a_process_woken_for_each_line_counts_up_and_a_gone_one_has_no_count() {
        use std::io::{BufRead, BufReader, Write};
        use std::process::{Command, Stdio};
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cat");
        let pid = cat.id() as i32;
        let mut input = cat.stdin.take().unwrap();
        let mut output = BufReader::new(cat.stdout.take().unwrap());
        let mut echoed = String::new();
        // The first line: cat has started and blocks in read from here on.
        input.write_all(b"start\n").unwrap();
        output.read_line(&mut echoed).unwrap();
        // Blocked in read: sleeping ("S" in /proc/PID/stat), bounded.
        let wait_blocked = || {
            for _ in 0..5_000 {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                if stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('S'))
                {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            panic!("cat never blocked");
        };
        wait_blocked();
        let before = voluntary_switches(pid).expect("cat's status");
        for i in 0..5 {
            // Each line finds cat blocked: it is woken once for it.
            wait_blocked();
            input.write_all(format!("line {i}\n").as_bytes()).unwrap();
            echoed.clear();
            output.read_line(&mut echoed).unwrap();
            assert_eq!(echoed, format!("line {i}\n"));
        }
        let after = voluntary_switches(pid).expect("cat's status");
        assert!(after >= before + 5, "{before} -> {after}");
        drop(input);
        cat.wait().unwrap();
        assert_eq!(voluntary_switches(pid), None, "reaped");
        assert_eq!(voluntary_switches(i32::MAX), None);
    }
}
