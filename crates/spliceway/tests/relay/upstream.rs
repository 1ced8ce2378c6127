use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spliceway::{Mode, Relay, Route, UpstreamAddr};

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

fn named_route(name: &str, upstream: &str, mode: Mode) -> Route {
    Route::new(name, UpstreamAddr::parse(upstream).unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .with_options(|o| o.mode = mode)
}

/// An echo server that counts the connections it took.
fn counting_echo_server(count: Arc<AtomicU64>) -> Server {
    Server::start(move |mut stream| {
        count.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        if stream.read_to_end(&mut buf).is_ok() {
            let _ = stream.write_all(&buf);
        }
    })
}

/// An upstream that refuses connections: the client is reset promptly, the failure is counted,
/// and the relay goes on serving its other route.
#[test]
fn refused_upstream_resets_the_client_promptly() {
    for mode in MODES {
        let live = echo_server();
        let dead = dead_addr();
        let builder = Relay::builder().route(route_to(dead, mode)).route(
            Route::new("live", UpstreamAddr::Ip(live.addr))
                .listen("127.0.0.1:0".parse().unwrap())
                .with_options(|o| o.mode = mode),
        );
        let relay = TestRelay::start_with(builder);

        let started = Instant::now();
        connect_expecting_reset(relay.addr, &format!("{mode}: client of a refused upstream"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{mode}: reset only after {took:?}"
        );

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().route("test").unwrap().stats;
        assert_eq!(stats.upstream_unavailable, 1, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_connect_failures, 1, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_connects, 0, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode}: {stats:?}");

        echo_round_trip(relay.addr_of("live"), b"the other route still works");
        relay.wait_closed(2);
        assert_eq!(
            relay
                .handle
                .snapshot()
                .route("live")
                .unwrap()
                .stats
                .completed,
            1,
            "{mode}"
        );
        relay.stop();
    }
}

/// A name resolving to two live servers: connections are spread across both.
#[test]
fn connections_are_spread_over_every_resolved_address() {
    const CONNECTIONS: u64 = 20;
    for mode in MODES {
        let (count_a, count_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let a = counting_echo_server(Arc::clone(&count_a));
        let b = counting_echo_server(Arc::clone(&count_b));
        let (addr_a, addr_b) = (a.addr, b.addr);
        let builder = Relay::builder()
            .route(named_route("multi", "multi.test:443", mode))
            .resolver(move |host, port| {
                assert_eq!(
                    (host, port),
                    ("multi.test", 443),
                    "what the resolver is asked"
                );
                Ok(vec![addr_a, addr_b])
            });
        let relay = TestRelay::start_with(builder);
        for i in 0..CONNECTIONS {
            echo_round_trip(relay.addr, format!("connection {i}").as_bytes());
        }
        relay.wait_closed(CONNECTIONS);
        let (on_a, on_b) = (
            count_a.load(Ordering::SeqCst),
            count_b.load(Ordering::SeqCst),
        );
        assert_eq!(on_a + on_b, CONNECTIONS, "{mode}");
        assert!(on_a >= 5 && on_b >= 5, "{mode}: spread {on_a} / {on_b}");
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, CONNECTIONS, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_connect_failures, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// A name resolving to a dead address and a live one: every connection gets through, the dead
/// address costing at most one failed attempt per connection.
#[test]
fn failover_from_a_dead_address_to_a_live_one() {
    const CONNECTIONS: u64 = 10;
    for mode in MODES {
        let count = Arc::new(AtomicU64::new(0));
        let live = counting_echo_server(Arc::clone(&count));
        let dead = dead_addr();
        let live_addr = live.addr;
        let builder = Relay::builder()
            .route(named_route("failover", "failover.test:443", mode))
            .resolver(move |_, _| Ok(vec![dead, live_addr]));
        let relay = TestRelay::start_with(builder);
        for i in 0..CONNECTIONS {
            echo_round_trip(relay.addr, format!("failover {i}").as_bytes());
        }
        relay.wait_closed(CONNECTIONS);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(count.load(Ordering::SeqCst), CONNECTIONS, "{mode}");
        assert_eq!(stats.completed, CONNECTIONS, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_unavailable, 0, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_connects, CONNECTIONS, "{mode}: {stats:?}");
        // The first address tried rotates, so some connections start on the dead one.
        assert!(
            (1..=CONNECTIONS).contains(&stats.upstream_connect_failures),
            "{mode}: {stats:?}"
        );
        relay.stop();
    }
}

/// A route whose name resolves to the relay's own listening address: refused, not looped.
#[test]
fn upstream_resolving_to_the_relay_itself_is_refused() {
    for mode in MODES {
        // Bind the route to a port known beforehand, so the resolver can answer with it.
        let mut attempt = 0;
        let relay = loop {
            attempt += 1;
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            let own: SocketAddr = probe.local_addr().unwrap();
            drop(probe);
            let route = Route::new("loop", UpstreamAddr::parse("loop.test:443").unwrap())
                .listen(own)
                .with_options(|o| o.mode = mode);
            let built = Relay::builder()
                .route(route)
                .resolver(move |_, _| Ok(vec![own]))
                .build();
            match built {
                Ok(relay) => break relay,
                Err(spliceway::Error::Bind { .. }) if attempt < 5 => continue,
                Err(e) => panic!("relay builds: {e}"),
            }
        };
        let handle = relay.handle();
        let addr = relay.local_addrs()[0].1;
        let thread = std::thread::spawn(move || relay.run());

        for _ in 0..2 {
            connect_expecting_reset(addr, &format!("{mode}: client of a self-looping route"));
        }
        assert!(
            wait_until(TEST_TIMEOUT, || {
                let s = handle.snapshot().stats;
                s.closed == 2 && ends_counted(&s) == 2
            }),
            "timed out waiting for both connections closed and counted"
        );
        // Let a loop, if there were one, show up in the counters.
        std::thread::sleep(Duration::from_millis(100));
        let stats = handle.snapshot().stats;
        assert!(stats.self_loops >= 2, "{mode}: {stats:?}");
        assert_eq!(
            stats.accepted, 2,
            "{mode}: no connection from the relay to itself: {stats:?}"
        );
        assert_eq!(stats.upstream_unavailable, 2, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_connects, 0, "{mode}: {stats:?}");
        handle.shutdown_now();
        thread.join().unwrap().unwrap();
    }
}

/// A lookup that takes 2 s for one route must not hold up the other routes' connections: it
/// runs off the event loop (one worker here).
#[test]
fn slow_resolution_does_not_block_the_event_loop() {
    let echo = echo_server();
    let echo_addr = echo.addr;
    let armed = Arc::new(AtomicBool::new(false));
    let slow_started = Arc::new(AtomicBool::new(false));
    let (armed2, started2) = (Arc::clone(&armed), Arc::clone(&slow_started));
    let mut slow = named_route("slow", "slow.test:443", Mode::Splice);
    let mut options = slow.connection_options().clone();
    // Resolve for every connection: the answer given at build time is not reused.
    options.resolve_cache_ttl = Duration::ZERO;
    slow = slow.options(options);
    let builder = Relay::builder()
        .threads(1)
        .route(slow)
        .route(named_route("fast", "fast.test:443", Mode::Splice))
        .resolver(move |host, _| {
            if host == "slow.test" && armed2.load(Ordering::SeqCst) {
                started2.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(vec![echo_addr])
        });
    let relay = TestRelay::start_with(builder);
    armed.store(true, Ordering::SeqCst);

    let slow_addr = relay.addr_of("slow");
    let slow_client = std::thread::spawn(move || {
        let started = Instant::now();
        echo_round_trip(slow_addr, b"slow");
        started.elapsed()
    });
    assert!(
        wait_until(TEST_TIMEOUT, || { slow_started.load(Ordering::SeqCst) }),
        "timed out waiting for the slow lookup under way"
    );
    let started = Instant::now();
    echo_round_trip(relay.addr_of("fast"), b"fast");
    let fast = started.elapsed();
    assert!(
        fast < Duration::from_millis(1500),
        "a fast-route round trip took {fast:?} while another route's lookup was slow"
    );
    let slow = slow_client.join().unwrap();
    assert!(
        slow >= Duration::from_millis(1500),
        "the slow route took only {slow:?}"
    );
    relay.wait_closed(2);
    let stats = relay.handle.snapshot().stats;
    assert_eq!(stats.completed, 2, "{stats:?}");
    relay.stop();
}

/// A name that does not resolve fails the build, and the error names the upstream.
#[test]
fn unresolvable_upstream_fails_the_build() {
    for (name, answer) in [
        ("nowhere.test", Err(io::ErrorKind::NotFound)),
        ("empty.test", Ok(())),
    ] {
        let result = Relay::builder()
            .route(named_route("r", &format!("{name}:8443"), Mode::Splice))
            .resolver(move |_, _| match answer {
                Err(kind) => Err(io::Error::new(kind, "no such host (test resolver)")),
                Ok(()) => Ok(Vec::new()),
            })
            .build();
        match result {
            Err(e @ spliceway::Error::Resolve { .. }) => {
                let spliceway::Error::Resolve { upstream, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(upstream, &format!("{name}:8443"));
                let message = e.to_string();
                assert!(message.contains(&format!("{name}:8443")), "{message}");
            }
            Err(e) => panic!("{name}: expected a resolve error, got {e}"),
            Ok(_) => panic!("{name}: the relay built with an unresolvable upstream"),
        }
    }
}

/// The congestion control a socket found by `ss` filter uses, from the second line of
/// `ss -tin` (e.g. `ts sack reno wscale:7,7 ...`); `None` without `ss` or without a match.
fn congestion_seen_by_ss(filter: &str, names: &[&str]) -> Option<String> {
    let output = std::process::Command::new("ss")
        .args(["-tinH", "state", "established", filter])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find(|word| names.contains(word))
        .map(str::to_string)
}

/// `congestion` is set on both of the relay's sockets: the accepted one (its local port is the
/// relay's) and the upstream one (its peer port is the server's).
#[test]
fn congestion_control_is_set_on_both_sockets() {
    if std::process::Command::new("ss").arg("-V").output().is_err() {
        eprintln!("skipped: `ss` (iproute2) is not installed");
        return;
    }
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    // reno is built into every kernel; pick it unless it is already the system default.
    let wanted = if system.trim() == "reno" {
        "cubic"
    } else {
        "reno"
    };
    let names = ["reno", "cubic", "bbr", system.trim()];
    let server = echo_server();
    let mut options = spliceway::ConnectionOptions::default();
    options.congestion = Some(wanted.to_string());
    let relay = TestRelay::start(route_to(server.addr, Mode::Splice).options(options));
    let mut stream = connect(relay.addr);
    stream.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    let accepted = congestion_seen_by_ss(&format!("( sport = :{} )", relay.addr.port()), &names);
    let upstream = congestion_seen_by_ss(&format!("( dport = :{} )", server.addr.port()), &names);
    assert_eq!(
        accepted.as_deref(),
        Some(wanted),
        "the relay's accepted socket"
    );
    assert_eq!(
        upstream.as_deref(),
        Some(wanted),
        "the relay's upstream socket"
    );
    // The test's own client socket keeps the system default: the option is the relay's only.
    let client = congestion_seen_by_ss(&format!("( dport = :{} )", relay.addr.port()), &names);
    assert_eq!(
        client.as_deref(),
        Some(system.trim()),
        "the client's own socket"
    );
    drop(stream);
    relay.stop();
}
