use spliceway_test_kit::WithOptions;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use spliceway::{Relay, UpstreamAddr};

use crate::netns::*;
use spliceway_test_kit::{Ending, assert_clean_end, read_ending};

/// The connect timeout of these tests.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Connections made one after the other; the relay rotates the first address tried, so half
/// of them start with the black hole.
const CONNECTIONS: usize = 4;

/// The upstream name resolves to [black hole, live server]. The black hole drops SYNs without
/// a word, so only the connect timeout can end an attempt on it: the relay then tries the next
/// address and the connection completes. Each connection that met the black hole took one
/// connect timeout longer and counted exactly one failed attempt; the others were not delayed.
#[test]
fn black_holed_address_fails_over_after_the_connect_timeout() {
    for mode in MODES {
        let Some(topology) = Topology::create() else {
            return;
        };
        let server = topology.server.serve(server_addr(), |mut stream, _| {
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap();
            stream.write_all(&request).unwrap();
        });
        let upstream = UpstreamAddr::parse(&format!("upstream.test:{SERVER_PORT}")).unwrap();
        let builder = Relay::builder()
            .route(route_for(upstream, mode).with_options(|o| o.connect_timeout = CONNECT_TIMEOUT))
            .resolver(|_, _| Ok(vec![black_hole_addr(), server_addr()]));
        let relay = TestRelay::start_in(&topology.relay, builder);

        let mut failovers = Vec::new();
        let mut direct = Vec::new();
        for i in 0..CONNECTIONS {
            let failures_before = relay.stats().upstream_connect_failures;
            let started = Instant::now();
            let mut client = topology.client.connect(relay.addr);
            let message = format!("connection {i} through the relay");
            client.write_all(message.as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let echoed = assert_clean_end(&mut client, &format!("{mode}: connection {i}"));
            let took = started.elapsed();
            assert_eq!(echoed, message.as_bytes(), "{mode}: connection {i}");
            relay.wait_closed(i as u64 + 1);
            let failed = relay.stats().upstream_connect_failures - failures_before;
            match failed {
                1 => {
                    assert!(
                        took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT + Duration::from_secs(1),
                        "{mode}: connection {i} met the black hole and took {}",
                        ms(took)
                    );
                    failovers.push(took);
                }
                0 => {
                    assert!(
                        took < CONNECT_TIMEOUT / 2,
                        "{mode}: connection {i} went straight to the server and took {}",
                        ms(took)
                    );
                    direct.push(took);
                }
                n => panic!("{mode}: connection {i} counted {n} failed attempts"),
            }
        }
        let stats = relay.stats();
        assert_eq!(
            failovers.len(),
            CONNECTIONS / 2,
            "{mode}: the first address tried rotates, so half the connections meet the black \
             hole; {stats:?}"
        );
        assert_eq!(stats.upstream_connect_failures, (CONNECTIONS / 2) as u64);
        assert_eq!(stats.upstream_connects, CONNECTIONS as u64, "{stats:?}");
        assert_eq!(stats.completed, CONNECTIONS as u64, "{stats:?}");
        assert_eq!(stats.upstream_unavailable, 0, "{stats:?}");
        eprintln!(
            "{mode}: connections through the black hole first took {:?}, the others {:?} \
             (connect timeout {})",
            failovers.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            direct.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            ms(CONNECT_TIMEOUT)
        );
        relay.stop();
        drop(server);
    }
}

/// Every address is a black hole: each attempt ends on the connect timeout, and once the
/// attempts are spent the client is reset (never left hanging) and the relay counts the
/// upstream as unavailable.
#[test]
fn only_black_holes_reset_the_client_after_every_attempt() {
    for mode in MODES {
        let Some(topology) = Topology::create() else {
            return;
        };
        let upstream = UpstreamAddr::parse(&format!("nowhere.test:{SERVER_PORT}")).unwrap();
        let other = std::net::SocketAddr::new(BLACK_HOLE_IP.into(), SERVER_PORT + 1);
        let builder = Relay::builder()
            .route(route_for(upstream, mode).with_options(|o| o.connect_timeout = CONNECT_TIMEOUT))
            .resolver(move |_, _| Ok(vec![black_hole_addr(), other]));
        let relay = TestRelay::start_in(&topology.relay, builder);

        let started = Instant::now();
        let mut client = topology.client.connect(relay.addr);
        let ending = read_ending(&mut client);
        assert_eq!(
            ending,
            Ending::Reset(0),
            "{mode}: the client of black holes"
        );
        let took = started.elapsed();
        assert!(
            took >= 2 * CONNECT_TIMEOUT && took < 2 * CONNECT_TIMEOUT + Duration::from_secs(1),
            "{mode}: reset after {}, expected two connect timeouts",
            ms(took)
        );
        relay.wait_closed(1);
        let stats = relay.stats();
        assert_eq!(stats.upstream_connect_failures, 2, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_unavailable, 1, "{mode}: {stats:?}");
        let left = topology.relay.live_connections();
        assert!(left.is_empty(), "{mode}: the relay still holds {left:?}");
        eprintln!("{mode}: two black holes: client reset after {}", ms(took));
        relay.stop();
    }
}
