//! `upstream = "original-destination"` behind nftables REDIRECT and TPROXY.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use spliceway::{ConnectionOptions, Route, Source};

use crate::topology::addr::{self, at};
use crate::topology::{
    HashServer, RunningRelay, TlsServer, Topology, connect_from, curl_sha256, exchange, have_curl,
    listen_both, refused,
};

const UPLOAD: usize = 1 << 20;
const REPLY: usize = 256 << 10;

/// The relay's interception routes: REDIRECT to 15001, TPROXY to a transparent 15002,
/// REDIRECT to 15003 with the client's address as the source.
fn routes() -> Vec<Route> {
    let with = |name: &str, port: u16, set: fn(&mut ConnectionOptions)| {
        let mut options = ConnectionOptions::default();
        options.connect_timeout = std::time::Duration::from_secs(2);
        set(&mut options);
        let mut route = Route::original_destination(name, addr::upstream_allow()).options(options);
        for listen in listen_both(port) {
            route = route.listen(listen);
        }
        route
    };
    vec![
        with("redirect", 15001, |_| {}),
        with("tproxy", 15002, |o| o.transparent = true),
        with("source-client", 15003, |o| o.source = Source::Client),
    ]
}

/// The relay's address on the link towards `server` (the source the server sees by default).
fn relay_side(server: SocketAddr) -> std::net::IpAddr {
    let text = server.ip().to_string();
    let relay = match text.as_str() {
        addr::A_V4 => "10.88.2.1",
        addr::A_V6 => "fd88:2::1",
        addr::B_V4 => "10.88.3.1",
        addr::B_V6 => "fd88:3::1",
        other => panic!("no link towards {other}"),
    };
    addr::ip(relay)
}

#[test]
fn redirect_and_tproxy_reach_the_server_each_client_dialled() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let _a = HashServer::start(&topology.server_a, "a", &[7001, 7003], REPLY);
    let _b = HashServer::start(&topology.server_b, "b", &[7001, 7003], REPLY);
    let relay = RunningRelay::start(&topology, routes());
    let mut expected = [0u64; 2];
    for (port, route) in [(7001, 0), (7003, 1)] {
        for (server, ip) in [
            ("a", addr::A_V4),
            ("b", addr::B_V4),
            ("a", addr::A_V6),
            ("b", addr::B_V6),
        ] {
            let dialled = at(ip, port);
            let stream = connect_from(&topology.client, dialled).unwrap();
            let answer = exchange(stream, UPLOAD, REPLY);
            assert_eq!(answer.server, server, "{dialled}");
            assert_eq!(answer.local, dialled, "the server the client dialled");
            assert_eq!(
                answer.peer.ip(),
                relay_side(dialled),
                "{dialled}: relayed, not routed"
            );
            expected[route] += 1;
        }
    }
    for (name, n) in [("redirect", expected[0]), ("tproxy", expected[1])] {
        let stats = relay.wait_for(name, "every connection completed", |s| s.completed == n);
        assert_eq!(stats.upstream_connects, n);
        assert_eq!(stats.bytes_client_to_upstream, n * UPLOAD as u64);
        // The answer lines are payload too.
        assert!(stats.bytes_upstream_to_client > n * REPLY as u64);
    }
}

#[test]
fn destinations_outside_upstream_allow_the_relay_itself_and_the_metadata_service_are_refused() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let _a = HashServer::start(&topology.server_a, "a", &[7001], 0);
    let b = HashServer::start(&topology.server_b, "b", &[7001], 0);
    let relay = RunningRelay::start(&topology, routes());
    // Outside upstream_allow: B's second addresses.
    for ip in [addr::B_OUTSIDE_V4, addr::B_OUTSIDE_V6] {
        assert!(refused(&topology.client, at(ip, 7001)), "{ip}");
    }
    let stats = relay.wait_for("redirect", "two refusals", |s| s.closed == 2);
    assert_eq!(stats.upstream_refused_address_policy, 2);
    assert_eq!(stats.upstream_connects, 0);
    assert_eq!(
        b.accepted.load(Ordering::Relaxed),
        0,
        "server B was reached"
    );
    // The metadata service: refused without a packet sent towards it.
    assert!(refused(&topology.client, at("169.254.169.254", 7001)));
    let stats = relay.wait_for("redirect", "the metadata refusal", |s| s.closed == 3);
    assert_eq!(stats.upstream_refused_address_policy, 3);
    assert_eq!(
        topology.metadata_packets(),
        0,
        "a packet left for 169.254.0.0/16"
    );
    // The relay's own listener, dialled directly (no redirect: conntrack's original
    // destination is the listener itself).
    assert!(refused(&topology.client, at(addr::RELAY_V4, 15001)));
    let stats = relay.wait_for("redirect", "the loop refusal", |s| s.closed == 4);
    assert_eq!(stats.self_loops, 1, "{stats:#?}");
    assert_eq!(stats.upstream_connects, 0);
    // Still serving.
    let answer = exchange(
        connect_from(&topology.client, at(addr::A_V4, 7001)).unwrap(),
        10,
        0,
    );
    assert_eq!(answer.server, "a");
}

#[test]
fn an_unreadable_original_destination_is_reset_and_counted() {
    let Some(topology) = Topology::create() else {
        return;
    };
    // The client namespace has no nat rule, so its connections are not tracked: a relay there
    // cannot read an original destination.
    let mut route = Route::original_destination("untracked", addr::upstream_allow());
    route = route.listen(SocketAddr::from(([127, 0, 0, 1], 15009)));
    let relay = RunningRelay::start_in(&topology.client, vec![route]);
    assert!(refused(
        &topology.client,
        SocketAddr::from(([127, 0, 0, 1], 15009))
    ));
    let stats = relay.wait_for("untracked", "the reset", |s| s.closed == 1);
    assert_eq!(stats.original_destination_unreadable, 1, "{stats:#?}");
    assert_eq!(stats.upstream_connects, 0);
}

#[test]
fn source_client_is_the_address_the_server_sees() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let _a = HashServer::start(&topology.server_a, "a", &[7004], REPLY);
    let relay = RunningRelay::start(&topology, routes());
    for (server, client) in [(addr::A_V4, addr::CLIENT_V4), (addr::A_V6, addr::CLIENT_V6)] {
        let stream = connect_from(&topology.client, at(server, 7004)).unwrap();
        let client_port = stream.local_addr().unwrap().port();
        let answer = exchange(stream, UPLOAD, REPLY);
        assert_eq!(answer.local, at(server, 7004));
        assert_eq!(
            answer.peer.ip(),
            addr::ip(client),
            "getpeername on the server"
        );
        assert_ne!(answer.peer.port(), 0);
        let _ = client_port;
    }
    relay.wait_for("source-client", "both completed", |s| s.completed == 2);
}

/// The seed's case: the client resolves a bucket-style name to the "S3" namespace's address
/// (curl --resolve, as DNS would; no hosts entry), and reaches it through the relay over TLS,
/// verified, the object hashed.
#[test]
fn a_bucket_name_reaches_s3_through_the_relay_over_tls() {
    let Some(topology) = Topology::create() else {
        return;
    };
    if !have_curl() {
        return;
    }
    let Some(tls) = TlsServer::start(&topology.server_a, 7002) else {
        return;
    };
    let relay = RunningRelay::start(&topology, routes());
    let cert = tls.cert.to_str().unwrap();
    let fetched = curl_sha256(
        &topology,
        &[
            "--cacert",
            cert,
            "--resolve",
            "my-bucket.s3.test:7002:10.88.2.2",
            "https://my-bucket.s3.test:7002/object",
        ],
    )
    .unwrap();
    assert_eq!(fetched, tls.object_sha256);
    let stats = relay.wait_for("redirect", "the connection closed", |s| s.closed == 1);
    assert_eq!(stats.upstream_connects, 1);
    assert!(stats.bytes_upstream_to_client > 1 << 20);
}
