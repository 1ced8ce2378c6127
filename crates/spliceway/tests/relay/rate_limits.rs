//! Bandwidth limits (`rate_limit`, `client_rate_limit`, `route_rate_limit`) and the per-client
//! connection limit. Rates are checked with generous bounds only where a bound cannot be
//! missed by a slow machine: a limit makes a transfer take *at least* `(bytes - burst) / rate`
//! (a bucket can never be faster), so that is asserted; how much longer it takes is left to
//! the benchmark (`docs/rate-limits.md`). Every transfer is checked by its hash.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use spliceway::{Mode, Rate, RateLimit, Relay, Route, StatsSnapshot};

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];
const BURST: u64 = 64 * 1024;

fn rate(bytes: u64) -> Option<Rate> {
    Rate::bytes_per_second(bytes)
}

/// A server that hashes what each connection sends and answers with `answer` bytes.
fn hashing_server(answer: u64) -> (Server, Received) {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    let server = Server::start(move |mut stream| {
        if let Ok(got) = read_hashed(&mut stream) {
            record.lock().unwrap().push(got);
            let _ = send_generated(&mut stream, 99, answer);
        }
    });
    (server, received)
}

/// Uploads `len` bytes of seed `seed` to `addr`, half-closes, reads the answer; returns the
/// time from connect to the answer's end and the answer.
fn upload(addr: SocketAddr, seed: u64, len: u64) -> (Duration, (u64, String)) {
    let start = Instant::now();
    let mut client = connect(addr);
    send_generated(&mut client, seed, len).unwrap();
    half_close(&client);
    let answer = read_hashed(&mut client).unwrap();
    (start.elapsed(), answer)
}

/// The shortest time `bytes` can take under `rate` bytes a second with `burst`.
fn at_least(bytes: u64, rate: u64, burst: u64) -> Duration {
    Duration::from_secs_f64(bytes.saturating_sub(burst) as f64 / rate as f64)
}

/// Uploads `up` bytes and downloads `down` through a route whose connections are limited by
/// `limit` (`rate` both ways), in both modes: checks the hashes, that it took at least the
/// floor of the limit with `burst` bytes let through at once each way, and that splice mode
/// copied nothing. Returns each mode's statistics once the connection closed.
fn limited_both_ways(
    limit: RateLimit,
    rate: u64,
    burst: u64,
    up: u64,
    down: u64,
) -> Vec<StatsSnapshot> {
    let mut all = Vec::new();
    for mode in MODES {
        let (server, received) = hashing_server(down);
        let relay = TestRelay::start(route_to(server.addr, mode).with_options(|o| {
            o.rate_limit = Some(limit);
        }));
        let (took, answer) = upload(relay.addr, 1, up);
        assert_eq!(answer, (down, expected_hash(99, down)), "{mode}: answer");
        assert_eq!(
            received.lock().unwrap().clone(),
            vec![(up, expected_hash(1, up))],
            "{mode}: upload"
        );
        let floor = at_least(up, rate, burst) + at_least(down, rate, burst);
        assert!(
            took >= floor,
            "{mode}: {took:?} < {floor:?}: the limit let too much through"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        if mode == Mode::Splice {
            assert_eq!(
                stats.bytes_copied, 0,
                "{mode}: a limited direction still splices"
            );
        }
        relay.stop();
        all.push(stats);
    }
    all
}

#[test]
fn a_connection_limit_holds_both_ways_in_both_modes_and_keeps_the_bytes_intact() {
    const RATE: u64 = 4_000_000; // 32 Mbit/s: at least 0.36 s up and 0.23 s down
    let limit = RateLimit::new(rate(RATE), rate(RATE)).with_burst(BURST);
    for stats in limited_both_ways(limit, RATE, BURST, 1_500_000, 1_000_000) {
        assert!(
            stats.bytes_held_back > 0 && stats.throttled_micros > 0,
            "the bucket counted it: {stats:?}"
        );
        assert_eq!(stats.kernel_paced, 0, "a named burst is the bucket's");
    }
}

/// A connection's own limit with no burst named and nothing shared limiting it is paced by the
/// kernel on each direction's sending socket (`SO_MAX_PACING_RATE`), not by the relay's
/// bucket: the limit holds, the bytes are intact, and splice stays zero copy.
#[test]
fn a_connection_limit_without_a_burst_is_paced_by_the_kernel_in_both_modes() {
    const RATE: u64 = 4_000_000; // at least 0.59 s up and 0.34 s down
    // TCP paces a connection from its 11th data segment on (`tcp_update_skb_after_send`): the
    // first ten leave at once, up to 64 KiB each on loopback.
    const FIRST: u64 = 10 * 64 * 1024;
    let limit = RateLimit::new(rate(RATE), rate(RATE));
    for stats in limited_both_ways(limit, RATE, FIRST, 3_000_000, 2_000_000) {
        assert_eq!(stats.kernel_paced, 2, "both directions paced: {stats:?}");
        assert_eq!(
            (stats.bytes_held_back, stats.throttled_micros),
            (0, 0),
            "the bucket did not count it too"
        );
    }
}

/// The relay's socket to `server`, as `ss` sees it.
fn relay_socket_to(server: SocketAddr) -> Option<SockStat> {
    tcp_sockets().into_iter().find(|s| s.peer == Some(server))
}

/// A reload sets the kernel's pacing on a connection already open, changes it, and lifts it.
#[test]
fn a_reload_paces_and_unpaces_connections_already_open() {
    const RATE: u64 = 200_000;
    let (server, received) = hashing_server(0);
    let route = route_to(server.addr, Mode::Splice);
    let relay = TestRelay::start(route.clone());
    let listen = relay.addr;
    let limited = |bytes| {
        Route::new("test", spliceway::UpstreamAddr::Ip(server.addr))
            .listen(listen)
            .with_options(move |o| {
                o.rate_limit = Some(RateLimit::new(rate(bytes), None));
            })
    };
    let pacing = || relay_socket_to(server.addr).and_then(|s| s.max_pacing_rate);
    // One stream of bytes sent in parts, hashed whole at the end.
    const TOTAL: usize = 2_130_000;
    let data = generated(7, TOTAL);
    let mut client = connect(listen);
    let mut sent = 0;
    let mut send = |client: &mut TcpStream, len: usize| {
        client.write_all(&data[sent..sent + len]).unwrap();
        sent += len;
        sent as u64
    };
    let total = send(&mut client, 100_000);
    relay.wait_for("the first bytes", |s| s.bytes_client_to_upstream >= total);
    assert_eq!(pacing(), None, "an unlimited connection is not paced");

    relay.handle.reload(vec![limited(RATE)], None).unwrap();
    send(&mut client, 10_000);
    relay.wait_for("pacing set", |s| s.kernel_paced == 1);
    assert_eq!(pacing(), Some(RATE), "the open connection is paced");

    relay.handle.reload(vec![limited(2 * RATE)], None).unwrap();
    send(&mut client, 10_000);
    assert!(
        wait_until(TEST_TIMEOUT, || pacing() == Some(2 * RATE)),
        "the new rate reaches the open connection: {:?}",
        pacing()
    );

    relay.handle.reload(vec![route], None).unwrap();
    send(&mut client, 10_000);
    assert!(
        wait_until(TEST_TIMEOUT, || relay_socket_to(server.addr)
            .is_some_and(|s| s.max_pacing_rate.is_none())),
        "the pacing is lifted: {:?}",
        relay_socket_to(server.addr)
    );
    let sent = send(&mut client, 0) as usize;
    send(&mut client, TOTAL - sent);
    half_close(&client);
    read_hashed(&mut client).unwrap();
    assert_eq!(
        received.lock().unwrap().clone(),
        vec![(TOTAL as u64, expected_hash(7, TOTAL as u64))]
    );
    assert_eq!(relay.handle.snapshot().stats.bytes_held_back, 0);
    relay.stop();
}

#[test]
fn a_route_limit_is_shared_by_every_connection_of_the_route() {
    const EACH: u64 = 600_000;
    const CONNECTIONS: u64 = 4;
    const RATE: u64 = 4_000_000;
    let (server, received) = hashing_server(0);
    let limit = RateLimit::new(rate(RATE), None).with_burst(BURST);
    let relay = TestRelay::start_with(
        Relay::builder()
            .route(route_to(server.addr, Mode::Splice).with_options(|o| {
                o.route_rate_limit = Some(limit);
            }))
            .threads(2),
    );
    let start = Instant::now();
    let uploads: Vec<_> = (0..CONNECTIONS)
        .map(|seed| {
            let addr = relay.addr;
            thread::spawn(move || upload(addr, seed, EACH))
        })
        .collect();
    for upload in uploads {
        upload.join().unwrap();
    }
    let took = start.elapsed();
    let floor = at_least(EACH * CONNECTIONS, RATE, BURST);
    assert!(
        took >= floor,
        "{took:?} < {floor:?}: the route's limit was not shared"
    );
    let mut got = received.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<_> = (0..CONNECTIONS)
        .map(|seed| (EACH, expected_hash(seed, EACH)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    relay.stop();
}

#[test]
fn a_client_limit_is_shared_by_the_connections_of_one_address() {
    const EACH: u64 = 600_000;
    const RATE: u64 = 4_000_000;
    let (server, received) = hashing_server(0);
    let limit = RateLimit::new(rate(RATE), None).with_burst(BURST);
    let relay = TestRelay::start(route_to(server.addr, Mode::Splice).with_options(|o| {
        o.client_rate_limit = Some(limit);
    }));
    let start = Instant::now();
    let uploads: Vec<_> = (0..3)
        .map(|seed| {
            let addr = relay.addr;
            thread::spawn(move || upload(addr, seed, EACH))
        })
        .collect();
    for upload in uploads {
        upload.join().unwrap();
    }
    let took = start.elapsed();
    let floor = at_least(3 * EACH, RATE, BURST);
    assert!(
        took >= floor,
        "{took:?} < {floor:?}: the client's limit was not shared"
    );
    assert_eq!(received.lock().unwrap().len(), 3);
    relay.stop();
}

/// A client at `max_connections_per_client` has its next connection reset at once; another
/// address (127.0.0.2) is not affected; a closed connection frees its place.
#[test]
fn a_client_at_its_connection_limit_is_refused_at_accept() {
    let server = echo_server();
    let relay = TestRelay::start(route_to(server.addr, Mode::Splice).max_connections_per_client(2));
    let first = connect(relay.addr);
    let second = connect(relay.addr);
    echo_round_trip_on(&first, b"one");
    echo_round_trip_on(&second, b"two");
    connect_expecting_reset(relay.addr, "the third connection of 127.0.0.1");
    relay.wait_for("the refusal counted", |s| s.client_limit_refused == 1);
    // Another client address is counted apart.
    let other = connect_from("127.0.0.2", relay.addr);
    echo_round_trip_on(&other, b"other");
    drop(first);
    relay.wait_for("the first connection closed", |s| s.closed >= 2);
    let again = connect(relay.addr);
    echo_round_trip_on(&again, b"again");
    let stats = relay.handle.snapshot().stats;
    assert_eq!(stats.client_limit_refused, 1, "{stats:?}");
    drop((second, other, again));
    relay.stop();
}

/// The client sends more than its limit lets through quickly, then half-closes: every byte
/// and then the end of stream reach the server, and the server's answer comes back.
#[test]
fn a_half_close_passes_after_the_throttled_bytes() {
    const UP: u64 = 800_000;
    for mode in MODES {
        let (server, received) = hashing_server(1000);
        let limit = RateLimit::new(rate(2_000_000), None).with_burst(BURST);
        let relay = TestRelay::start(route_to(server.addr, mode).with_options(|o| {
            o.rate_limit = Some(limit);
        }));
        let (_, answer) = upload(relay.addr, 5, UP);
        assert_eq!(answer, (1000, expected_hash(99, 1000)), "{mode}");
        assert_eq!(
            received.lock().unwrap().clone(),
            vec![(UP, expected_hash(5, UP))],
            "{mode}"
        );
        relay.stop();
    }
}

/// A client that resets while its direction waits for the limit: the reset reaches the
/// upstream at once, not after the bytes queued in the relay's socket have crawled through at
/// the limited rate (8 MiB at 256 KB/s would take half a minute).
#[test]
fn a_reset_passes_while_the_direction_is_throttled() {
    for mode in MODES {
        let ended: Arc<Mutex<Option<(Ending, Instant)>>> = Arc::new(Mutex::new(None));
        let record = Arc::clone(&ended);
        let server = Server::start(move |mut stream| {
            let ending = read_ending(&mut stream);
            *record.lock().unwrap() = Some((ending, Instant::now()));
        });
        let limit = RateLimit::new(rate(256_000), None).with_burst(BURST);
        let relay = TestRelay::start(route_to(server.addr, mode).with_options(|o| {
            o.rate_limit = Some(limit);
        }));
        let mut client = connect(relay.addr);
        client.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut queued = 0;
        // Fill what the kernel buffers (ours and the relay's) will take.
        while queued < 8 << 20 {
            match client.write(&chunk) {
                Ok(n) => queued += n,
                Err(_) => break,
            }
        }
        relay.wait_for("the direction throttled", |s| s.bytes_held_back > 0);
        let reset_at = Instant::now();
        reset(client);
        assert!(
            wait_until(TEST_TIMEOUT, || ended.lock().unwrap().is_some()),
            "{mode}: the server never saw the end"
        );
        let (ending, at) = ended.lock().unwrap().take().unwrap();
        assert!(
            matches!(ending, Ending::Reset(_)),
            "{mode}: the upstream saw {ending:?}, not a reset"
        );
        let after = at - reset_at;
        assert!(
            after < Duration::from_secs(5),
            "{mode}: the reset took {after:?} to pass ({queued} bytes were queued)"
        );
        relay.stop();
    }
}

/// A drain with a throttled connection ends within its drain timeout (the connection is
/// reset then), not when the slow transfer would have finished.
#[test]
fn a_drain_with_throttled_connections_ends_within_the_drain_timeout() {
    let (server, _received) = hashing_server(0);
    let limit = RateLimit::new(rate(100_000), None).with_burst(BURST);
    let relay = TestRelay::start(route_to(server.addr, Mode::Splice).with_options(|o| {
        o.rate_limit = Some(limit);
    }));
    let addr = relay.addr;
    let client = thread::spawn(move || {
        let mut client = connect(addr);
        // 20 MB at 100 kB/s: minutes, unless the drain ends it. The reset shows either as the
        // send failing or, if the send finished first, as the read's end.
        match send_generated(&mut client, 3, 20_000_000) {
            Err(e) => match e.kind() {
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    Ending::Reset(0)
                }
                _ => Ending::Other(0, e.to_string()),
            },
            Ok(_) => read_ending(&mut client),
        }
    });
    relay.wait_for("the direction throttled", |s| s.bytes_held_back > 0);
    relay
        .handle
        .shutdown_with(Duration::ZERO, Some(Duration::from_millis(300)));
    relay
        .join_within(Duration::from_secs(10))
        .expect("the relay stopped cleanly");
    let ending = client.join().unwrap();
    assert!(
        matches!(ending, Ending::Reset(_)),
        "the client saw {ending:?}"
    );
}

/// A reload that adds a limit reaches a connection already open.
#[test]
fn a_reload_limits_connections_already_open() {
    let (server, received) = hashing_server(0);
    let route = route_to(server.addr, Mode::Splice);
    let relay = TestRelay::start(route.clone());
    let listen = relay.addr;
    let mut client = connect(listen);
    send_generated(&mut client, 8, 1_000_000).unwrap();
    relay.wait_for("the first bytes", |s| s.bytes_client_to_upstream > 0);
    assert_eq!(relay.handle.snapshot().stats.bytes_held_back, 0);
    let limited = Route::new("test", spliceway::UpstreamAddr::Ip(server.addr))
        .listen(listen)
        .with_options(|o| {
            o.rate_limit = Some(RateLimit::new(rate(200_000), None).with_burst(BURST));
        });
    relay.handle.reload(vec![limited], None).unwrap();
    let sender = thread::spawn(move || {
        let _ = send_generated(&mut client, 9, 2_000_000);
        half_close(&client);
        read_hashed(&mut client)
    });
    relay.wait_for("the open connection held back", |s| s.bytes_held_back > 0);
    relay.handle.reload(vec![route], None).unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(received.lock().unwrap()[0].0, 3_000_000);
    relay.stop();
}

/// Sends `message` on `stream` and reads it back.
fn echo_round_trip_on(mut stream: &TcpStream, message: &[u8]) {
    use std::io::Read;
    stream.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

/// A connection to `addr` from the local address `ip`.
fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(ip.parse().unwrap(), 0).into())
        .unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
}
