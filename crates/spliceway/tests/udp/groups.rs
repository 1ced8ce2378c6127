//! UDP routes with several upstreams: sessions spread by the group's balance, each counted
//! open on its upstream while it lasts; an upstream that answers with ICMP errors is marked
//! down by passive health and new sessions go to the others (a backup only then); a reload
//! that keeps the group keeps that mark. The upstreams' state is read from the relay's
//! snapshot, as `spliceway status` shows it.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use spliceway::{
    Balance, PassiveHealth, Protocol, Route, UpstreamAddr, UpstreamGroup, UpstreamServer,
};

use super::{Echo, TEST_TIMEOUT, TestRelay, ask, client, options};

/// A UDP route on loopback to `group`, with a long idle timeout.
fn group_route(name: &str, group: UpstreamGroup) -> Route {
    Route::group(name, group)
        .listen("127.0.0.1:0".parse().unwrap())
        .protocol(Protocol::Udp)
        .udp_options(options(Duration::from_secs(60)))
}

fn server(addr: SocketAddr) -> UpstreamServer {
    UpstreamServer::new(UpstreamAddr::Ip(addr))
}

/// A port nobody listens on: the kernel answers datagrams to it with ICMP port unreachable.
fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Each upstream's (sessions in all, open now, failures, up), in the group's order.
fn upstreams(relay: &TestRelay) -> Vec<(u64, usize, u64, bool)> {
    relay.handle.snapshot().routes[0]
        .upstreams
        .iter()
        .map(|u| (u.connections, u.open_connections, u.connect_failures, u.up))
        .collect()
}

#[test]
fn sessions_spread_by_weighted_round_robin_and_count_open_on_their_upstream() {
    let (a, b) = (Echo::start("127.0.0.1:0"), Echo::start("127.0.0.1:0"));
    let group = UpstreamGroup::new(vec![server(a.addr).weight(3), server(b.addr)]);
    let relay = TestRelay::start(group_route("dns", group));
    // Eight clients, one after the other: weights 3 and 1 give six sessions and two.
    let clients: Vec<UdpSocket> = (0..8).map(|_| client("127.0.0.1:0")).collect();
    for (i, socket) in clients.iter().enumerate() {
        let question = format!("question {i}");
        assert_eq!(
            ask(socket, relay.addr, question.as_bytes()),
            question.as_bytes()
        );
    }
    assert_eq!(
        upstreams(&relay),
        vec![(6, 6, 0, true), (2, 2, 0, true)],
        "(sessions, open, failures, up) per upstream"
    );
    // Each client keeps its session, and so its upstream: no new session for a second ask.
    for (i, socket) in clients.iter().enumerate() {
        let again = format!("again {i}");
        assert_eq!(ask(socket, relay.addr, again.as_bytes()), again.as_bytes());
    }
    assert_eq!(relay.stats().udp_sessions_started, 8);
    // Ended sessions no longer count as open.
    let ended = relay
        .handle
        .end_udp_sessions(
            &spliceway::observe::ConnectionFilter::all().route("dns"),
            "the test",
        )
        .expect("the worker answers");
    assert_eq!(ended.len(), 8);
    let start = Instant::now();
    while upstreams(&relay).iter().any(|u| u.1 != 0) {
        assert!(
            start.elapsed() < TEST_TIMEOUT,
            "sessions still open: {:?}",
            upstreams(&relay)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn client_hash_keeps_every_session_of_one_address_on_one_upstream() {
    let (a, b) = (Echo::start("127.0.0.1:0"), Echo::start("127.0.0.1:0"));
    let group =
        UpstreamGroup::new(vec![server(a.addr), server(b.addr)]).balance(Balance::ClientHash);
    let relay = TestRelay::start(group_route("dns", group));
    // Four sessions from one address (four ports), then four from another.
    for ip in ["127.0.0.2", "127.0.0.3"] {
        for k in 0..4 {
            let socket = client(&format!("{ip}:0"));
            assert_eq!(ask(&socket, relay.addr, b"q"), b"q", "{ip} #{k}");
        }
    }
    let sessions: Vec<u64> = upstreams(&relay).iter().map(|u| u.0).collect();
    assert_eq!(sessions.iter().sum::<u64>(), 8);
    assert!(
        sessions.iter().all(|&n| n % 4 == 0),
        "each address's four sessions on one upstream: {sessions:?}"
    );
}

#[test]
fn an_upstream_that_answers_with_icmp_errors_is_marked_down_and_the_backup_takes_over() {
    let closed = closed_port();
    let backup = Echo::start("127.0.0.1:0");
    let group = UpstreamGroup::new(vec![server(closed), server(backup.addr).backup(true)])
        .passive_health(PassiveHealth::new(2, Duration::from_secs(300)));
    let relay = TestRelay::start(group_route("dns", group.clone()));
    // While the primary is up, sessions go to it and end at its ICMP error; `ask` sends again
    // when no answer comes, so each client opens sessions until one reaches the backup.
    let socket = client("127.0.0.1:0");
    assert_eq!(ask(&socket, relay.addr, b"anyone?"), b"anyone?");
    let state = upstreams(&relay);
    assert_eq!(
        state[0].2, 2,
        "two ICMP errors counted against the primary: {state:?}"
    );
    assert!(!state[0].3, "the primary is marked down: {state:?}");
    assert_eq!(state[0].0, 2, "two sessions went to the primary: {state:?}");
    assert_eq!(
        (state[1].0, state[1].3),
        (1, true),
        "then one to the backup: {state:?}"
    );
    assert!(relay.stats().udp_upstream_unreachable >= 2);
    // New clients go straight to the backup while the mark lasts.
    for _ in 0..3 {
        let socket = client("127.0.0.1:0");
        assert_eq!(ask(&socket, relay.addr, b"q"), b"q");
    }
    let state = upstreams(&relay);
    assert_eq!((state[0].0, state[1].0), (2, 4), "{state:?}");
    // A reload that keeps the group (a longer idle timeout) keeps the mark.
    let mut reloaded = group_route("dns", group);
    reloaded = reloaded
        .listen(relay.addr)
        .udp_options(options(Duration::from_secs(120)));
    relay
        .handle
        .reload(vec![reloaded], None)
        .expect("the reload applies");
    let socket = client("127.0.0.1:0");
    assert_eq!(ask(&socket, relay.addr, b"after"), b"after");
    let state = upstreams(&relay);
    assert!(!state[0].3, "still down after the reload: {state:?}");
    assert_eq!((state[0].0, state[1].0), (2, 5), "{state:?}");
}
