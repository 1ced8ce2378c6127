//! `spliceway relay --udp`: datagrams relayed per client session, a line per session end at
//! -v, SIGINT drains and exits 0; flags for TCP only (PROXY protocol, rate limits,
//! --max-connections) are usage errors with --udp.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

/// Waits for `child` to exit; kills it (by its PID) and panics after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("spliceway relay did not exit within {limit:?}");
}

/// A UDP echo on loopback that answers `n` datagrams, then ends.
fn echo(n: usize) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let _ = socket.send_to(&buf[..len], from);
        }
    });
    addr
}

/// Sends `payload` from `client` to the relay at `listen` until an answer comes from it (the
/// relay may not be bound yet; bounded at 20 s), and returns the answer.
fn ask_until_answered(client: &UdpSocket, listen: SocketAddr, payload: &[u8]) -> Vec<u8> {
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        assert!(start.elapsed() < Duration::from_secs(20), "no answer");
        client.send_to(payload, listen).unwrap();
        if let Ok((n, from)) = client.recv_from(&mut buf) {
            assert_eq!(from, listen);
            return buf[..n].to_vec();
        }
    }
}

#[test]
fn relay_udp_answers_each_client_logs_the_session_and_drains_on_sigint() {
    let upstream = echo(100);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut relay = Command::new(EXE)
        .args(["relay", "--udp", &listen.to_string(), &upstream.to_string()])
        .args(["-v", "--udp-idle-timeout", "5s", "--drain-timeout", "1s"])
        .args(["--metrics", &metrics])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(ask_until_answered(&client, listen, b"ping"), b"ping");
    let expected = [
        "spliceway_udp_sessions_started_total{route=\"relay\"} 1",
        "spliceway_udp_sessions_active{route=\"relay\"} 1",
        "spliceway_udp_datagrams_total{route=\"relay\",direction=\"upstream_to_client\"} 1",
        "spliceway_udp_bytes_total{route=\"relay\",direction=\"upstream_to_client\"} 4",
        "spliceway_udp_dropped_total{route=\"relay\",reason=\"denied\"} 0",
    ];
    // The counters are updated just after the answer is sent: scrape until they show it.
    let start = Instant::now();
    loop {
        let text = scrape(&metrics);
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|line| !text.lines().any(|l| l == **line))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{missing:?} missing from:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(relay.id() as i32), Signal::SIGINT).unwrap();
    wait_exit(&mut relay, Duration::from_secs(20));
    let output = relay.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("relaying UDP"), "{log}");
    let client_addr = client.local_addr().unwrap().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("session closed") && l.contains(&client_addr)),
        "no session line for {client_addr}: {log}"
    );
}

/// `GET /metrics` from the relay's metrics endpoint.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn tcp_only_flags_are_usage_errors_with_udp() {
    for args in [
        vec!["--udp", "127.0.0.1:0", "127.0.0.1:9", "--send-proxy", "v2"],
        vec!["127.0.0.1:0", "127.0.0.1:9", "--max-sessions", "10"],
        vec!["--udp", "127.0.0.1:0", "127.0.0.1:9", "--max-sessions", "0"],
        vec!["127.0.0.1:0", "127.0.0.1:9", "--udp-responses", "1"],
        vec![
            "--udp",
            "127.0.0.1:0",
            "127.0.0.1:9",
            "--udp-responses",
            "1001",
        ],
        vec![
            "--udp",
            "127.0.0.1:0",
            "127.0.0.1:9",
            "--rate-limit-up",
            "1mbit",
        ],
        vec![
            "--udp",
            "127.0.0.1:0",
            "127.0.0.1:9",
            "--max-connections",
            "5",
        ],
    ] {
        let mut child = Command::new(EXE)
            .arg("relay")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_exit(&mut child, Duration::from_secs(10));
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}

/// `--upstream` adds upstreams to a UDP relay as to a TCP one: with `--balance round-robin`
/// four clients' sessions alternate between two echoes, each client answered by one.
#[test]
fn relay_udp_balances_sessions_over_every_upstream_given() {
    let tagged_echo = |tag: u8| -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..100 {
                let Ok((len, from)) = socket.recv_from(&mut buf[1..]) else {
                    return;
                };
                buf[0] = tag;
                let _ = socket.send_to(&buf[..=len], from);
            }
        });
        addr
    };
    let (a, b) = (tagged_echo(b'a'), tagged_echo(b'b'));
    let listen: SocketAddr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut relay = Command::new(EXE)
        .args(["relay", "--udp", &listen.to_string(), &a.to_string()])
        .args([
            "--upstream",
            &b.to_string(),
            "--balance",
            "round-robin",
            "-q",
        ])
        .args(["--drain-timeout", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tags = Vec::new();
    for _ in 0..4 {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let answer = ask_until_answered(&client, listen, b"q");
        assert_eq!(&answer[1..], b"q");
        tags.push(answer[0]);
    }
    kill(Pid::from_raw(relay.id() as i32), Signal::SIGINT).unwrap();
    wait_exit(&mut relay, Duration::from_secs(20));
    let mut sorted = tags.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, b"aabb", "two sessions each, in turn: {tags:?}");
}
