//! A relay host with `net.ipv4.ip_nonlocal_bind = 1` (keepalived and VIP hosts) can bind any
//! address. The self-loop check must decide "this host's address" from the host's interfaces,
//! not from whether a bind succeeds. Hostile testing found that with the sysctl set,
//! `0.0.0.0:P -> 10.77.2.2:P` was refused at start as "the relay's own listening address", and
//! with a name as upstream every connection was reset and counted as a self-loop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};

use spliceway::{Relay, Route, UpstreamAddr};

use crate::netns::*;
use spliceway_test_kit::assert_clean_end;

fn nonlocal_bind_topology() -> Option<Topology> {
    let topology = Topology::create()?;
    run_checked(
        "ip",
        &[
            "netns",
            "exec",
            &topology.relay.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_nonlocal_bind=1",
        ],
    );
    Some(topology)
}

fn echo(topology: &Topology) -> Server {
    topology.server.serve(server_addr(), |mut stream, _| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream.write_all(&request).unwrap();
    })
}

fn round_trip(topology: &Topology, relay: SocketAddr, message: &[u8]) {
    let mut client = topology.client.connect(relay);
    client.write_all(message).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(assert_clean_end(&mut client, "through the relay"), message);
}

/// A wildcard listener on the upstream's port, with an IP-literal upstream: it builds, relays,
/// and counts no self-loop.
#[test]
fn a_literal_upstream_on_the_listeners_port_is_not_a_self_loop() {
    let Some(topology) = nonlocal_bind_topology() else {
        return;
    };
    let _server = echo(&topology);
    let listen = SocketAddr::V4(SocketAddrV4::new([0, 0, 0, 0].into(), SERVER_PORT));
    let route = Route::new("vip", UpstreamAddr::Ip(server_addr())).listen(listen);
    let relay = TestRelay::start_in(&topology.relay, Relay::builder().route(route));
    let addr = SocketAddr::V4(SocketAddrV4::new(RELAY_CLIENT_SIDE_IP, relay.addr.port()));
    round_trip(
        &topology,
        addr,
        b"through a wildcard listener on the same port",
    );
    relay.wait_closed(1);
    assert_eq!(relay.stats().self_loops, 0);
    assert_eq!(relay.stats().completed, 1);
}

/// The same with a name as upstream: resolved per connection, relayed, no self-loop.
#[test]
fn a_named_upstream_on_the_listeners_port_is_not_a_self_loop() {
    let Some(topology) = nonlocal_bind_topology() else {
        return;
    };
    let _server = echo(&topology);
    let listen = SocketAddr::V4(SocketAddrV4::new([0, 0, 0, 0].into(), SERVER_PORT));
    let upstream = UpstreamAddr::parse(&format!("upstream.test:{SERVER_PORT}")).unwrap();
    let route = Route::new("vip", upstream).listen(listen);
    let builder = Relay::builder()
        .route(route)
        .resolver(|_, _| Ok(vec![server_addr()]));
    let relay = TestRelay::start_in(&topology.relay, builder);
    let addr = SocketAddr::V4(SocketAddrV4::new(RELAY_CLIENT_SIDE_IP, relay.addr.port()));
    round_trip(&topology, addr, b"a name that resolves to a neighbour");
    relay.wait_closed(1);
    assert_eq!(relay.stats().self_loops, 0);
    assert_eq!(relay.stats().completed, 1);
}

/// The relay's own address is still refused, sysctl or not.
#[test]
fn the_relays_own_address_is_still_a_self_loop() {
    let Some(topology) = nonlocal_bind_topology() else {
        return;
    };
    let listen = SocketAddr::V4(SocketAddrV4::new([0, 0, 0, 0].into(), SERVER_PORT));
    let own = SocketAddr::V4(SocketAddrV4::new(RELAY_SERVER_SIDE_IP, SERVER_PORT));
    let route = Route::new("loop", UpstreamAddr::Ip(own)).listen(listen);
    let error = topology
        .relay
        .run(move || Relay::builder().route(route).build().map(|_| ()))
        .expect_err("an upstream on the relay's own address is a self-loop");
    assert!(
        matches!(error, spliceway::Error::SelfLoop { .. }),
        "{error}"
    );
}
