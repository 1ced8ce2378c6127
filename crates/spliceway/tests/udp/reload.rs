//! Reloads that add, remove and move UDP routes, as TCP routes reload: new addresses are bound
//! before anything changes, addresses that stay keep their socket (and their sessions), and
//! the sessions of an address that closes end, counted.

use super::*;

/// The address `route` listens on (its first).
fn addr_of(handle: &RelayHandle, route: &str) -> SocketAddr {
    handle
        .local_addrs()
        .into_iter()
        .find(|(name, _)| name == route)
        .unwrap_or_else(|| panic!("route {route} does not listen"))
        .1
}

/// Hashed datagrams of several sizes from `clients` new clients through `to`: each client gets
/// back exactly what it sent.
fn hashed_round_trips(to: SocketAddr, clients: usize) {
    for c in 0..clients {
        let socket = client("127.0.0.1:0");
        for (seq, len) in [1, 700, 1400, 9000].into_iter().enumerate() {
            let data = payload(c, seq, len);
            let answer = ask(&socket, to, &data);
            assert_eq!(
                Sha256::digest(&answer),
                Sha256::digest(&data),
                "client {c}, {len} bytes through {to}"
            );
        }
    }
}

/// Waits until a client connected to `addr` hears that nothing listens there (ICMP port
/// unreachable: `ECONNREFUSED`), sending again while it does not.
fn wait_refused(addr: SocketAddr) {
    let socket = client("127.0.0.1:0");
    socket.connect(addr).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        let sent = socket.send(b"anyone?");
        let refused = match sent {
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            Ok(_) => matches!(
                socket.recv(&mut buf),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            ),
        };
        if refused {
            return;
        }
        assert!(
            start.elapsed() < TEST_TIMEOUT,
            "{addr} still takes datagrams"
        );
    }
}

#[test]
fn a_reload_adds_a_udp_route_that_relays_hashed_datagrams() {
    let echo = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start(udp_route("a", "127.0.0.1:0", echo.addr, idle.clone()));
    let early = client("127.0.0.1:0");
    assert_eq!(ask(&early, relay.addr, b"before"), b"before");

    let summary = relay
        .handle
        .reload(
            vec![
                udp_route("a", "127.0.0.1:0", echo.addr, idle.clone()),
                udp_route("b", "127.0.0.1:0", echo.addr, idle),
            ],
            None,
        )
        .expect("reload");
    assert_eq!(summary.added, vec!["b".to_string()]);
    assert_eq!(summary.unchanged, vec!["a".to_string()]);
    let b = addr_of(&relay.handle, "b");
    assert_ne!(b, relay.addr);
    hashed_round_trips(b, 3);
    let snapshot = relay.handle.snapshot();
    assert_eq!(snapshot.route("b").unwrap().stats.udp_sessions_started, 3);
    // Route a kept its socket and its session: the early client is still the one session.
    assert_eq!(ask(&early, relay.addr, b"after"), b"after");
    assert_eq!(
        relay
            .handle
            .snapshot()
            .route("a")
            .unwrap()
            .stats
            .udp_sessions_started,
        1
    );
}

#[test]
fn a_reload_that_removes_a_udp_route_closes_its_port_and_ends_its_sessions() {
    let echo = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start_all(vec![
        udp_route("a", "127.0.0.1:0", echo.addr, idle.clone()),
        udp_route("b", "127.0.0.1:0", echo.addr, idle.clone()),
    ]);
    let b = addr_of(&relay.handle, "b");
    let on_a = client("127.0.0.1:0");
    assert_eq!(ask(&on_a, relay.addr, b"a"), b"a");
    let on_b: Vec<UdpSocket> = (0..2).map(|_| client("127.0.0.1:0")).collect();
    for socket in &on_b {
        assert_eq!(ask(socket, b, b"b"), b"b");
    }
    relay.wait_for("three sessions", |s| s.udp_sessions_started == 3);

    let summary = relay
        .handle
        .reload(vec![udp_route("a", "127.0.0.1:0", echo.addr, idle)], None)
        .expect("reload");
    assert_eq!(summary.removed, vec!["b".to_string()]);
    relay.wait_for("b's two sessions ended", |s| {
        s.udp_drain_ends == 2 && s.udp_sessions_ended == 2
    });
    wait_refused(b);
    assert!(relay.handle.snapshot().route("b").is_none());
    assert_eq!(relay.handle.snapshot().udp_sessions, 1, "a's session stays");
    assert_eq!(ask(&on_a, relay.addr, b"still"), b"still");
    assert_eq!(relay.stats().udp_sessions_started, 3, "the same session");
}

#[test]
fn a_reload_that_would_bind_a_taken_port_is_refused_and_the_old_routes_keep_serving() {
    let echo = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start(udp_route("a", "127.0.0.1:0", echo.addr, idle.clone()));
    let early = client("127.0.0.1:0");
    assert_eq!(ask(&early, relay.addr, b"1"), b"1");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();

    // Route a moves to a new port as well: that bind succeeds, then b's fails; neither counts.
    let refused = relay.handle.reload(
        vec![
            udp_route("a", "127.0.0.1:0", echo.addr, idle.clone())
                .listen("127.0.0.2:0".parse().unwrap()),
            udp_route("b", &taken_addr.to_string(), echo.addr, idle),
        ],
        None,
    );
    assert!(
        matches!(refused, Err(Error::Bind { addr, .. }) if addr == taken_addr),
        "{refused:?}"
    );
    assert_eq!(
        relay.handle.local_addrs(),
        vec![("a".to_string(), relay.addr)],
        "the running routes stay as they were"
    );
    assert_eq!(
        ask(&early, relay.addr, b"2"),
        b"2",
        "an open session goes on"
    );
    let late = client("127.0.0.1:0");
    assert_eq!(ask(&late, relay.addr, b"3"), b"3", "a new one starts");
    let stats = relay.stats();
    assert_eq!(stats.udp_sessions_started, 2);
    assert_eq!(stats.udp_sessions_ended, 0);
    drop(taken);
}

#[test]
fn a_tcp_only_relay_gets_a_udp_route_by_reload() {
    let echo = Echo::start("127.0.0.1:0");
    let tcp = || {
        Route::new("tcp", UpstreamAddr::Ip("127.0.0.1:9".parse().unwrap()))
            .listen("127.0.0.1:0".parse().unwrap())
    };
    let relay = TestRelay::start(tcp());
    let summary = relay
        .handle
        .reload(
            vec![
                tcp(),
                udp_route("udp", "127.0.0.1:0", echo.addr, UdpOptions::default()),
            ],
            None,
        )
        .expect("reload");
    assert_eq!(summary.added, vec!["udp".to_string()]);
    hashed_round_trips(addr_of(&relay.handle, "udp"), 2);
    assert_eq!(relay.handle.snapshot().udp_sessions, 2);
}

#[test]
fn a_reload_that_moves_a_udp_route_keeps_the_address_that_stays_and_its_sessions() {
    let echo = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start(udp_route("a", "127.0.0.1:0", echo.addr, idle.clone()));
    let first = relay.addr;
    let on_first = client("127.0.0.1:0");
    assert_eq!(ask(&on_first, first, b"1"), b"1");

    // A second address: the first keeps its socket, port and session.
    let both = udp_route("a", &first.to_string(), echo.addr, idle.clone())
        .listen("127.0.0.1:0".parse().unwrap());
    let summary = relay.handle.reload(vec![both], None).expect("reload");
    assert_eq!(summary.changed, vec!["a".to_string()]);
    let addrs: Vec<SocketAddr> = relay
        .handle
        .local_addrs()
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], first);
    let second = addrs[1];
    assert_eq!(ask(&on_first, first, b"2"), b"2");
    let on_second = client("127.0.0.1:0");
    assert_eq!(ask(&on_second, second, b"3"), b"3");
    assert_eq!(
        relay.stats().udp_sessions_started,
        2,
        "no new session on the first"
    );

    // Only the second address: the first closes, its session ends; the second's goes on.
    let moved = udp_route("a", &second.to_string(), echo.addr, idle);
    relay.handle.reload(vec![moved], None).expect("reload");
    relay.wait_for("the first address's session ended", |s| {
        s.udp_drain_ends == 1
    });
    wait_refused(first);
    assert_eq!(ask(&on_second, second, b"4"), b"4");
    assert_eq!(relay.stats().udp_sessions_started, 2);
}
