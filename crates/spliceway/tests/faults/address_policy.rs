//! Names never lead to the metadata service, nor (for names a client chose by SNI) to the
//! relay host's loopback services. Each test runs in a namespace that has only `lo`, so a
//! missing check cannot send a packet anywhere: 169.254.169.254 is unreachable there, and a
//! connect to it would only fail with "network unreachable" instead of being refused.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};

use spliceway::{Relay, Route, SniEntry, SniTable, UpstreamAddr};

use crate::netns::*;
use spliceway_test_kit::{
    TEST_TIMEOUT, assert_clean_end, assert_reset, client_hello, connect_expecting_reset, wait_until,
};

const METADATA: [u8; 4] = [169, 254, 169, 254];

fn relay(ns: &LoopbackOnly, builder: spliceway::RelayBuilder) -> TestRelay {
    TestRelay::start_in(&ns.ns, builder)
}

/// An echo server inside the namespace, on loopback.
fn echo(ns: &LoopbackOnly) -> SocketAddr {
    let listener = ns
        .ns
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback listener in the namespace");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            let _ = stream.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) if stream.write_all(&buf[..n]).is_ok() => {}
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

fn sni_route(table_upstream: Option<&str>) -> Route {
    Route::sni(
        "sni",
        SniTable::new(vec![SniEntry::new(
            "*.test".parse().unwrap(),
            table_upstream.map(|u| UpstreamAddr::parse(u).unwrap()),
        )]),
    )
    .listen("127.0.0.1:0".parse().unwrap())
}

#[test]
fn a_configured_name_answering_the_metadata_address_is_refused() {
    let Some(ns) = LoopbackOnly::create() else {
        return;
    };
    let route = Route::new("r", UpstreamAddr::parse("metadata.test:80").unwrap())
        .listen("127.0.0.1:0".parse().unwrap());
    let builder = Relay::builder()
        .route(route)
        .resolver(|_, port| Ok(vec![SocketAddr::from((METADATA, port))]));
    let relay = relay(&ns, builder);
    // The refusal can come before this side's connect has returned: then connect sees it.
    let addr = relay.addr;
    ns.ns.run(move || {
        connect_expecting_reset(addr, "a client whose upstream name answers 169.254.169.254")
    });
    relay.wait_closed(1);
    let stats = relay.stats();
    assert_eq!(stats.upstream_refused_address_policy, 1, "{stats:?}");
    assert_eq!(stats.upstream_connect_failures, 0, "never tried: {stats:?}");
    assert_eq!(stats.upstream_unavailable, 1, "{stats:?}");
}

#[test]
fn a_name_from_sni_answering_loopback_is_refused() {
    let Some(ns) = LoopbackOnly::create() else {
        return;
    };
    let echo = echo(&ns);
    let builder = Relay::builder()
        .route(sni_route(None))
        .resolver(move |_, _| {
            Ok(vec![
                echo,
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, echo.port())),
            ])
        });
    let relay = relay(&ns, builder);
    let mut client = ns.ns.connect(relay.addr);
    client.write_all(&client_hello("inside.test")).unwrap();
    assert_reset(
        &mut client,
        "a client naming a host that resolves to loopback",
    );
    relay.wait_closed(1);
    let stats = relay.stats();
    assert_eq!(
        stats.upstream_refused_address_policy, 2,
        "127.0.0.1 and ::1: {stats:?}"
    );
    assert_eq!(stats.upstream_connects, 0, "{stats:?}");
}

#[test]
fn an_answer_mixing_a_refused_and_an_allowed_address_uses_the_allowed_one() {
    let Some(ns) = LoopbackOnly::create() else {
        return;
    };
    let echo = echo(&ns);
    let route = Route::new(
        "r",
        UpstreamAddr::parse(&format!("mixed.test:{}", echo.port())).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap());
    let builder = Relay::builder()
        .route(route)
        .resolver(move |_, port| Ok(vec![SocketAddr::from((METADATA, port)), echo]));
    let relay = relay(&ns, builder);
    let mut client = ns.ns.connect(relay.addr);
    client.write_all(b"through the allowed address").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        assert_clean_end(&mut client, "a mixed answer"),
        b"through the allowed address"
    );
    relay.wait_closed(1);
    let stats = relay.stats();
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert_eq!(stats.upstream_refused_address_policy, 1, "{stats:?}");
}

#[test]
fn upstream_allow_admits_what_it_names() {
    let Some(ns) = LoopbackOnly::create() else {
        return;
    };
    let echo = echo(&ns);
    let route = sni_route(None).upstream_allow(vec!["127.0.0.0/8".parse().unwrap()]);
    let builder = Relay::builder()
        .route(route)
        .resolver(move |_, _| Ok(vec![echo]));
    let relay = relay(&ns, builder);
    let mut client = ns.ns.connect(relay.addr);
    let hello = client_hello("admitted.test");
    client.write_all(&hello).unwrap();
    // (A TLS client does not half-close before the handshake; the relay closes one that ends
    // its side while its name resolves, so read the echo back instead.)
    let mut echoed = vec![0u8; hello.len()];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, hello, "an admitted range");
    drop(client);
    assert!(
        wait_until(TEST_TIMEOUT, || relay.stats().closed == 1),
        "timed out waiting for the connection is counted"
    );
    assert_eq!(relay.stats().upstream_refused_address_policy, 0);
}
