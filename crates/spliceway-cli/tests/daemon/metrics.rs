//! The Prometheus endpoint after known traffic, and the health and metrics listener under
//! hostile clients (issue 24, findings 2-5): a client that never reads, a thousand idle
//! connections, oversized request heads, running out of descriptors, a slow loris. Each of
//! these failed against the old `tiny_http` server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{
    Daemon, HEALTH_BOUND, SPLICEWAY, WAIT, assert_health_answers, closed_by_server, config_file,
    connect, echo_round_trip, echo_server, fds_of, hash_answer, hash_server, http_exchange,
    http_get, metric, pattern, raise_own_nofile, read_answer, rss_kib, scrape, threads_of,
    wait_until,
};

#[test]
fn counters_match_the_traffic_sent() {
    let hashes_server = hash_server();
    let hashes = hashes_server.addr;
    let echo_server = echo_server();
    let echo = echo_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "up"
listen = ["127.0.0.1:0"]
upstream = "{hashes}"

[[route]]
name = "echo"
listen = ["127.0.0.1:0"]
upstream = "{echo}"
mode = "copy"
"#
        ),
    );
    let data = pattern(3 << 20, 3);
    let mut client = connect(daemon.listen_addr("up"));
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let answer = read_answer(&mut client);
    assert_eq!(answer, hash_answer(&data));
    let echoed = pattern(100_000, 5);
    echo_round_trip(daemon.listen_addr("echo"), &echoed);
    echo_round_trip(daemon.listen_addr("echo"), &echoed);

    let addr = daemon.metrics_addr();
    let closed = |text: &str, route: &str| {
        metric(
            text,
            "spliceway_connections_closed_total",
            &[("route", route)],
        )
    };
    assert!(
        wait_until(WAIT, || {
            let text = scrape(addr);
            closed(&text, "up") == Some(1.0) && closed(&text, "echo") == Some(2.0)
        }),
        "{}",
        scrape(addr)
    );
    let text = scrape(addr);
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let bytes = "spliceway_bytes_total";
    let moved = "spliceway_bytes_moved_total";
    let up_sent = data.len() as f64;
    let up_answer = (answer.len() + 1) as f64; // with its newline
    assert_eq!(
        value(
            bytes,
            &[("route", "up"), ("direction", "client_to_upstream")]
        ),
        up_sent
    );
    assert_eq!(
        value(
            bytes,
            &[("route", "up"), ("direction", "upstream_to_client")]
        ),
        up_answer
    );
    assert_eq!(
        value(moved, &[("route", "up"), ("engine", "splice")]),
        up_sent + up_answer
    );
    assert_eq!(value(moved, &[("route", "up"), ("engine", "copy")]), 0.0);
    let echo_each_way = 2.0 * echoed.len() as f64;
    assert_eq!(
        value(
            bytes,
            &[("route", "echo"), ("direction", "client_to_upstream")]
        ),
        echo_each_way
    );
    assert_eq!(
        value(
            bytes,
            &[("route", "echo"), ("direction", "upstream_to_client")]
        ),
        echo_each_way
    );
    assert_eq!(
        value(moved, &[("route", "echo"), ("engine", "copy")]),
        2.0 * echo_each_way
    );
    assert_eq!(
        value("spliceway_connections_accepted_total", &[("route", "echo")]),
        2.0
    );
    assert_eq!(
        value("spliceway_connections_completed_total", &[("route", "up")]),
        1.0
    );
    assert_eq!(
        value("spliceway_connections_active", &[("route", "up")]),
        0.0
    );
    assert_eq!(
        value(
            "spliceway_resets_total",
            &[("route", "up"), ("side", "client")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "spliceway_upstream_connect_seconds_count",
            &[("route", "echo")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "spliceway_upstream_connect_seconds_bucket",
            &[("route", "echo"), ("le", "+Inf")]
        ),
        2.0
    );
    assert!(
        value(
            "spliceway_upstream_connect_seconds_sum",
            &[("route", "echo")]
        ) > 0.0
    );
    assert!(text.contains("# TYPE spliceway_upstream_connect_seconds histogram"));
    for name in [
        "spliceway_connections_denied_total",
        "spliceway_connections_sni_refused_total",
        "spliceway_connections_upstream_unavailable_total",
        "spliceway_connections_resolve_refused_total",
        "spliceway_resolve_cancelled_total",
        "spliceway_upstream_connect_failures_total",
        "spliceway_timeouts_total",
        "spliceway_pipes_open",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

/// A relay with one route and the metrics endpoint on a port of its own.
fn daemon_with_metrics() -> Daemon {
    let upstream = crate::util::shared_echo_server();
    Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "echo"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
"#
        ),
    )
}

/// Finding 2: one client pipelining 3,000 `GET /metrics` and reading nothing stopped
/// `/healthz` and `/readyz` (one thread answered every request, and a response write had no
/// timeout). Now each health request is answered within [`HEALTH_BOUND`] throughout, and the
/// non-reader is closed at its write deadline.
#[test]
fn a_client_that_never_reads_does_not_stop_health_checks() {
    let daemon = daemon_with_metrics();
    let addr = daemon.metrics_addr();
    let mut abuser = connect(addr);
    let requests = b"GET /metrics HTTP/1.1\r\nHost: spliceway\r\n\r\n".repeat(3000);
    let writer = {
        let mut abuser = abuser.try_clone().unwrap();
        thread::spawn(move || {
            // Bounded by the write timeout `connect` set; a server that stops reading is fine.
            let _ = abuser.write_all(&requests);
        })
    };
    // Past the write deadline (5 s), polling health every 250 ms.
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(8) {
        assert_health_answers(addr, &format!("{answered} health answers so far"));
        answered += 1;
        thread::sleep(Duration::from_millis(250));
    }
    writer.join().unwrap();
    assert!(
        closed_by_server(&mut abuser, Duration::from_secs(20)),
        "the client that never read was not closed"
    );
    assert_health_answers(addr, "after the non-reader");
}

/// Finding 3: each idle connection cost a thread, kept forever (1,000 idle connections gave
/// ~1,000 threads and 2,000 descriptors). Now the server holds at most its cap of
/// connections, closes the oldest idle ones first, runs on one thread, and still answers.
#[test]
fn a_thousand_idle_connections_cost_no_thread_and_are_capped() {
    raise_own_nofile();
    let daemon = daemon_with_metrics();
    let pid = daemon.child.id();
    let addr = daemon.metrics_addr();
    assert_health_answers(addr, "before");
    let threads_before = threads_of(pid);
    let fds_before = fds_of(pid);
    let mut idle: Vec<TcpStream> = (0..1000).map(|_| connect(addr)).collect();
    // Health answers with the thousand open (each new client pushes out the oldest idle one).
    assert_health_answers(addr, "with 1,000 idle connections");
    let threads = threads_of(pid);
    let fds = fds_of(pid);
    eprintln!(
        "1,000 idle connections: threads {threads_before} -> {threads}, descriptors \
         {fds_before} -> {fds}"
    );
    assert!(
        threads <= threads_before + 1,
        "threads grew from {threads_before} to {threads}"
    );
    // The cap (64) and a little slack for the relay's own.
    assert!(
        fds <= fds_before + 64 + 4,
        "descriptors grew from {fds_before} to {fds}"
    );
    // The oldest were closed by the server, the newest are still open.
    assert!(
        closed_by_server(&mut idle[0], WAIT),
        "the oldest idle connection is still open"
    );
    let newest = idle.last_mut().unwrap();
    newest.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    newest.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
    assert_health_answers(addr, "after");
}

/// Finding 5: no limit on a request line or headers (three 64 MiB lines took RSS from 6 to
/// 198 MiB). Now a head over 8 KiB is answered 431 and closed, and memory does not grow while
/// three clients each try to send a 64 MiB request line.
#[test]
fn an_oversized_request_head_gets_431_and_costs_no_memory() {
    let daemon = daemon_with_metrics();
    let pid = daemon.child.id();
    let addr = daemon.metrics_addr();
    assert_health_answers(addr, "before");
    let rss_before = rss_kib(pid);
    let line = vec![b'a'; 64 << 20];
    // Kept open until RSS is read: a server that buffers the lines holds them all.
    let mut streams = Vec::new();
    for attempt in 0..3 {
        let mut stream = connect(addr);
        let started = Instant::now();
        let _ = stream.write_all(b"GET /");
        // Refused early (a reset or a broken pipe) by a server that stops reading at its
        // limit; the write timeout (`connect`) bounds a server that reads on.
        let sent = stream.write_all(&line);
        eprintln!(
            "64 MiB line {attempt}: write {:?} after {:?}",
            sent.as_ref().map_err(std::io::Error::kind),
            started.elapsed()
        );
        streams.push(stream);
    }
    thread::sleep(Duration::from_millis(300));
    let rss_during = rss_kib(pid);
    for mut stream in streams {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
    eprintln!("RSS {rss_before} KiB before, {rss_during} KiB with three 64 MiB lines sent");
    assert!(
        rss_during <= rss_before + 4 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
    assert_health_answers(addr, "after three 64 MiB lines");

    // Exactly the limit without the end of the head: the server has read every byte sent, so
    // its close is an orderly one and the answer cannot be lost to a reset.
    let mut at_limit = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    at_limit.resize(8 * 1024, b'a');
    let (code, _) = http_exchange(addr, &at_limit, WAIT).unwrap();
    assert_eq!(code, 431, "a head of 8 KiB without its end");
}

/// A client that sends its head a byte at a time and never ends it (a slow loris) is closed
/// at the head deadline (5 s) instead of holding its connection for ever.
#[test]
fn a_slow_loris_is_closed_at_the_read_deadline() {
    let daemon = daemon_with_metrics();
    let addr = daemon.metrics_addr();
    let mut loris = connect(addr);
    loris.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut closed = false;
    // At most 40 bytes, 500 ms apart: 20 s.
    for _ in 0..40 {
        if loris.write_all(b"X").is_err()
            || closed_by_server(&mut loris, Duration::from_millis(500))
        {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    eprintln!("slow loris closed: {closed} after {took:?}");
    assert!(closed, "a slow loris was still open after {took:?}");
    assert_health_answers(addr, "after the slow loris");
}

/// Finding 4: idle metrics connections used the relay's descriptors and the first `EMFILE`
/// ended the metrics server for good, silently. Now, under an open-file limit exhausted by
/// metrics clients, the server logs an ERROR line, keeps running, and serves again once the
/// clients go away.
#[test]
fn out_of_descriptors_the_metrics_server_logs_and_serves_again() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let (dir, path) = config_file(&format!(
        r#"
metrics = "127.0.0.1:0"
threads = 1
[[route]]
name = "echo"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
"#
    ));
    // `run` raises the soft limit to the hard one, so lower the hard limit before exec.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -Sn 40 && ulimit -Hn 40 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg(&path);
    let mut daemon = Daemon::spawn(command, path, Some(dir));
    let addr = daemon.metrics_addr();
    assert_health_answers(addr, "before");
    // More clients than 40 descriptors can hold, each half-way through a request so that
    // none is idle.
    let clients: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = connect(addr);
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n");
            stream
        })
        .collect();
    // Until the log says so (bounded), the server is out of descriptors.
    daemon.wait_for_log("metrics: cannot accept", WAIT);
    drop(clients);
    let served = wait_until(WAIT, || {
        matches!(http_get(addr, "/healthz", HEALTH_BOUND), Ok((200, _)))
    });
    assert!(
        served,
        "not serving after the clients left; log:\n{}",
        daemon.log_text()
    );
    assert_health_answers(addr, "after the clients left");
    assert!(
        daemon.wait_for_log("metrics: cannot accept", WAIT),
        "no ERROR line about accepting; log:\n{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("metrics: cannot accept"));
    eprintln!("{line:?}");
    assert!(line.is_some(), "{log}");
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the relay died: {}",
        daemon.log_text()
    );
}

/// `HEAD`, other methods, unknown paths, HTTP/1.1 keep-alive with pipelined requests, and
/// malformed request lines.
#[test]
fn methods_paths_keep_alive_and_bad_requests() {
    let daemon = daemon_with_metrics();
    let addr = daemon.metrics_addr();
    let exchange = |raw: &[u8]| http_exchange(addr, raw, WAIT).unwrap();
    assert_eq!(
        exchange(b"HEAD /healthz HTTP/1.0\r\n\r\n"),
        (200, String::new())
    );
    assert_eq!(exchange(b"POST /healthz HTTP/1.0\r\n\r\n").0, 405);
    assert_eq!(exchange(b"GET /nowhere HTTP/1.0\r\n\r\n").0, 404);
    assert_eq!(
        exchange(b"GET /healthz?x=1 HTTP/1.0\r\n\r\n"),
        (200, "ok\n".into())
    );
    assert_eq!(exchange(b"BROKEN\r\n\r\n").0, 400);
    let (code, body) = exchange(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (code, body.as_str()),
        (200, "spliceway: metrics are at /metrics\n")
    );

    // Two requests on one HTTP/1.1 connection, sent at once; the second closes it.
    let mut stream = connect(addr);
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    let mut both = String::new();
    stream.read_to_string(&mut both).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{both}");
    assert!(both.ends_with("ready\n"), "{both}");
    assert!(both.contains("Connection: keep-alive\r\n"), "{both}");

    // An HTTP/1.0 client asking for keep-alive is told it may reuse the connection, and can.
    let mut stream = connect(addr);
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        // The answer, read until its body (`ok\n`) has come: the connection stays open.
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        while !answer.ends_with(b"ok\n") && answer.len() < 4096 {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("Connection: keep-alive\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    }
    assert!(both.contains("Content-Length: 3\r\n"), "{both}");
}

/// `GET /metrics` carries the Prometheus content type.
#[test]
fn metrics_have_the_prometheus_content_type() {
    let daemon = daemon_with_metrics();
    let mut stream = connect(daemon.metrics_addr());
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE spliceway_connections_accepted_total counter"),
        "{body}"
    );
}

/// Issue 25: the standard process metrics and `spliceway_build_info`, read from /proc at
/// scrape time, agree with what /proc says of the daemon.
#[test]
fn process_metrics_have_plausible_values() {
    let daemon = daemon_with_metrics();
    let pid = daemon.child.id();
    let text = scrape(daemon.metrics_addr());
    let value =
        |name: &str| metric(&text, name, &[]).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    let resident = value("process_resident_memory_bytes");
    let rss = rss_kib(pid) as f64 * 1024.0;
    assert!(
        resident > f64::from(1 << 20) && (resident - rss).abs() < f64::from(16 << 20),
        "resident {resident} against VmRSS {rss}"
    );
    let open = value("process_open_fds");
    let fds = fds_of(pid) as f64;
    assert!((open - fds).abs() <= 4.0, "open fds {open} against {fds}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(value("process_max_fds"), soft);
    let cpu = value("process_cpu_seconds_total");
    assert!((0.0..60.0).contains(&cpu), "cpu {cpu}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "started {started}, now {now}"
    );
    assert_eq!(
        metric(
            &text,
            "spliceway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
}

/// Every metric family `/metrics` exports is in the table of docs/operations.md ("Metrics"),
/// and every metric the table names is exported.
#[test]
fn every_exported_metric_is_in_the_operations_table() {
    let daemon = daemon_with_metrics();
    let text = scrape(daemon.metrics_addr());
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let section = doc
        .split_once("\n## Metrics\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("a Metrics section");
    let documented: std::collections::BTreeSet<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert_eq!(
        exported, documented,
        "exported (left) against documented (right)"
    );
}
