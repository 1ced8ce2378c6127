//! Behind a load balancer: HAProxy in TCP mode stands in for an AWS NLB in front of two
//! `spliceway run` instances (PROXY protocol v2 on every connection, health checks on
//! `/readyz`), and spliceway sends PROXY protocol to HAProxy and nginx, which report the client
//! address they were told. HAProxy and nginx are Debian packages that `.ci/run` installs;
//! elsewhere a missing one skips its test with a message.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    Daemon, SPLICEWAY, WAIT, echo_server, free_port, hash_answer, hash_server, metric, pattern,
    scrape, wait_until,
};

/// The path of `name` (PATH, then /usr/sbin), or `None` after saying the test is skipped. In
/// CI (`CI` set) a missing tool fails the test: `.ci/run` installs it.
fn tool(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let found = dirs
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed; .ci/run installs it with apt-get"
        );
        eprintln!("skipped: {name} is not installed (apt-get install {name})");
    }
    found
}

/// A program started by a test, in a directory of its own; killed (by its PID) when dropped.
struct Peer {
    child: Child,
    dir: tempfile::TempDir,
}

impl Peer {
    fn start(mut command: Command, dir: tempfile::TempDir) -> Peer {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("starting the load balancer");
        Peer { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy with `config` (its stats socket line is added), serving in the foreground.
fn haproxy(haproxy: &Path, config: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.sock");
    let text = format!(
        "global\n    stats socket {} mode 600 level admin\n    maxconn 2000\n{config}",
        stats.display()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(haproxy);
    command.arg("-db").arg("-f").arg(&path);
    Peer::start(command, dir)
}

/// The status (`UP`, `DOWN`, ...) HAProxy's stats socket gives for `backend/server`.
fn server_status(lb: &Peer, backend: &str, server: &str) -> String {
    let Ok(mut socket) = UnixStream::connect(lb.dir.path().join("stats.sock")) else {
        return "no stats socket yet".into();
    };
    let _ = socket.set_read_timeout(Some(WAIT));
    if socket.write_all(b"show stat\n").is_err() {
        return "stats socket refused".into();
    }
    let mut text = String::new();
    let _ = socket.read_to_string(&mut text);
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[0] == backend && f[1] == server)
        .map_or_else(|| "absent".into(), |f| f[17].to_string())
}

fn wait_status(lb: &Peer, backend: &str, server: &str, status: &str) {
    assert!(
        wait_until(WAIT, || server_status(lb, backend, server)
            .starts_with(status)),
        "HAProxy did not mark {backend}/{server} {status} (now {}); its log:\n{}",
        server_status(lb, backend, server),
        lb.log()
    );
}

/// Connects to `addr` from the loopback address `source`.
fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())?;
    socket.connect_timeout(&addr.into(), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// How an upload through the load balancer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upload {
    Intact,
    WrongAnswer(String),
    Refused,
    Reset,
    Other(String),
}

/// Uploads `data` from `source` through `addr`, paced (`chunks` writes with a pause between)
/// so that it is still in flight when the test acts, and checks the hash server's answer.
fn upload(source: &str, addr: SocketAddr, data: &[u8], pause: Duration) -> Upload {
    let classify = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Upload::Refused,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Upload::Reset,
        _ => Upload::Other(e.to_string()),
    };
    let mut stream = match connect_from(source, addr) {
        Ok(s) => s,
        Err(e) => return classify(e),
    };
    for chunk in data.chunks(256 * 1024) {
        if let Err(e) = stream.write_all(chunk) {
            return classify(e);
        }
        thread::sleep(pause);
    }
    if let Err(e) = stream.shutdown(Shutdown::Write) {
        return classify(e);
    }
    let mut answer = String::new();
    match stream.read_to_string(&mut answer) {
        Ok(_) if answer.trim() == hash_answer(data) => Upload::Intact,
        Ok(_) => Upload::WrongAnswer(answer),
        Err(e) => classify(e),
    }
}

/// PROXY header refusals of route `lb`, all reasons (each must be exported).
fn header_errors(daemon: &Daemon) -> f64 {
    let text = scrape(daemon.metrics_addr());
    spliceway::internal::proxy_protocol::ProxyHeaderError::REASONS
        .iter()
        .map(|r| {
            metric(
                &text,
                "spliceway_proxy_header_errors_total",
                &[("route", "lb"), ("reason", r)],
            )
            .unwrap_or_else(|| panic!("reason {r} is exported"))
        })
        .sum()
}

/// One spliceway instance behind the balancer: PROXY protocol v2 required, the allow list
/// keyed on the client address the header gives (127.0.0.2 only; the balancer itself is
/// 127.0.0.1), health and readiness on its metrics port.
fn instance(upstream: SocketAddr) -> Daemon {
    Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
drain_delay = "3s"
drain_timeout = "30s"
[[route]]
name = "lb"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
accept_proxy = "v2"
accept_proxy_from = ["127.0.0.1/32"]
allow = ["127.0.0.2/32"]
"#
        ),
    )
}

#[test]
fn haproxy_in_front_of_two_relays_sees_them_drain_without_a_refusal() {
    let Some(haproxy_bin) = tool("haproxy") else {
        return;
    };
    let sink_server = hash_server();
    let sink = sink_server.addr;
    let mut a = instance(sink);
    let b = instance(sink);
    let front = free_port();
    let lb = haproxy(
        &haproxy_bin,
        &format!(
            r#"
defaults
    mode tcp
    # No retry: a refused or reset connection to an instance must reach the client as such.
    retries 0
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 2s
frontend fe
    bind 127.0.0.1:{front}
    default_backend relays
backend relays
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2 send-proxy-v2
    server a {a_route} check port {a_metrics}
    server b {b_route} check port {b_metrics}
"#,
            a_route = a.listen_addr("lb"),
            a_metrics = a.metrics_addr().port(),
            b_route = b.listen_addr("lb"),
            b_metrics = b.metrics_addr().port(),
        ),
    );
    wait_status(&lb, "relays", "a", "UP");
    wait_status(&lb, "relays", "b", "UP");
    let front: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();

    // The real client address: 127.0.0.2 is admitted, 127.0.0.3 refused, by whichever
    // instance HAProxy chose; both instances' logs name the client and HAProxy as `via`.
    let small = pattern(64 * 1024, 1);
    for _ in 0..2 {
        assert_eq!(
            upload("127.0.0.2", front, &small, Duration::ZERO),
            Upload::Intact
        );
    }
    let refused = upload("127.0.0.3", front, &small, Duration::ZERO);
    assert_ne!(
        refused,
        Upload::Intact,
        "127.0.0.3 is not in the allow list"
    );
    let denied = |d: &Daemon| {
        metric(
            &scrape(d.metrics_addr()),
            "spliceway_connections_denied_total",
            &[("route", "lb")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || denied(&a) + denied(&b) == 1.0),
        "one denial in all: a {} b {}",
        denied(&a),
        denied(&b)
    );
    for daemon in [&a, &b] {
        assert!(
            daemon.wait_for_log("client=127.0.0.2:", WAIT)
                && daemon.count_log("via=127.0.0.1:") > 0,
            "the log names the client and the balancer:\n{}",
            daemon.log_text()
        );
    }
    assert_eq!(header_errors(&a) + header_errors(&b), 0.0);

    // 20 uploads of 16 MiB, four at a time, each taking about a second; instance a gets
    // SIGTERM while they run.
    let data = Arc::new(pattern(16 << 20, 7));
    let results = Arc::new(Mutex::new(Vec::new()));
    let uploaders: Vec<_> = (0..4)
        .map(|_| {
            let data = Arc::clone(&data);
            let results = Arc::clone(&results);
            thread::spawn(move || {
                for _ in 0..5 {
                    let ending = upload("127.0.0.2", front, &data, Duration::from_millis(15));
                    results.lock().unwrap().push(ending);
                }
            })
        })
        .collect();
    assert!(wait_until(WAIT, || {
        metric(
            &scrape(a.metrics_addr()),
            "spliceway_connections_active",
            &[("route", "lb")],
        )
        .unwrap_or(0.0)
            >= 1.0
    }));
    let served_by_a_before = metric(
        &scrape(a.metrics_addr()),
        "spliceway_connections_accepted_total",
        &[("route", "lb")],
    )
    .unwrap();
    let signalled = Instant::now();
    a.signal(Signal::SIGTERM);
    wait_status(&lb, "relays", "a", "DOWN");
    let marked_down = signalled.elapsed();
    for uploader in uploaders {
        uploader.join().unwrap();
    }
    let results = results.lock().unwrap().clone();
    let status = a.wait_exit(Duration::from_secs(40));
    eprintln!(
        "drain through HAProxy: {} uploads, {} intact, refused {}, reset {}; HAProxy marked \
         the draining instance down {} ms after SIGTERM",
        results.len(),
        results.iter().filter(|r| **r == Upload::Intact).count(),
        results.iter().filter(|r| **r == Upload::Refused).count(),
        results.iter().filter(|r| **r == Upload::Reset).count(),
        marked_down.as_millis()
    );
    assert_eq!(results.len(), 20);
    assert!(
        results.iter().all(|r| *r == Upload::Intact),
        "every upload intact, none refused or reset: {results:?}\nHAProxy:\n{}\na:\n{}",
        lb.log(),
        a.log_text()
    );
    assert!(
        marked_down < Duration::from_secs(3),
        "marked down within the drain delay"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "a drained and exited 0: {status:?}"
    );
    let log = a.log_text();
    for phase in ["/readyz now answers 503", "draining: no new connections"] {
        assert!(log.contains(phase), "phase {phase:?} logged:\n{log}");
    }
    assert!(served_by_a_before >= 1.0);
    let b_accepted = metric(
        &scrape(b.metrics_addr()),
        "spliceway_connections_accepted_total",
        &[("route", "lb")],
    )
    .unwrap();
    assert!(b_accepted >= 10.0, "b took over: {b_accepted} connections");
}

#[test]
fn haproxy_local_health_checks_pass_a_route_that_requires_v2() {
    let Some(haproxy_bin) = tool("haproxy") else {
        return;
    };
    let echo_server = echo_server();
    let echo = echo_server.addr;
    let relay = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "lb"
listen = ["127.0.0.1:0"]
upstream = "{echo}"
accept_proxy = "v2"
accept_proxy_from = ["127.0.0.1/32"]
"#
        ),
    );
    // A TCP check that connects with a PROXY header (LOCAL: a health check has no client),
    // then needs its PING echoed back through the relay.
    let lb = haproxy(
        &haproxy_bin,
        &format!(
            r#"
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
    timeout check 2s
backend checked
    option tcp-check
    tcp-check connect send-proxy
    tcp-check send "PING\n"
    tcp-check expect string PING
    server r {route} send-proxy-v2 check inter 200ms rise 2
"#,
            route = relay.listen_addr("lb")
        ),
    );
    // HAProxy counts a server UP until checks fail; wait for several relayed checks instead.
    let connects = || {
        metric(
            &scrape(relay.metrics_addr()),
            "spliceway_upstream_connects_total",
            &[("route", "lb")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || connects() >= 3.0),
        "three health checks relayed to the upstream (now {}); relay log:\n{}",
        connects(),
        relay.log_text()
    );
    assert_eq!(server_status(&lb, "checked", "r"), "UP", "{}", lb.log());
    let errors = header_errors(&relay);
    assert_eq!(errors, 0.0, "no health check was refused");
}

/// A client's request through spliceway (`send_proxy`) to `upstream`, and what came back.
fn through_relay(upstream: SocketAddr, version: &str, request: &[u8]) -> (SocketAddr, String) {
    let relay = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
[[route]]
name = "to_lb"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
send_proxy = "{version}"
"#
        ),
    );
    let mut client = connect_from("127.0.0.5", relay.listen_addr("to_lb")).unwrap();
    let local = client.local_addr().unwrap();
    client.write_all(request).unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    (local, answer)
}

#[test]
fn haproxy_behind_spliceway_reports_the_original_client() {
    let Some(haproxy_bin) = tool("haproxy") else {
        return;
    };
    let port = free_port();
    let _lb = haproxy(
        &haproxy_bin,
        &format!(
            r#"
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "client=%[src]:%[src_port]\n"
"#
        ),
    );
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(WAIT, || TcpStream::connect(upstream).is_ok()));
    for version in ["v1", "v2"] {
        let (client, answer) = through_relay(
            upstream,
            version,
            b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        );
        assert!(
            answer.contains(&format!("client={client}\n")),
            "{version}: HAProxy saw {client}: {answer}"
        );
    }
}

#[test]
fn nginx_behind_spliceway_reports_the_original_client() {
    let Some(nginx_bin) = tool("nginx") else {
        return;
    };
    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
    if !module.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libnginx-mod-stream is not installed"
        );
        eprintln!("skipped: nginx's stream module is not installed (libnginx-mod-stream)");
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            r#"load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        return "client=$proxy_protocol_addr:$proxy_protocol_port\n";
    }}
}}
"#,
            module = module.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let mut command = Command::new(nginx_bin);
    command
        .arg("-e")
        .arg("stderr")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&config);
    let nginx = Peer::start(command, dir);
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_until(WAIT, || TcpStream::connect(upstream).is_ok()),
        "nginx did not start: {}",
        nginx.log()
    );
    for version in ["v1", "v2"] {
        let (client, answer) = through_relay(upstream, version, b"");
        assert_eq!(answer, format!("client={client}\n"), "{version}");
    }
}

/// Issue 24, finding 1, through the daemon: with `accept_proxy_from` naming the balancer
/// (127.0.0.1 here), a peer at 127.0.0.5 sending a header that claims an allowed 10.1.2.3 is
/// reset at once, counted as denied and logged in the refusal summary; 50 such peers parked
/// without a byte hold none of the route's two slots, so the balancer's own client goes
/// straight through; the resolver, the log and the upstream never see the forged address.
#[test]
fn only_the_balancer_may_send_a_proxy_header() {
    let sink_server = hash_server();
    let sink = sink_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "lb"
listen = ["127.0.0.1:0"]
upstream = "{sink}"
accept_proxy = "v2"
accept_proxy_from = ["127.0.0.1/32"]
allow = ["10.0.0.0/8"]
deny = ["127.0.0.0/8"]
max_connections = 2
proxy_timeout = "60s"
"#
        ),
    );
    let route = daemon.listen_addr("lb");
    let mut header = Vec::new();
    spliceway::internal::proxy_protocol::encode(
        spliceway::proxy_protocol::Version::V2,
        "10.1.2.3:51000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
        &mut header,
    );
    // Parked forgers first: they would fill both slots for 60 s if they held them.
    let parked: Vec<socket2::Socket> = (0..50)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket
                .bind(&SocketAddr::new("127.0.0.5".parse().unwrap(), 0).into())
                .unwrap();
            // connect_timeout reads SO_ERROR, which may already hold the relay's reset.
            let _ = socket.connect_timeout(&route.into(), WAIT);
            socket
        })
        .collect();
    let data = pattern(256 * 1024, 5);
    let mut with_header = header.clone();
    with_header.extend_from_slice(&data);
    let started = Instant::now();
    assert_eq!(
        upload("127.0.0.5", route, &with_header, Duration::ZERO),
        Upload::Reset,
        "a forged header from an untrusted peer"
    );
    let mut client = connect_from("127.0.0.1", route).unwrap();
    client.write_all(&with_header).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer.trim(),
        hash_answer(&data),
        "the balancer's client, admitted by the address in its header, arrives intact \
         (the header consumed)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the balancer's client did not wait for the parked forgers' header timeout"
    );
    drop(parked);
    let text = scrape(daemon.metrics_addr());
    let denied = metric(
        &text,
        "spliceway_connections_denied_total",
        &[("route", "lb")],
    )
    .unwrap();
    assert_eq!(denied, 51.0, "every forger counted");
    assert!(
        daemon.wait_for_log(
            "may not send a PROXY header (not in accept_proxy_from)",
            WAIT
        ),
        "the refusal summary names the reason: {}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    for line in log.lines().filter(|l| l.contains("10.1.2.3")) {
        assert!(
            line.contains("via=127.0.0.1:") && !line.contains("127.0.0.5"),
            "the claimed address is logged only for the balancer's client: {line}"
        );
    }
}
