//! `spliceway relay`: start-up errors are one line with exit status 2; `-vv` logs each
//! connection as it is accepted and closed; SIGUSR1/SIGUSR2 change the log detail while it runs;
//! SIGINT drains and exits 0.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use spliceway_test_kit::http::http_get;
use spliceway_test_kit::{Netns, dead_addr, echo_server, is_root, run_checked};

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

/// Runs `spliceway relay ARGS` to its end (it must end within 10 s).
fn relay_output(args: &[&str]) -> Output {
    let mut child = Command::new(EXE)
        .arg("relay")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
    child.wait_with_output().unwrap()
}

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

/// Asserts a start-up failure: exit status 2 and one line on stderr containing `needles`.
fn assert_usage_error(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {:?}",
            lines[0]
        );
    }
}

#[test]
fn bad_addresses_are_one_line_usage_errors() {
    for (args, needles) in [
        (
            ["127.0.0.1:notaport", "127.0.0.1:9"],
            &["listen address", "\"notaport\""][..],
        ),
        (
            ["300.1.1.1:80", "127.0.0.1:9"],
            &["listen address", "300.1.1.1"],
        ),
        (
            ["127.0.0.1:0", "no-port-here"],
            &["upstream address", "port is missing"],
        ),
        (
            ["127.0.0.1:0", "host.test:0"],
            &["upstream address", "port 0"],
        ),
        (
            ["127.0.0.1:0", ":443"],
            &["upstream address", "host is missing"],
        ),
    ] {
        assert_usage_error(&relay_output(&args), needles);
    }
}

#[test]
fn a_port_in_use_is_a_usage_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = relay_output(&[&addr, "127.0.0.1:9"]);
    assert_usage_error(&output, &[&addr]);
}

#[test]
fn unresolvable_upstream_at_start_is_a_usage_error() {
    if !is_root() {
        eprintln!("skipped: needs root (runs the relay in a network namespace with no route out)");
        return;
    }
    // In a namespace of our own with only loopback, the resolver's query cannot leave the host:
    // it fails at once, as an unresolvable name does.
    let namespace = Netns::create("relaycmd");
    let ns = namespace.name.clone();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, EXE, "relay", "127.0.0.1:0"])
        .arg("no-such-host.invalid:443")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_usage_error(&output, &["cannot resolve", "no-such-host.invalid:443"]);
}

#[test]
fn vv_logs_each_connection_and_sigint_drains_and_exits_0() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let mut relay = Command::new(EXE)
        .args(["relay", &listen.to_string(), &upstream.to_string(), "-vv"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = connect_when_listening(listen, &mut relay);
    let client_addr = exchange(client, b"hello relay");
    // Let the relay see both ends before it is asked to stop.
    thread::sleep(Duration::from_millis(200));
    signal(&relay, Signal::SIGINT);
    wait_exit(&mut relay, Duration::from_secs(10));
    let output = relay.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "exit status; stderr: {stderr}"
    );
    let accepted = stderr
        .lines()
        .find(|l| l.contains(" accepted ") && l.contains(&client_addr))
        .unwrap_or_else(|| panic!("no accepted line for {client_addr}: {stderr}"));
    assert!(accepted.contains("route=relay"), "{accepted}");
    let connected = stderr
        .lines()
        .find(|l| l.contains(" connected ") && l.contains(&client_addr))
        .unwrap_or_else(|| panic!("no connected line: {stderr}"));
    assert!(
        connected.contains(&format!("upstream={upstream}")),
        "{connected}"
    );
    let closed = stderr
        .lines()
        .find(|l| l.contains(" closed ") && l.contains(&client_addr))
        .unwrap_or_else(|| panic!("no closed line: {stderr}"));
    for field in [
        &format!("upstream={upstream}") as &str,
        "bytes_up=11",
        "bytes_down=11",
        "connect_ms=",
        "duration_ms=",
        "end=both finished",
    ] {
        assert!(closed.contains(field), "{field:?} missing from {closed:?}");
    }
    assert!(stderr.contains("SIGINT"), "the signal is logged: {stderr}");
    assert!(
        stderr.contains("stopped accepted=1"),
        "a last line sums up: {stderr}"
    );
}

/// One echo exchange of `message` on `client` (connected through the relay); returns the
/// client's address, as the relay logs it.
fn exchange(mut client: TcpStream, message: &[u8]) -> String {
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(message).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, message);
    client.local_addr().unwrap().to_string()
}

/// Connects to `listen` as soon as the relay listens there (10 s at most); the first successful
/// connection is the one returned, so no probe reaches the upstream.
fn connect_when_listening(listen: SocketAddr, relay: &mut Child) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(listen) {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = relay.kill();
                let _ = relay.wait();
                panic!("the relay never listened on {listen}: {e}");
            }
        }
    }
}

fn signal(child: &Child, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// How many sockets the process holds open.
fn sockets_of(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .map(|target| target.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .count()
}

/// Waits (10 s at most) until the process holds `count` sockets.
fn wait_for_sockets(child: &Child, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = sockets_of(child);
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay holds {now} sockets, expected {count}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigusr1_and_sigusr2_change_the_log_detail_while_running() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};

    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let mut relay = Command::new(EXE)
        .args(["relay", &listen.to_string(), &upstream.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stderr = relay.stderr.take().unwrap();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let wait_for = |what: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(what))
                .count();
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} (x{count}) in the log"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("relaying", 1);
    // A connection's line is written when the relay closes it, which can come a moment after
    // the client has seen the end of the echo: wait for the relay's sockets to go back to
    // the listener alone before changing the level, so each line falls on the intended side.
    let listener_sockets = sockets_of(&relay);
    let quiet_before = exchange(TcpStream::connect(listen).unwrap(), b"ping");
    wait_for_sockets(&relay, listener_sockets);
    signal(&relay, Signal::SIGUSR1);
    wait_for("log level now", 1);
    let detailed = exchange(TcpStream::connect(listen).unwrap(), b"ping");
    // One step up from the default is `-v`: a line per closed connection.
    wait_for(&format!("client={detailed}"), 1);
    signal(&relay, Signal::SIGUSR2);
    wait_for("log level now", 2);
    let quiet_after = exchange(TcpStream::connect(listen).unwrap(), b"ping");
    wait_for_sockets(&relay, listener_sockets);
    signal(&relay, Signal::SIGINT);
    wait_exit(&mut relay, Duration::from_secs(10));
    reader.join().unwrap();
    let log = lines.lock().unwrap().join("\n");
    let closed = |client: &str| {
        log.lines()
            .any(|l| l.contains(" closed ") && l.contains(&format!("client={client}")))
    };
    assert!(
        !closed(&quiet_before),
        "no connection line before SIGUSR1:\n{log}"
    );
    assert!(closed(&detailed), "a connection line after SIGUSR1:\n{log}");
    assert!(
        !closed(&quiet_after),
        "no connection line after SIGUSR2:\n{log}"
    );
}

/// Running out of descriptors makes new clients wait in the backlog; it never resets a client
/// that was already accepted (hostile testing: under `prlimit --nofile=64` with 200 concurrent
/// clients, 10 were reset with "upstream connect failed: Too many open files" and counted as
/// upstream_unavailable, which fires the "upstream or DNS is failing" alert).
#[test]
fn running_out_of_descriptors_makes_clients_wait_instead_of_resetting_them() {
    const CLIENTS: usize = 200;
    const MESSAGE_BYTES: usize = 32 * 1024;
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs prlimit (util-linux)");
        return;
    }
    // This process holds both ends of every exchange: give it room.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 && hard >= 4096 {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 4096, hard)
            .unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    thread::spawn(move || {
        // The probe below reaches the upstream too.
        for stream in listener.incoming().take(CLIENTS + 1) {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = Vec::new();
                if stream.read_to_end(&mut buf).is_ok() {
                    let _ = stream.write_all(&buf);
                }
            });
        }
    });
    let listen = dead_addr();
    let mut relay = Command::new("prlimit")
        .args(["--nofile=64:64", EXE, "relay"])
        .args([&listen.to_string(), &upstream.to_string(), "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = connect_when_listening(listen, &mut relay);
    drop(first); // a probe: the relay closes it, and counts it as a client that left
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || -> Result<(), String> {
                let mut stream = TcpStream::connect(listen).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let message: Vec<u8> = (0..MESSAGE_BYTES).map(|b| (b + i) as u8).collect();
                stream
                    .write_all(&message)
                    .map_err(|e| format!("write: {e}"))?;
                stream
                    .shutdown(Shutdown::Write)
                    .map_err(|e| e.to_string())?;
                let mut echoed = Vec::new();
                stream
                    .read_to_end(&mut echoed)
                    .map_err(|e| format!("read: {e}"))?;
                if echoed != message {
                    return Err(format!("{} bytes back of {}", echoed.len(), message.len()));
                }
                Ok(())
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.join().unwrap().err().map(|e| format!("client {i}: {e}")))
        .collect();
    signal(&relay, Signal::SIGTERM);
    wait_exit(&mut relay, Duration::from_secs(30));
    let output = relay.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed: {:?}\nrelay log:\n{stderr}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        !stderr.contains("Too many open files") || !stderr.contains("upstream connect failed"),
        "no connection fails for want of a descriptor: {stderr}"
    );
}

/// Asserts a flag refused by the command line: exit status 2, and the first line of stderr
/// names the flag and contains `needles`.
fn assert_flag_refused(args: &[&str], flag: &str, needles: &[&str]) {
    let mut all = vec!["127.0.0.1:0", "127.0.0.1:9"];
    all.extend_from_slice(args);
    let output = relay_output(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    for needle in std::iter::once(&flag).chain(needles) {
        assert!(
            first.contains(needle),
            "{args:?}: {needle:?} missing from {first:?}"
        );
    }
}

/// Hostile input 4 and 12: `--idle-timeout 400000000000years` was accepted (and, before
/// deadlines saturated, panicked the first connection); `--max-connections 0` started a
/// relay that never accepts anyone; `--threads 10000` exited 1 with "event loop failed: Too
/// many open files"; hostile input 5: `--keepalive` past the kernel's 32,767 s failed every
/// connection with "Invalid argument". Each is now a usage error naming the flag.
#[test]
fn values_past_their_bounds_are_usage_errors() {
    for flag in [
        "--connect-timeout",
        "--idle-timeout",
        "--half-close-timeout",
        "--drain-timeout",
        "--keepalive",
    ] {
        assert_flag_refused(
            &[flag, "400000000000years"],
            flag,
            &["longer than the longest time accepted, 7days"],
        );
    }
    assert_flag_refused(
        &["--keepalive", "40000s"],
        "--keepalive",
        &["TCP_KEEPIDLE: 1s to 32767s"],
    );
    assert_flag_refused(
        &["--max-connections", "0"],
        "--max-connections",
        &["must be at least 1"],
    );
    assert_flag_refused(&["--threads", "10000"], "--threads", &["from 0 to 1024"]);
}

/// Hostile input 11: upstream `127.0.0.1:0` started a relay whose every connection failed;
/// `[::ffff:127.0.0.1]:P` failed to bind with EINVAL. Hostile input 12: a zone naming no
/// interface is said to be one.
#[test]
fn unusable_addresses_are_one_line_usage_errors() {
    for (args, needles) in [
        (
            ["127.0.0.1:0", "127.0.0.1:0"],
            &["upstream address", "port 0"][..],
        ),
        (
            ["[::ffff:127.0.0.1]:0", "127.0.0.1:9"],
            &["listen address", "listen on 127.0.0.1:0"],
        ),
        (
            ["[fe80::1%no-such-if0]:0", "127.0.0.1:9"],
            &["listen address", "no network interface of that name"],
        ),
        (
            ["127.0.0.1:0", "[fe80::1]:9"],
            &["upstream address", "link-local address: give the interface"],
        ),
    ] {
        assert_usage_error(&relay_output(&args), needles);
    }
}

/// Hostile input 12: `[fe80::1%lo]:P` was refused with "IPv6 addresses go in brackets". In a
/// network namespace of the test's own, with fe80::1 on its loopback, the relay binds the
/// link-local address on the interface the zone names.
#[test]
fn a_zone_names_the_interface_of_a_link_local_listener() {
    use std::io::BufRead;
    if !is_root() {
        eprintln!("skipped: needs root (adds a link-local address in a network namespace)");
        return;
    }
    let namespace = Netns::create("zone");
    let ns = namespace.name.clone();
    let ip = |args: &[&str]| {
        run_checked("ip", args);
    };
    ip(&["-n", &ns, "addr", "add", "fe80::1/64", "dev", "lo", "nodad"]);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, EXE, "relay", "[fe80::1%lo]:0"])
        .arg("[fe80::1%lo]:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) if line.contains("relaying [fe80::1%1]:") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = started.unwrap_or_else(|| panic!("the relay did not start: {seen:?}"));
    assert!(line.contains("-> [fe80::1%1]:9"), "{line}");
}

/// `--metrics` serves /metrics, /healthz and /readyz; `--accept-proxy` reads the header and
/// logs its client; on SIGTERM with `--drain-delay` readiness fails at once, the relay still
/// accepts during the delay, and `spliceway_draining` is 1.
#[test]
fn metrics_health_readiness_proxy_protocol_and_the_drain_delay() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let metrics = dead_addr();
    let mut relay = Command::new(EXE)
        .args(["relay", &listen.to_string(), &upstream.to_string()])
        .args(["--metrics", &metrics.to_string(), "--accept-proxy", "v1"])
        .args(["--accept-proxy-from", "127.0.0.1"])
        .args(["--drain-delay", "1h", "--drain-timeout", "5s", "-v"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = connect_when_listening(listen, &mut relay);
    client
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n")
        .unwrap();
    exchange(client, b"first");
    let (code, body) = http_get(metrics, "/healthz", Duration::from_secs(10)).unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(
        http_get(metrics, "/readyz", Duration::from_secs(10))
            .unwrap()
            .0,
        200
    );
    let (_, text) = http_get(metrics, "/metrics", Duration::from_secs(10)).unwrap();
    assert!(text.contains("spliceway_draining 0"), "{text}");
    assert!(
        text.contains(r#"spliceway_proxy_header_errors_total{route="relay",reason="signature"} 0"#),
        "{text}"
    );
    signal(&relay, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(metrics, "/readyz", Duration::from_secs(10))
        .unwrap()
        .0
        == 200
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = http_get(metrics, "/readyz", Duration::from_secs(10)).unwrap();
    assert_eq!((code, body.as_str()), (503, "draining\n"));
    assert_eq!(
        http_get(metrics, "/healthz", Duration::from_secs(10))
            .unwrap()
            .0,
        200,
        "draining is alive"
    );
    assert!(
        http_get(metrics, "/metrics", Duration::from_secs(10))
            .unwrap()
            .1
            .contains("spliceway_draining 1")
    );
    // Still accepting during the delay.
    let mut late = TcpStream::connect(listen).expect("accepting during the drain delay");
    late.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    exchange(late, b"second");
    // A second SIGTERM stops at once.
    signal(&relay, Signal::SIGTERM);
    wait_exit(&mut relay, Duration::from_secs(10));
    let output = relay.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("client=192.0.2.7:51000") && stderr.contains("via=127.0.0.1:"),
        "the closed line names the client and the balancer: {stderr}"
    );
    assert!(stderr.contains("/readyz now answers 503"), "{stderr}");
}

/// The stderr lines of a running relay, read on a thread of their own.
struct Log {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Log {
    fn of(child: &mut Child) -> Log {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Log { lines }
    }

    /// Waits (10 s at most) for a line containing `what`; returns it.
    fn wait_for(&self, what: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return Some(line.clone());
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Starts `spliceway relay LISTEN UPSTREAM ARGS` with stderr piped, and waits for its
/// "relaying" line.
fn start_relay(listen: SocketAddr, upstream: SocketAddr, args: &[&str]) -> (Child, Log) {
    let mut relay = Command::new(EXE)
        .args(["relay", &listen.to_string(), &upstream.to_string()])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::of(&mut relay);
    if log.wait_for("relaying").is_none() {
        let _ = relay.kill();
        let _ = relay.wait();
        panic!("the relay did not start: {}", log.text());
    }
    (relay, log)
}

/// Stops a relay started by the test (by its PID) and waits for it.
fn stop(mut relay: Child) {
    signal(&relay, Signal::SIGTERM);
    wait_exit(&mut relay, Duration::from_secs(10));
}

/// A client bound to `source` (a loopback address) connected to `to`.
fn client_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether an echo through `client` comes back; a refused client is closed without a byte.
fn echoes(mut client: TcpStream) -> bool {
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = client.write_all(b"who goes there");
    let _ = client.shutdown(Shutdown::Write);
    let mut echoed = Vec::new();
    let _ = client.read_to_end(&mut echoed);
    echoed == b"who goes there"
}

/// Issue 25: `relay` had no access list. `--allow` and `--deny` (repeated or comma-separated)
/// judge clients as `allow`/`deny` in the configuration file do: deny first.
#[test]
fn allow_and_deny_judge_clients() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let (relay, log) = start_relay(
        listen,
        upstream,
        &[
            "--allow",
            "10.0.0.0/8,127.0.0.2",
            "--allow",
            "127.0.0.3/32",
            "--deny",
            "127.0.0.3",
            "-v",
        ],
    );
    let started = log.wait_for("relaying").unwrap();
    assert!(
        started.contains("clients in 10.0.0.0/8,127.0.0.2/32,127.0.0.3/32 but not 127.0.0.3/32"),
        "{started}"
    );
    assert!(echoes(client_from("127.0.0.2", listen)), "allowed");
    assert!(!echoes(client_from("127.0.0.1", listen)), "not allowed");
    assert!(!echoes(client_from("127.0.0.3", listen)), "denied first");
    assert!(echoes(client_from("127.0.0.2", listen)), "allowed again");
    stop(relay);
    let log = log.text();
    assert!(
        log.contains("stopped accepted=4") || log.contains("accepted=4"),
        "four clients: {log}"
    );
}

#[test]
fn a_bad_cidr_an_unknown_user_and_a_bare_k_are_usage_errors() {
    assert_flag_refused(&["--allow", "10.0.0.0/33"], "--allow", &["invalid CIDR"]);
    assert_flag_refused(
        &["--deny", "10.0.0.0/8,nonsense"],
        "--deny",
        &["invalid CIDR"],
    );
    assert_flag_refused(
        &["--pipe-size", "512K"],
        "--pipe-size",
        &["write 512KiB (1 KiB = 1024 bytes) or 512KB (1 KB = 1000 bytes)"],
    );
    assert_usage_error(
        &relay_output(&["127.0.0.1:0", "127.0.0.1:9", "--user", "no-such-user-25"]),
        &["--user no-such-user-25: no such user"],
    );
    assert_usage_error(
        &relay_output(&["127.0.0.1:0", "127.0.0.1:9", "--group", "no-such-group-25"]),
        &["--group no-such-group-25: no such group"],
    );
}

/// Issue 25: `run` warned about running as root and `relay` did not.
#[test]
fn running_as_root_without_user_is_warned_about() {
    if !is_root() {
        eprintln!("skipped: needs root (the warning is about running as root)");
        return;
    }
    let (relay, log) = start_relay(dead_addr(), dead_addr(), &[]);
    let warning = log.wait_for("running as root");
    stop(relay);
    let warning = warning.unwrap_or_else(|| panic!("no warning: {}", log.text()));
    assert!(warning.contains("--user"), "{warning}");
}

/// `--user nobody` drops privileges once the listener is bound, as `user = "nobody"` does for
/// `run`; the relay still relays.
#[test]
fn user_nobody_drops_privileges_after_binding() {
    if !is_root() {
        eprintln!("skipped: needs root (drops privileges to nobody)");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("skipped: no user nobody");
        return;
    };
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let (relay, log) = start_relay(listen, upstream, &["--user", "nobody"]);
    let dropped = log.wait_for("dropped privileges");
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.id())).unwrap();
    let relayed = echoes(TcpStream::connect(listen).unwrap());
    let warned = log.text().contains("running as root");
    stop(relay);
    assert!(dropped.is_some(), "{}", log.text());
    let uid = nobody.uid.as_raw().to_string();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(uids, [uid.as_str(); 4], "{status}");
    assert!(relayed, "relays as nobody");
    assert!(
        !warned,
        "no root warning once --user is given: {}",
        log.text()
    );
}

/// Issue 25: binding port 443 unprivileged said only "Permission denied". The error names
/// CAP_NET_BIND_SERVICE and `--user`.
#[test]
fn a_low_port_refused_to_an_unprivileged_user_names_the_capability() {
    use std::os::unix::process::CommandExt;
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1 {
        eprintln!("skipped: every port is unprivileged here (ip_unprivileged_port_start {start})");
        return;
    }
    let mut command = Command::new(EXE);
    command.args(["relay", &format!("127.0.0.1:{}", start - 1), "127.0.0.1:9"]);
    if is_root() {
        let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
            eprintln!("skipped: no user nobody to run as");
            return;
        };
        command.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
    let output = child.wait_with_output().unwrap();
    assert_usage_error(
        &output,
        &["Permission denied", "CAP_NET_BIND_SERVICE", "--user NAME"],
    );
}

/// Issue 25: in JSON logs `connect_ms` and `duration_ms` were strings while byte counts were
/// numbers, and `-vvv` let dependencies' debug lines through (with their source paths). Every
/// line is now one JSON object, numbers are numbers, and only spliceway's own targets log.
#[test]
fn json_logs_have_numbers_and_only_spliceways_own_lines() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let listen = dead_addr();
    let metrics = dead_addr();
    let (mut relay, log) = start_relay(
        listen,
        upstream,
        &[
            "--log-format",
            "json",
            "-vvv",
            "--metrics",
            &metrics.to_string(),
        ],
    );
    let client = exchange(TcpStream::connect(listen).unwrap(), b"json please");
    let _ = http_get(metrics, "/metrics", Duration::from_secs(10)).unwrap();
    assert!(
        log.wait_for("\"closed\"").is_some(),
        "no closed line: {}",
        log.text()
    );
    signal(&relay, Signal::SIGINT);
    wait_exit(&mut relay, Duration::from_secs(10));
    let lines: Vec<serde_json::Value> = log
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("spliceway"),
            "a dependency's line: {line}"
        );
        assert!(line["fields"].get("log.file").is_none(), "{line}");
    }
    let closed = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "closed" && l["fields"]["client"].as_str() == Some(&client)
        })
        .unwrap_or_else(|| panic!("no closed line for {client}: {}", log.text()));
    let fields = &closed["fields"];
    for number in ["connect_ms", "duration_ms"] {
        assert!(fields[number].is_f64(), "{number} is a number: {closed}");
    }
    for count in ["bytes_up", "bytes_down", "id"] {
        assert!(fields[count].is_u64(), "{count} is a number: {closed}");
    }
    assert_eq!(fields["bytes_up"], 11);
    assert_eq!(closed["level"], "INFO");
    assert_eq!(closed["target"], "spliceway::conn");
}

/// Issue 25: stopping a relay with nothing open logged three lines about draining.
#[test]
fn stopping_with_nothing_open_says_so_once() {
    let (mut relay, log) = start_relay(dead_addr(), dead_addr(), &["--threads", "1"]);
    signal(&relay, Signal::SIGINT);
    wait_exit(&mut relay, Duration::from_secs(10));
    assert!(log.wait_for("stopped").is_some(), "{}", log.text());
    let text = log.text();
    let cli_lines = text
        .lines()
        .filter(|l| l.contains("drain") && !l.contains("no new connections"))
        .count();
    assert_eq!(cli_lines, 1, "one line of the program's own: {text}");
}

/// Issue 29: `--upstream` repeated balances over every upstream given (round robin: two
/// connections, one to each), and a relay without any upstream is a usage error.
#[test]
fn upstream_repeated_balances_over_each() {
    let (a_server, b_server) = (echo_server(), echo_server());
    let (a, b) = (a_server.addr, b_server.addr);
    let listen = dead_addr();
    let mut relay = Command::new(EXE)
        .args(["relay", &listen.to_string(), "--upstream", &a.to_string()])
        .args(["--upstream", &b.to_string(), "-vv"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = connect_when_listening(listen, &mut relay);
    exchange(first, b"one");
    exchange(TcpStream::connect(listen).unwrap(), b"two");
    thread::sleep(Duration::from_millis(200));
    signal(&relay, Signal::SIGINT);
    wait_exit(&mut relay, Duration::from_secs(10));
    let output = relay.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for upstream in [a, b] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(" connected ") && l.contains(&format!("upstream={upstream}"))),
            "no connection to {upstream}: {stderr}"
        );
    }

    let output = relay_output(&["127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give an upstream"));
}
