//! `RelayHandle::connections` lists UDP sessions too: each with its route, client, upstream and
//! traffic each way; the filter (route, client network) and the limit apply, a filter of TCP
//! connection ids selects none; once the relay has stopped, a listing answers at once.
//! `RelayHandle::end_udp_sessions` ends the sessions a filter selects.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spliceway::observe::{ConnectionFilter, ConnectionList, ConnectionQuery, ObserveError, SortBy};

use super::{Echo, TEST_TIMEOUT, TestRelay, ask, client, options, udp_route};

fn list(relay: &TestRelay, filter: ConnectionFilter, limit: Option<usize>) -> ConnectionList {
    relay
        .handle
        .connections(&ConnectionQuery::new(filter, SortBy::Bytes, limit))
        .expect("the workers answer")
}

#[test]
fn the_listing_shows_each_udp_session_with_its_traffic_and_follows_the_filter() {
    let dns_upstream = Echo::start("127.0.0.1:0");
    let ntp_upstream = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start_all(vec![
        udp_route("dns", "127.0.0.1:0", dns_upstream.addr, idle.clone()),
        udp_route("ntp", "127.0.0.1:0", ntp_upstream.addr, idle),
    ]);
    let addr = |route: &str| -> SocketAddr {
        relay
            .handle
            .local_addrs()
            .into_iter()
            .find(|(name, _)| name == route)
            .map(|(_, a)| a)
            .unwrap()
    };
    let (dns, ntp) = (addr("dns"), addr("ntp"));
    // Three clients: two of the DNS route (from two loopback addresses), one of the NTP route.
    let (a, b, c) = (
        client("127.0.0.1:0"),
        client("127.0.0.2:0"),
        client("127.0.0.1:0"),
    );
    for _ in 0..3 {
        assert_eq!(ask(&a, dns, &[7; 100]), [7; 100]);
    }
    for _ in 0..2 {
        assert_eq!(ask(&b, dns, &[8; 40]), [8; 40]);
    }
    assert_eq!(ask(&c, ntp, &[9; 10]), [9; 10]);

    // A request sent again (loopback may drop one) is answered twice: wait for every answer.
    let start = Instant::now();
    let all = loop {
        let all = list(&relay, ConnectionFilter::all(), None);
        if all.udp_sessions.len() == 3
            && all
                .udp_sessions
                .iter()
                .all(|s| s.datagrams_down == s.datagrams_up)
        {
            break all;
        }
        assert!(start.elapsed() < TEST_TIMEOUT, "{all:#?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(all.connections.is_empty(), "no TCP connection: {all:#?}");
    assert_eq!(all.udp_matched, 3);
    let expected = [
        ("dns", &a, dns_upstream.addr, 100, 3),
        ("dns", &b, dns_upstream.addr, 40, 2),
        ("ntp", &c, ntp_upstream.addr, 10, 1),
    ];
    // Most bytes first: a's, b's, c's.
    for (session, (route, socket, upstream, size, at_least)) in
        all.udp_sessions.iter().zip(expected)
    {
        assert_eq!(session.route, route);
        assert_eq!(session.client, socket.local_addr().unwrap());
        assert_eq!(session.upstream, upstream);
        assert!(session.datagrams_up >= at_least, "{session:#?}");
        assert_eq!(session.bytes_up, size * session.datagrams_up);
        assert_eq!(session.bytes_down, size * session.datagrams_down);
        assert!(session.idle <= session.age, "{session:#?}");
    }

    let ntp_only = list(&relay, ConnectionFilter::all().route("ntp"), None);
    assert_eq!(ntp_only.udp_matched, 1);
    assert_eq!(ntp_only.udp_sessions[0].client, c.local_addr().unwrap());
    let b_only = list(
        &relay,
        ConnectionFilter::all().client("127.0.0.2/32".parse().unwrap()),
        None,
    );
    assert_eq!(b_only.udp_matched, 1);
    assert_eq!(b_only.udp_sessions[0].client, b.local_addr().unwrap());
    let by_id = list(&relay, ConnectionFilter::ids(vec![1, 2, 3]), None);
    assert!(by_id.udp_sessions.is_empty(), "ids name TCP connections");
    assert_eq!(by_id.udp_matched, 0);
    let first = list(&relay, ConnectionFilter::all(), Some(1));
    assert_eq!(first.udp_matched, 3);
    assert_eq!(first.udp_sessions.len(), 1);
    assert_eq!(first.udp_sessions[0].client, a.local_addr().unwrap());
}

/// The UDP worker has stopped with the relay: a listing must not wait for an answer that
/// cannot come (it would end in `ObserveError::NoAnswer`).
#[test]
fn a_listing_after_the_relay_stopped_is_answered() {
    let upstream = Echo::start("127.0.0.1:0");
    let relay = TestRelay::start(udp_route(
        "dns",
        "127.0.0.1:0",
        upstream.addr,
        options(Duration::from_secs(60)),
    ));
    let handle = relay.handle.clone();
    assert_eq!(ask(&client("127.0.0.1:0"), relay.addr, b"q"), b"q");
    handle.shutdown_now();
    relay.join().expect("the relay stops cleanly");
    let after = handle
        .connections(&ConnectionQuery::new(
            ConnectionFilter::all(),
            SortBy::Age,
            None,
        ))
        .expect("answered without the stopped workers");
    assert!(after.udp_sessions.is_empty() && after.connections.is_empty());
}

/// The case `end_udp_sessions` is for: after a reload changed a route's upstream, open
/// sessions keep the old one until they idle out; ending them moves their clients to the new
/// upstream at their next datagram. Only the selected sessions end, each counted; a filter
/// that selects nothing in particular is refused.
#[test]
fn ending_sessions_sends_their_clients_to_the_upstream_a_reload_gave() {
    let old = Echo::start("127.0.0.1:0");
    let new = Echo::start("127.0.0.1:0");
    let idle = options(Duration::from_secs(60));
    let relay = TestRelay::start(udp_route("dns", "127.0.0.1:0", old.addr, idle.clone()));
    let (a, b) = (client("127.0.0.1:0"), client("127.0.0.2:0"));
    assert_eq!(ask(&a, relay.addr, b"a1"), b"a1");
    assert_eq!(ask(&b, relay.addr, b"b1"), b"b1");
    relay
        .handle
        .reload(vec![udp_route("dns", "127.0.0.1:0", new.addr, idle)], None)
        .expect("reload");
    let upstream_of = |socket: &std::net::UdpSocket| {
        let me = socket.local_addr().unwrap();
        list(&relay, ConnectionFilter::all(), None)
            .udp_sessions
            .into_iter()
            .find(|s| s.client == me)
            .map(|s| s.upstream)
    };
    assert_eq!(upstream_of(&a), Some(old.addr), "kept across the reload");

    assert_eq!(
        relay
            .handle
            .end_udp_sessions(&ConnectionFilter::all(), "test"),
        Err(ObserveError::Unselective)
    );
    let ended = relay
        .handle
        .end_udp_sessions(
            &ConnectionFilter::all().client("127.0.0.1/32".parse().unwrap()),
            "test",
        )
        .expect("answered");
    assert_eq!(ended, vec![("dns".to_string(), a.local_addr().unwrap())]);
    assert_eq!(upstream_of(&a), None, "a's session ended");
    assert_eq!(upstream_of(&b), Some(old.addr), "b's session goes on");
    let stats = relay.stats();
    assert_eq!(stats.udp_operator_ends, 1);
    assert_eq!(stats.udp_sessions_ended, 1);

    assert_eq!(ask(&a, relay.addr, b"a2"), b"a2");
    assert_eq!(
        upstream_of(&a),
        Some(new.addr),
        "a new session, to the new upstream"
    );
    assert_eq!(relay.stats().udp_sessions_started, 3);
}
