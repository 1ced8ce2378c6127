//! `spliceway upgrade`: the running relay starts its binary again, hands over its listening
//! sockets, and drains. Under load nothing is refused or reset; a new process that fails
//! leaves the old one serving; the control socket hears only root and the relay's own user.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::util::{
    Daemon, WAIT, config_file, drop_to_nobody, free_port, hash_answer, hash_server, pattern,
    scrape, spliceway,
};

/// A configuration with a control socket in `dir`, one route on a fixed port, metrics on.
pub(crate) fn config(
    dir: &Path,
    listen: SocketAddr,
    metrics: SocketAddr,
    upstream: SocketAddr,
) -> String {
    format!(
        "control_socket = \"{}\"\nmetrics = \"{metrics}\"\nthreads = 2\ndrain_timeout = \"60s\"\n\
         log_level = \"notice\"\n\n[[route]]\nname = \"up\"\nlisten = [\"{listen}\"]\n\
         upstream = \"{upstream}\"\n",
        dir.join("control.sock").display()
    )
}

pub(crate) fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Runs `spliceway upgrade --config FILE`.
pub(crate) fn upgrade(config: &Path) -> Output {
    spliceway()
        .arg("upgrade")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The pid in `spliceway upgrade`'s `pid N` line.
pub(crate) fn new_pid(output: &Output) -> i32 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "upgrade failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid line in {stdout:?}"))
}

/// The socket inode of the relay's end of the connection from `client` to `listen`
/// (/proc/net/tcp shows addresses as hex, in host byte order for IPv4).
pub(crate) fn relay_side_inode(listen: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let (local, remote) = (hex(listen), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Which of `pids` holds the socket with `inode`.
pub(crate) fn holder(pids: &[i32], inode: u64) -> Option<i32> {
    let needle = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
            dir.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == needle))
        })
    })
}

/// Opens a connection to `listen` and returns the pid among `pids` that accepted it.
pub(crate) fn serving_pid(listen: SocketAddr, upstream_check: bool, pids: &[i32]) -> i32 {
    let mut stream = TcpStream::connect_timeout(&listen, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let client = stream.local_addr().unwrap();
    let data = pattern(4096, 3);
    stream.write_all(&data).unwrap();
    let mut found = None;
    let _ = crate::util::wait_until(WAIT, || {
        found = relay_side_inode(listen, client).and_then(|inode| holder(pids, inode));
        found.is_some()
    });
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    if upstream_check {
        assert_eq!(answer.trim(), hash_answer(&data));
    }
    found.unwrap_or_else(|| panic!("no process among {pids:?} holds the connection"))
}

/// Waits for `pid` (a grandchild reparented to this process, its subreaper) to exit; returns
/// its exit code.
pub(crate) fn reap(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(..)) => return Some(-1),
            // Not ours yet (its parent still runs), or not exited.
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    other_errors: AtomicU64,
    hashes_ok: AtomicU64,
    hashes_bad: AtomicU64,
    /// Longest time from connect to the upstream's answer of a short upload, in microseconds.
    longest_us: AtomicU64,
    times_us: Mutex<Vec<u64>>,
}

impl Tally {
    fn record(&self, result: std::io::Result<bool>) {
        match result {
            Ok(true) => self.hashes_ok.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.hashes_bad.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.refused.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.reset.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                eprintln!("client error: {e}");
                self.other_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Uploads `data` through `addr`, `pace` between chunks; whether the upstream's hash matches.
pub(crate) fn upload(
    addr: SocketAddr,
    data: &[u8],
    chunk: usize,
    pace: Duration,
) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    for part in data.chunks(chunk) {
        stream.write_all(part)?;
        if !pace.is_zero() {
            thread::sleep(pace);
        }
    }
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim() == hash_answer(data))
}

/// Three upgrades in a row while a client opens a connection every 5 ms (256 KiB each) and
/// ten 64 MiB uploads are in flight: nothing refused or reset, every hash intact, each old
/// process exits 0 once its connections finish, and each upgrade moves new connections to a
/// new pid.
#[test]
fn three_upgrades_under_load_lose_nothing() {
    // Processes an upgrade starts are children of the old process; when it exits they become
    // this process's, so that their exit status can be read.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), listen, metrics, upstream);
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, &text).unwrap();
    let command = crate::util::run_command(&path);
    let mut first = Daemon::spawn(command, path.clone(), None);
    let first_pid = first.child.id() as i32;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let long: Vec<_> = (0..10u8)
        .map(|i| {
            let tally = Arc::clone(&tally);
            thread::spawn(move || {
                let data = pattern(64 << 20, 100 + i);
                // 256 chunks of 256 KiB, 30 ms apart: about 8 s, through all three upgrades.
                tally.record(upload(listen, &data, 256 << 10, Duration::from_millis(30)));
            })
        })
        .collect();
    let short_data = Arc::new(pattern(256 << 10, 5));
    let load = {
        let (tally, stop, data) = (
            Arc::clone(&tally),
            Arc::clone(&stop),
            Arc::clone(&short_data),
        );
        thread::spawn(move || {
            let mut clients = Vec::new();
            let started = Instant::now();
            // Bounded: at most 30 s of clients.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                let (tally, data) = (Arc::clone(&tally), Arc::clone(&data));
                tally.attempted.fetch_add(1, Ordering::Relaxed);
                clients.push(thread::spawn(move || {
                    let began = Instant::now();
                    let result = upload(listen, &data, 64 << 10, Duration::ZERO);
                    let took = began.elapsed().as_micros() as u64;
                    tally.longest_us.fetch_max(took, Ordering::Relaxed);
                    tally.times_us.lock().unwrap().push(took);
                    tally.record(result);
                }));
                thread::sleep(Duration::from_millis(5));
            }
            for client in clients {
                client.join().unwrap();
            }
        })
    };

    thread::sleep(Duration::from_millis(800));
    let mut pids = vec![first_pid];
    for round in 1..=3 {
        let output = upgrade(&path);
        let pid = new_pid(&output);
        assert!(!pids.contains(&pid), "round {round}: pid {pid} again");
        pids.push(pid);
        // New connections go to the new process.
        assert_eq!(serving_pid(listen, true, &pids), pid, "round {round}");
        thread::sleep(Duration::from_millis(1500));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    for upload in long {
        upload.join().unwrap();
    }

    // The first process exits 0 once its long uploads are done; the next two as soon as their
    // short ones are.
    let status = first
        .wait_exit(Duration::from_secs(30))
        .expect("first exits");
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    for &pid in &pids[1..3] {
        assert_eq!(reap(pid, Duration::from_secs(30)), Some(0), "pid {pid}");
    }
    // The last one serves, metrics included (handed over each time).
    let last = pids[3];
    assert!(scrape(metrics).contains("spliceway_connections_accepted_total"));
    kill(Pid::from_raw(last), Signal::SIGTERM).unwrap();
    assert_eq!(reap(last, Duration::from_secs(30)), Some(0));

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut times = tally.times_us.lock().unwrap().clone();
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    eprintln!(
        "upgrade under load: {} short connections attempted (+10 long), {} refused, {} reset, \
         {} other errors, {} hashes checked ({} bad); short upload median {} ms, longest {} ms",
        get(&tally.attempted),
        get(&tally.refused),
        get(&tally.reset),
        get(&tally.other_errors),
        get(&tally.hashes_ok) + get(&tally.hashes_bad),
        get(&tally.hashes_bad),
        median / 1000,
        get(&tally.longest_us) / 1000
    );
    assert_eq!(get(&tally.refused), 0);
    assert_eq!(get(&tally.reset), 0);
    assert_eq!(get(&tally.other_errors), 0);
    assert_eq!(get(&tally.hashes_bad), 0);
    assert_eq!(get(&tally.hashes_ok), get(&tally.attempted) + 10);
    assert!(get(&tally.attempted) > 100, "the load ran");
}

/// A new process that fails (a configuration made invalid, then a binary replaced by one that
/// exits 1) leaves the old one serving: `spliceway upgrade` exits 1 with the reason, an
/// upload in flight completes, new ones are served.
#[test]
fn failed_upgrades_leave_the_old_relay_serving() {
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    // A copy of the binary, started from where the test can replace it.
    let binary = dir.path().join("spliceway");
    // Written by other processes: a descriptor open for writing in this one could be inherited
    // by a child another test forks meanwhile, and exec would then fail with ETXTBSY.
    let copied = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg(&binary)
        .status()
        .unwrap();
    assert!(copied.success());
    let text = config(dir.path(), listen, metrics, upstream);
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, &text).unwrap();
    let mut command = Command::new(&binary);
    command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET");
    let mut daemon = Daemon::spawn(command, path.clone(), None);

    let in_flight = thread::spawn(move || {
        let data = pattern(8 << 20, 1);
        upload(listen, &data, 256 << 10, Duration::from_millis(40))
    });
    let data = pattern(256 << 10, 2);

    // 1. The file made invalid: the new process exits 78 before taking anything.
    std::fs::write(&path, format!("{text}bogus_key = 1\n")).unwrap();
    let output = upgrade(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status 78"), "{stderr}");
    assert!(upload(listen, &data, 64 << 10, Duration::ZERO).unwrap());

    // 2. The binary replaced by one that exits 1.
    std::fs::write(&path, &text).unwrap();
    let script = dir.path().join("fake");
    let written = Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\nexit 1\\n' > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&script)
        .status()
        .unwrap();
    assert!(written.success());
    std::fs::rename(&script, &binary).unwrap();
    let output = upgrade(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status 1"), "{stderr}");
    assert!(upload(listen, &data, 64 << 10, Duration::ZERO).unwrap());

    assert!(
        in_flight.join().unwrap().unwrap(),
        "the upload in flight completed"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the old relay still runs"
    );
    assert!(scrape(metrics).contains("spliceway_connections_accepted_total"));
    assert_eq!(
        daemon.count_log("upgrade failed, this process carries on"),
        2
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

/// The control socket is mode 0600 and, after a privilege drop, the relay user's; a peer of
/// another uid (let in by loosening the mode) is refused by `SO_PEERCRED`, logged, and the
/// relay carries on.
#[test]
fn control_socket_refuses_other_users() {
    let Some(nobody) = drop_to_nobody("runs a client as another user") else {
        return;
    };
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let text = config(dir.path(), listen, metrics, upstream);

    // Owned by the user after the drop.
    let (_d, dropped) = config_file(&format!("{nobody}{text}"));
    let command = crate::util::run_command(&dropped);
    let daemon = Daemon::spawn(command, dropped, None);
    let meta = std::fs::metadata(&socket).unwrap();
    let nobody_uid = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        nobody_uid.as_raw()
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(daemon);
    std::fs::remove_file(&socket).unwrap();

    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, &text).unwrap();
    let command = crate::util::run_command(&path);
    let daemon = Daemon::spawn(command, path, None);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg("upgrade")
        .arg("--control-socket")
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        daemon.wait_for_log("refused a connection from uid 12345", WAIT),
        "{}",
        daemon.log_text()
    );
    let data = pattern(256 << 10, 4);
    assert!(upload(listen, &data, 64 << 10, Duration::ZERO).unwrap());
    assert_eq!(daemon.count_log("upgrade asked"), 0);
}

/// Under systemd (`NOTIFY_SOCKET`), the new process says it is the main process now.
#[test]
fn new_process_tells_systemd_it_is_the_main_process() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let receive = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, config(dir.path(), listen, metrics, upstream)).unwrap();
    let mut command = crate::util::run_command(&path);
    command.env("NOTIFY_SOCKET", &notify_path);
    let mut first = Daemon::spawn(command, path.clone(), None);
    assert_eq!(receive().trim(), "READY=1");
    let pid = new_pid(&upgrade(&path));
    let message = receive();
    assert_eq!(message.trim(), format!("MAINPID={pid}\nREADY=1"));
    // The old process drains without telling systemd the service stops.
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        notify.recv(&mut buf).is_err(),
        "no STOPPING=1 from the old process"
    );
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, WAIT), Some(0));
}

/// `spliceway relay --control-socket PATH` upgrades the same way.
#[test]
fn relay_command_upgrades_through_its_control_socket() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let listen = addr();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut command = spliceway();
    command
        .arg("relay")
        .arg(listen.to_string())
        .arg(upstream.to_string())
        .arg("--control-socket")
        .arg(&socket);
    let mut first = Daemon::launch(command, dir.path().join("none"), None);
    assert!(first.wait_for_log("relaying", WAIT), "{}", first.log_text());
    let data = pattern(1 << 20, 8);
    assert!(upload(listen, &data, 64 << 10, Duration::ZERO).unwrap());
    let output = spliceway()
        .arg("upgrade")
        .arg("--control-socket")
        .arg(&socket)
        .output()
        .unwrap();
    let pid = new_pid(&output);
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(serving_pid(listen, true, &[pid]), pid);
    assert!(upload(listen, &data, 64 << 10, Duration::ZERO).unwrap());
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, WAIT), Some(0));
}

/// Finding 6: after an upgrade, half the health checks got 503, because the old process kept
/// accepting on the shared metrics socket while it drained and answered `/readyz` with
/// `draining`. Now the old process stops accepting there once the new one is ready: every
/// `/readyz` polled after `spliceway upgrade` returns is answered 200 by the new process,
/// while the old one still drains a connection.
#[test]
fn after_an_upgrade_every_readyz_is_answered_by_the_new_process() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, config(dir.path(), listen, metrics, upstream)).unwrap();
    let command = crate::util::run_command(&path);
    let mut first = Daemon::spawn(command, path.clone(), None);
    // A connection the old process drains after the upgrade: it keeps that process alive.
    let data = pattern(1 << 20, 9);
    let mut held = TcpStream::connect_timeout(&listen, WAIT).unwrap();
    held.set_read_timeout(Some(WAIT)).unwrap();
    held.write_all(&data[..4096]).unwrap();
    assert_eq!(
        crate::util::http_get(metrics, "/readyz", WAIT).unwrap().0,
        200
    );

    let pid = new_pid(&upgrade(&path));
    let mut answers = Vec::new();
    for _ in 0..60 {
        let answer = crate::util::http_get(metrics, "/readyz", crate::util::HEALTH_BOUND);
        answers.push(answer.map(|(code, body)| format!("{code} {}", body.trim())));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the old process still drains"
    );
    let bad: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok(text) if text == "200 ready"))
        .collect();
    assert!(bad.is_empty(), "{} of 60 not 200: {bad:?}", bad.len());

    held.write_all(&data[4096..]).unwrap();
    held.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.trim(), hash_answer(&data));
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, WAIT), Some(0));
}

/// `spliceway relay --metrics ADDR --control-socket PATH` hands its metrics socket over too:
/// the new process serves it (it could not bind the address the old one still held).
#[test]
fn relay_command_hands_its_metrics_socket_over() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let (listen, metrics) = (addr(), addr());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut command = spliceway();
    command
        .arg("relay")
        .arg(listen.to_string())
        .arg(upstream.to_string())
        .arg("--metrics")
        .arg(metrics.to_string())
        .arg("--control-socket")
        .arg(&socket);
    let mut first = Daemon::launch(command, dir.path().join("none"), None);
    assert!(first.wait_for_log("relaying", WAIT), "{}", first.log_text());
    assert_eq!(
        crate::util::http_get(metrics, "/readyz", WAIT).unwrap().0,
        200
    );
    let output = spliceway()
        .arg("upgrade")
        .arg("--control-socket")
        .arg(&socket)
        .output()
        .unwrap();
    let pid = new_pid(&output);
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(
        crate::util::http_get(metrics, "/readyz", WAIT).unwrap(),
        (200, "ready\n".to_string())
    );
    assert!(scrape(metrics).contains("spliceway_connections_accepted_total"));
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, WAIT), Some(0));
}
