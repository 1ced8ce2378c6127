//! `spliceway upgrade` with a UDP route: its socket is handed to the new process (never
//! unbound), so a client that sends all through the upgrade is never told the port is closed
//! (ICMP port unreachable: `ECONNREFUSED` on its connected socket); the new process serves new
//! clients; the old one keeps its sessions until they idle out, then exits 0. `spliceway
//! status` shows the route's open sessions.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::upgrade::{holder, new_pid, reap, upgrade};
use crate::util::{Daemon, WAIT, free_port, hash_answer};

/// Longest wait for one answer: a datagram not answered within it counts as lost.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A UDP upstream that answers each datagram with the length and SHA-256 of its payload
/// (`hash_answer`) and the address
/// it came from (the relay's session socket, so the test can tell which process relayed it).
fn hashing_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        // Ends with the test process.
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let answer = format!("{} {from}", hash_answer(&buf[..n]));
            let _ = socket.send_to(answer.as_bytes(), from);
        }
    });
    addr
}

fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "control_socket = \"{}\"\ndrain_timeout = \"30s\"\nlog_level = \"notice\"\n\n\
         [[route]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = [\"{listen}\"]\n\
         upstream = \"{upstream}\"\nudp_idle_timeout = \"1s\"\n",
        dir.join("control.sock").display()
    )
}

/// What one request's answer said.
enum Answer {
    /// The hash matched; the relay's session socket that carried it.
    Hashed(SocketAddr),
    /// The hash did not match.
    Wrong,
    /// Nothing within [`ANSWER_WAIT`].
    Lost,
    /// `ECONNREFUSED`: the port was closed (ICMP port unreachable).
    Refused,
}

/// Sends `payload` on the connected `socket` and reads its answer (skipping late answers to
/// earlier requests, which carry another hash).
fn request(socket: &UdpSocket, payload: &[u8]) -> Answer {
    let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
    match socket.send(payload) {
        Err(e) if refused(&e) => return Answer::Refused,
        Err(e) => panic!("send: {e}"),
        Ok(_) => {}
    }
    let expected = hash_answer(payload);
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 512];
    // Bounded: each turn waits at most what is left of ANSWER_WAIT, and at most 64 turns.
    for _ in 0..64 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Lost;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let Some((hash, via)) = text.rsplit_once(' ') else {
                    return Answer::Wrong;
                };
                if hash == expected {
                    return via.parse().map_or(Answer::Wrong, Answer::Hashed);
                }
                // A late answer to an earlier request: keep waiting for this one's.
            }
            Err(e) if refused(&e) => return Answer::Refused,
            Err(_) => return Answer::Lost,
        }
    }
    Answer::Lost
}

/// Which of `pids` holds the UDP socket bound to `local` and connected to `remote`
/// (/proc/net/udp shows addresses as hex, in host byte order for IPv4).
fn udp_holder(pids: &[i32], local: SocketAddr, remote: SocketAddr) -> Option<i32> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let inode: u64 = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })?;
    holder(pids, inode)
}

/// What the client that sends through the upgrade saw.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
}

#[test]
fn an_upgrade_hands_the_udp_socket_over_and_no_datagram_is_refused() {
    // The new process is the old one's child; when the old one exits it becomes this
    // process's, so that its exit status can be read.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream = hashing_echo();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spliceway.toml");
    std::fs::write(&path, config(dir.path(), listen, upstream)).unwrap();
    let command = crate::util::run_command(&path);
    let mut first = Daemon::spawn(command, path.clone(), None);
    let first_pid = first.child.id() as i32;

    // One client sends a request and waits for its answer, again and again, through the
    // upgrade: at most 3,000 requests, at most 60 s.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(listen).unwrap();
            let started = Instant::now();
            for seq in 0..3000u32 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let payload = format!("request {seq}").repeat(1 + seq as usize % 40);
                let counter = match request(&socket, payload.as_bytes()) {
                    Answer::Hashed(_) => &tally.answered,
                    Answer::Wrong => &tally.wrong,
                    Answer::Lost => &tally.lost,
                    Answer::Refused => &tally.refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let answered_before = || tally.answered.load(Ordering::Relaxed);
    assert!(
        crate::util::wait_until(WAIT, || answered_before() >= 20),
        "the client is answered before the upgrade: {}",
        first.log_text()
    );

    let before_upgrade = answered_before();
    let output = upgrade(&path);
    let pid = new_pid(&output);
    let pids = [first_pid, pid];
    let at_upgrade = answered_before();
    // Requests answered while `spliceway upgrade` ran: the sockets changed hands meanwhile.
    let during = at_upgrade - before_upgrade;
    // A new client is served by the new process (its session socket is the new one's).
    let newcomer = UdpSocket::bind("127.0.0.1:0").unwrap();
    newcomer.connect(listen).unwrap();
    let Answer::Hashed(via) = request(&newcomer, b"a new client") else {
        panic!("the new client got no answer");
    };
    assert_eq!(udp_holder(&pids, via, upstream), Some(pid));
    // The new process says it serves the route's session.
    let status = status_json(&dir.path().join("control.sock"));
    let route = &status["routes"][0];
    assert_eq!(route["protocol"], "udp", "{status}");
    assert!(route["sessions_open"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["pid"], pid, "{status}");
    // The client goes on through the new process for a while.
    assert!(
        crate::util::wait_until(WAIT, || answered_before() >= at_upgrade + 200),
        "answered {} after the upgrade",
        answered_before() - at_upgrade
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // The old process's sessions idle out (udp_idle_timeout 1 s): it exits 0.
    let status = first
        .wait_exit(Duration::from_secs(30))
        .expect("the old process exits");
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    assert_eq!(first.count_log("read by the new process now"), 1);
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, Duration::from_secs(30)), Some(0));

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "UDP through an upgrade: {} answered ({} before it, {} while it ran), {} lost, {} \
         refused, {} wrong",
        get(&tally.answered),
        before_upgrade,
        during,
        get(&tally.lost),
        get(&tally.refused),
        get(&tally.wrong)
    );
    assert!(during > 0, "the client sent while the upgrade ran");
    assert_eq!(get(&tally.refused), 0, "no ICMP port unreachable");
    assert_eq!(get(&tally.wrong), 0);
    // One request is in flight at a time: at most the one sent as the sockets changed hands.
    assert!(get(&tally.lost) <= 1, "{} lost", get(&tally.lost));
}

/// `spliceway status --json` of the relay at `socket`.
fn status_json(socket: &Path) -> Value {
    let output = Command::new(crate::util::SPLICEWAY)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
