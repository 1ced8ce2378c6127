//! Issue 24, finding 8: a SIGTERM during an upgrade stops the service. The old process passes
//! each SIGTERM/SIGINT it acts on to the process the upgrade started, whether the upgrade is
//! still under way or done and the old process drains; the new process counts signals passed
//! on by its predecessor apart from those sent to it directly, so one `systemctl stop`
//! (SIGTERM to every process of the unit) drains it rather than resetting its connections.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::upgrade::{addr, holder, new_pid, reap, relay_side_inode, serving_pid, upgrade};
use crate::util::{Daemon, WAIT, connect, hash_answer, pattern, read_answer, wait_until};

/// The test-only seam (`takeover.rs`): the process an upgrade starts waits this long before it
/// asks for the sockets, which holds the upgrade open while the test signals.
const HANDOFF_DELAY: &str = "SPLICEWAY_TEST_ONLY_HANDOFF_DELAY_MS";
const HALF: usize = 2 << 20;

/// Starts a relay with a control socket in a new directory, one route on `listen` to a hash
/// upstream, info logging; `delay_ms` is given to the processes its upgrades start.
fn start(listen: SocketAddr, delay_ms: Option<u64>) -> (tempfile::TempDir, PathBuf, Daemon) {
    let upstream = crate::util::shared_hash_server();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "control_socket = \"{}\"\nthreads = 2\ndrain_timeout = \"30s\"\nlog_level = \"info\"\n\n\
         [[route]]\nname = \"up\"\nlisten = [\"{listen}\"]\nupstream = \"{upstream}\"\n",
        dir.path().join("control.sock").display()
    );
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = crate::util::run_command(&path);
    if let Some(ms) = delay_ms {
        command.env(HANDOFF_DELAY, ms.to_string());
    }
    let daemon = Daemon::spawn(command, path.clone(), None);
    (dir, path, daemon)
}

/// A connection through `listen`, accepted by `pid` (a connection still in the backlog when a
/// drain closes the listeners would be reset, which is not what these tests are about), with
/// the first half of `data` sent; the upstream hashes it.
fn half_sent(listen: SocketAddr, data: &[u8], pid: i32, daemon: &Daemon) -> TcpStream {
    let mut client = connect(listen);
    let local = client.local_addr().unwrap();
    let accepted = wait_until(WAIT, || {
        relay_side_inode(listen, local).is_some_and(|inode| holder(&[pid], inode).is_some())
    });
    assert!(
        accepted,
        "pid {pid} did not accept {local}; log:\n{}",
        daemon.log_text()
    );
    if let Err(e) = client.write_all(&data[..HALF]) {
        panic!(
            "sending through pid {pid}: {e}; log:\n{}",
            daemon.log_text()
        );
    }
    client
}

/// Sends the rest of `data` and checks the upstream saw all of it, intact.
fn finish(mut client: TcpStream, data: &[u8], what: &str) {
    client.write_all(&data[HALF..]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_answer(&mut client), hash_answer(data), "{what}");
}

/// Whether `listen` refuses new connections (nothing serves it any more).
fn nothing_serves(listen: SocketAddr) -> bool {
    wait_until(WAIT, || TcpStream::connect_timeout(&listen, WAIT).is_err())
}

/// Whether `pid` has ended within `timeout`: reaped here (a process reparented to this one, its
/// subreaper), by its parent (gone from /proc), or a zombie its parent has yet to reap.
fn ended(pid: i32, timeout: std::time::Duration) -> bool {
    wait_until(timeout, || {
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // "PID (comm) STATE ...": the state follows the last parenthesis.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    })
}

/// The pid in the old process's `upgrade: started PATH as pid N` line.
fn started_pid(daemon: &Daemon) -> i32 {
    assert!(
        daemon.wait_for_log("upgrade: started", WAIT),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("upgrade: started"))
        .unwrap();
    line.rsplit_once("as pid ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap()
}

/// (a) SIGTERM to the old process while the new one has not yet taken over: the new process
/// gets it too (and dies of it, having no handler yet), the upgrade fails, the old process
/// drains its connection and exits, and nothing serves the address any more. Before the fix
/// the new process took the sockets after the old one had begun draining, and kept serving.
#[test]
fn a_sigterm_during_an_upgrade_stops_both_processes() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let listen = addr();
    let (_dir, path, mut old) = start(listen, Some(2000));
    let data = pattern(2 * HALF, 21);
    // Keeps the old process draining across the upgrade's window.
    let client = half_sent(listen, &data, old.child.id() as i32, &old);
    let upgrading = {
        let path = path.clone();
        thread::spawn(move || upgrade(&path))
    };
    let pid = started_pid(&old);
    old.signal(Signal::SIGTERM);
    let output = upgrading.join().unwrap();

    finish(client, &data, "the old process drains its connection");
    assert_eq!(
        old.wait_exit(WAIT).and_then(|s| s.code()),
        Some(0),
        "{}",
        old.log_text()
    );
    assert!(
        ended(pid, WAIT),
        "the process the upgrade started (pid {pid}) still runs; log:\n{}",
        old.log_text()
    );
    assert!(
        nothing_serves(listen),
        "something still accepts on {listen}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "the upgrade must fail: {}; log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        old.log_text()
    );
    let passed_on = format!("signal SIGTERM: passed on to pid {pid}, the upgraded relay");
    assert_eq!(old.count_log(&passed_on), 1, "{}", old.log_text());
    assert_eq!(
        old.count_log("upgrade failed, this process carries on"),
        1,
        "{}",
        old.log_text()
    );
}

/// (b) SIGTERM to the old process while it drains after a completed upgrade (what a
/// supervisor that signals only the pid it started does): the new process drains and exits
/// too, and the old one finishes its connection.
#[test]
fn a_sigterm_to_the_draining_old_process_stops_the_new_one() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let listen = addr();
    let (_dir, path, mut old) = start(listen, None);
    let data = pattern(2 * HALF, 22);
    let client = half_sent(listen, &data, old.child.id() as i32, &old);
    let pid = new_pid(&upgrade(&path));
    assert_eq!(
        serving_pid(listen, true, &[old.child.id() as i32, pid]),
        pid
    );

    old.signal(Signal::SIGTERM);
    assert!(
        ended(pid, WAIT),
        "the upgraded relay (pid {pid}) did not stop; log:\n{}",
        old.log_text()
    );
    finish(client, &data, "the old process drains its connection");
    assert_eq!(old.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    // Reparented to this process once the old one exited: it had drained and exited 0.
    assert_eq!(reap(pid, WAIT), Some(0));
    assert!(
        nothing_serves(listen),
        "something still accepts on {listen}"
    );
    let passed_on = format!("signal SIGTERM: passed on to pid {pid}, the upgraded relay");
    assert_eq!(old.count_log(&passed_on), 1, "{}", old.log_text());
}

/// In which order the two processes of an upgrade get their SIGTERM in (c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Back to back, as `systemctl stop` sends them. The new process may then hear only one:
    /// two SIGTERMs pending at once are one signal to the kernel.
    AtOnce,
    /// The new process first, and once it drains, the old one (which passes its on).
    NewFirst,
    /// The old process first, and once the new one drains on the signal passed on, the new one.
    OldFirst,
}

/// (c) SIGTERM to both processes, as `systemctl stop` (KillMode=control-group) does: the new
/// process gets one directly and one passed on, and drains — a connection it relays, with data
/// still flowing after the signals, ends intact — instead of taking the second as "reset
/// everything now". Before the fix the new process heard only the direct one (no test could
/// fail on the reset it would have caused); `NewFirst` and `OldFirst` make it hear both, in
/// each order.
fn both_signalled(order: Order) {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let listen = addr();
    let (_dir, path, mut old) = start(listen, None);
    let old_data = pattern(2 * HALF, 23);
    let on_old = half_sent(listen, &old_data, old.child.id() as i32, &old);
    let pid = new_pid(&upgrade(&path));
    assert_eq!(
        serving_pid(listen, true, &[old.child.id() as i32, pid]),
        pid
    );
    let new_data = pattern(2 * HALF, 24);
    let on_new = half_sent(listen, &new_data, pid, &old);

    let passed_on = format!("signal SIGTERM: passed on to pid {pid}, the upgraded relay");
    let new_directly = || kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    match order {
        Order::AtOnce => {
            old.signal(Signal::SIGTERM);
            new_directly();
        }
        Order::NewFirst => {
            new_directly();
            assert!(old.wait_for_log("signal SIGTERM: draining", WAIT));
            old.signal(Signal::SIGTERM);
        }
        Order::OldFirst => {
            old.signal(Signal::SIGTERM);
            assert!(old.wait_for_log("the relay this one replaced): draining", WAIT));
            new_directly();
        }
    }
    assert!(old.wait_for_log(&passed_on, WAIT), "{}", old.log_text());
    if order != Order::AtOnce {
        assert!(
            old.wait_for_log("already draining", WAIT),
            "the new process did not hear both signals; log:\n{}",
            old.log_text()
        );
    }

    finish(on_new, &new_data, "the new process drains, not resets");
    finish(on_old, &old_data, "the old process drains");
    assert_eq!(reap(pid, WAIT), Some(0), "{}", old.log_text());
    assert_eq!(old.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(
        old.count_log("resetting open connections"),
        0,
        "{}",
        old.log_text()
    );
    assert!(nothing_serves(listen));
}

#[test]
fn one_sigterm_to_every_process_drains_the_new_one() {
    both_signalled(Order::AtOnce);
}

#[test]
fn a_sigterm_passed_on_after_a_direct_one_does_not_reset() {
    both_signalled(Order::NewFirst);
}

#[test]
fn a_direct_sigterm_after_a_passed_on_one_does_not_reset() {
    both_signalled(Order::OldFirst);
}
