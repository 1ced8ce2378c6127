//! Resets at every stage of a connection. Each test runs alone in the binary (its topology is
//! exclusive) so that it can compare the process's descriptors before the relay and its peers
//! were made and after they are gone.

use spliceway_test_kit::WithOptions;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spliceway::{Mode, UpstreamAddr};

use crate::netns::*;
use crate::traffic::*;
use spliceway_test_kit::{
    Ending, TEST_TIMEOUT, expected_hash, half_close, read_ending, reset, send_generated,
    wait_for_socket_error, wait_until,
};

/// Connect timeout while the upstream's SYN is black-holed.
const PENDING_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Half-close timeout of the scenarios that rely on it.
const HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How soon a reset must reach the other side when nothing but the reset is awaited.
const PROMPTLY: Duration = Duration::from_millis(500);
/// Bytes of a request or an answer.
const MESSAGE: u64 = 64 * 1024;

/// Every descriptor of the process and what it is, leaving out the one that lists them.
fn descriptors() -> BTreeMap<String, String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                return None;
            }
            Some((entry.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

/// Runs `scenario` in both modes, each in a topology of its own that no other test of the
/// binary runs beside, and checks that no descriptor outlives the relay and its peers.
fn in_both_modes_without_leaks(scenario: impl Fn(&Topology, Mode)) {
    for mode in MODES {
        let Some(topology) = Topology::create_exclusive() else {
            return;
        };
        let before = descriptors();
        scenario(&topology, mode);
        let after = descriptors();
        let leaked: Vec<_> = after
            .iter()
            .filter(|(fd, _)| !before.contains_key(*fd))
            .collect();
        assert!(
            leaked.is_empty(),
            "{mode}: descriptors left after the relay stopped: {leaked:?}"
        );
    }
}

/// A stage's relay: the single route with `route` applied.
fn start_relay(topology: &Topology, route: spliceway::Route) -> TestRelay {
    TestRelay::start_route_in(&topology.relay, route)
}

/// The relay must not hold a socket for a connection that ended.
fn assert_relay_holds_nothing(topology: &Topology, mode: Mode) {
    let left = topology.relay.live_connections();
    assert!(left.is_empty(), "{mode}: the relay still holds {left:?}");
}

/// The client resets while the upstream's SYN is black-holed (the connect is pending). The
/// relay must not leak: the connection and its pending attempt are gone at the latest when the
/// connect timeout fires, and nothing is left in the relay's namespace.
fn client_reset_while_connecting(topology: &Topology, mode: Mode) -> Duration {
    let relay = start_relay(
        topology,
        route_for(UpstreamAddr::Ip(black_hole_addr()), mode)
            .with_options(|o| o.connect_timeout = PENDING_CONNECT_TIMEOUT),
    );
    let client = topology.client.connect(relay.addr);
    assert!(
        wait_until(TEST_TIMEOUT, || relay.stats().accepted == 1),
        "timed out waiting for the client accepted"
    );
    assert!(
        wait_until(TEST_TIMEOUT, || {
            topology
                .relay
                .live_connections()
                .iter()
                .any(|l| l.starts_with("SYN-SENT"))
        }),
        "timed out waiting for the upstream SYN sent"
    );
    let reset_at = Instant::now();
    reset(client);
    relay.wait_closed(1);
    let took = reset_at.elapsed();
    assert!(
        took < PENDING_CONNECT_TIMEOUT + Duration::from_millis(500),
        "{mode}: the connection of a client that reset outlived the connect timeout: {}",
        ms(took)
    );
    let stats = relay.stats();
    assert_eq!(stats.upstream_connects, 0, "{mode}: {stats:?}");
    assert_eq!(
        stats.client_resets + stats.upstream_unavailable,
        1,
        "{mode}: {stats:?}"
    );
    assert_relay_holds_nothing(topology, mode);
    relay.stop();
    took
}

/// The client resets while its upstream connect is pending.
#[test]
fn client_reset_while_connecting_leaves_nothing_behind() {
    in_both_modes_without_leaks(|topology, mode| {
        let took = client_reset_while_connecting(topology, mode);
        eprintln!(
            "{mode}: client reset while connecting: connection gone {} after the reset (connect \
             timeout {})",
            ms(took),
            ms(PENDING_CONNECT_TIMEOUT)
        );
    });
}

/// As above, and the relay notices the reset at once: it drops the pending attempt instead
/// of waiting for the connect timeout (default 10 s per address, 3 addresses).
#[test]
fn client_reset_while_connecting_is_noticed_at_once() {
    in_both_modes_without_leaks(|topology, mode| {
        let took = client_reset_while_connecting(topology, mode);
        assert!(
            took < PROMPTLY,
            "{mode}: the pending connection was dropped only {} after the client's reset",
            ms(took)
        );
    });
}

/// The client resets in the middle of an upload: the server's read ends in a reset.
#[test]
fn client_reset_mid_upload_reaches_the_server_as_a_reset() {
    in_both_modes_without_leaks(|topology, mode| {
        let received = Arc::new(AtomicU64::new(0));
        let endings = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let (received, endings) = (Arc::clone(&received), Arc::clone(&endings));
            topology
                .server
                .serve(server_addr(), move |mut stream, stop| {
                    let ending = sink_until_stopped(&mut stream, &received, stop);
                    endings.lock().unwrap().push(ending);
                })
        };
        let relay = start_relay(topology, route(mode));
        let mut client = topology.client.connect(relay.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let chunk = vec![7u8; 64 * 1024];
                while !stop.load(Ordering::SeqCst) {
                    client.write_all(&chunk).expect("upload");
                }
                client
            })
        };
        assert!(
            wait_until(TEST_TIMEOUT, || {
                received.load(Ordering::SeqCst) >= 256 * 1024
            }),
            "timed out waiting for 256 KiB at the server"
        );
        stop.store(true, Ordering::SeqCst);
        reset(writer.join().expect("client writer"));

        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        let ending = endings.lock().unwrap()[0].clone();
        assert!(
            matches!(ending, Ending::Reset(_)),
            "{mode}: the server saw {ending:?}"
        );
        relay.wait_closed(1);
        let stats = relay.stats();
        assert_eq!(stats.client_resets, 1, "{mode}: {stats:?}");
        assert_relay_holds_nothing(topology, mode);
        relay.stop();
        drop(server);
    });
}

/// The upstream resets in the middle of a download: the client's read ends in a reset.
#[test]
fn upstream_reset_mid_download_reaches_the_client_as_a_reset() {
    in_both_modes_without_leaks(|topology, mode| {
        let go = Arc::new(AtomicBool::new(false));
        let server = {
            let go = Arc::clone(&go);
            topology.server.serve(server_addr(), move |mut stream, _| {
                let chunk = vec![9u8; 64 * 1024];
                while !go.load(Ordering::SeqCst) {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
                reset(stream);
            })
        };
        let relay = start_relay(topology, route(mode));
        let mut client = topology.client.connect(relay.addr);
        let received = Arc::new(AtomicU64::new(0));
        let reader = {
            let received = Arc::clone(&received);
            std::thread::spawn(move || download(&mut client, &received))
        };
        assert!(
            wait_until(TEST_TIMEOUT, || {
                received.load(Ordering::SeqCst) >= 256 * 1024
            }),
            "timed out waiting for 256 KiB at the client"
        );
        go.store(true, Ordering::SeqCst);
        let ending = reader.join().expect("client reader");
        assert!(
            matches!(ending, Ending::Reset(_)),
            "{mode}: the client saw {ending:?}"
        );
        relay.wait_closed(1);
        let stats = relay.stats();
        assert_eq!(stats.upstream_resets, 1, "{mode}: {stats:?}");
        assert_relay_holds_nothing(topology, mode);
        relay.stop();
        drop(server);
    });
}

/// The client sends its request and half-closes; the upstream reads it all and resets instead
/// of answering: the client sees a reset.
#[test]
fn upstream_reset_after_the_client_half_closed_reaches_the_client() {
    in_both_modes_without_leaks(|topology, mode| {
        let received = Arc::new(Mutex::new(None));
        let server = {
            let received = Arc::clone(&received);
            topology.server.serve(server_addr(), move |mut stream, _| {
                let got = read_to_end_hashed(&mut stream).unwrap();
                *received.lock().unwrap() = Some(got);
                reset(stream);
            })
        };
        let relay = start_relay(topology, route(mode));
        let mut client = topology.client.connect(relay.addr);
        send_generated(&mut client, 11, MESSAGE).unwrap();
        half_close(&client);
        assert_eq!(
            read_ending(&mut client),
            Ending::Reset(0),
            "{mode}: the client"
        );
        assert_eq!(
            received.lock().unwrap().clone(),
            Some((MESSAGE, expected_hash(11, MESSAGE))),
            "{mode}: the request arrived whole before the reset"
        );
        relay.wait_closed(1);
        assert_eq!(
            relay.stats().upstream_resets,
            1,
            "{mode}: {:?}",
            relay.stats()
        );
        assert_relay_holds_nothing(topology, mode);
        relay.stop();
        drop(server);
    });
}

/// The upstream answers and half-closes; the client reads the whole answer (a clean end: the
/// upstream did end its side) and then resets: the upstream, still reading, sees a reset.
#[test]
fn client_reset_after_the_upstream_half_closed_reaches_the_upstream() {
    in_both_modes_without_leaks(|topology, mode| {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let endings = Arc::clone(&endings);
            topology.server.serve(server_addr(), move |mut stream, _| {
                send_generated(&mut stream, 12, MESSAGE).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                let ending = read_ending(&mut stream);
                endings.lock().unwrap().push(ending);
            })
        };
        let relay = start_relay(topology, route(mode));
        let mut client = topology.client.connect(relay.addr);
        let answer = read_to_end_hashed(&mut client).expect("the answer ends cleanly");
        assert_eq!(answer, (MESSAGE, expected_hash(12, MESSAGE)), "{mode}");
        let reset_at = Instant::now();
        reset(client);
        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        let took = reset_at.elapsed();
        assert_eq!(
            endings.lock().unwrap()[0],
            Ending::Reset(0),
            "{mode}: the upstream"
        );
        assert!(took < PROMPTLY, "{mode}: the reset took {}", ms(took));
        relay.wait_closed(1);
        assert_eq!(
            relay.stats().client_resets,
            1,
            "{mode}: {:?}",
            relay.stats()
        );
        assert_relay_holds_nothing(topology, mode);
        relay.stop();
        drop(server);
    });
}

/// The client sends its request, half-closes and resets at once; the upstream reads the request
/// to its end and answers. Writing the answer to the client fails, and the upstream sees a
/// reset.
#[test]
fn client_reset_after_its_half_close_reaches_an_answering_upstream() {
    in_both_modes_without_leaks(|topology, mode| {
        let outcome = Arc::new(Mutex::new(None));
        let request_read = Arc::new(AtomicBool::new(false));
        let client_gone = Arc::new(AtomicBool::new(false));
        let server = {
            let (outcome, request_read, client_gone) = (
                Arc::clone(&outcome),
                Arc::clone(&request_read),
                Arc::clone(&client_gone),
            );
            topology.server.serve(server_addr(), move |mut stream, _| {
                let got = read_to_end_hashed(&mut stream).unwrap();
                request_read.store(true, Ordering::SeqCst);
                assert!(
                    wait_until(TEST_TIMEOUT, || client_gone.load(Ordering::SeqCst)),
                    "timed out waiting for the client's reset"
                );
                let error = match send_generated(&mut stream, 13, MESSAGE) {
                    Err(e) => Some(e),
                    Ok(_) => wait_for_socket_error(&stream, Duration::from_secs(5)),
                };
                *outcome.lock().unwrap() = Some((got, error.map(|e| e.kind())));
            })
        };
        let relay = start_relay(topology, route(mode));
        let mut client = topology.client.connect(relay.addr);
        send_generated(&mut client, 14, MESSAGE).unwrap();
        half_close(&client);
        assert!(
            wait_until(TEST_TIMEOUT, || request_read.load(Ordering::SeqCst)),
            "timed out waiting for the request read"
        );
        reset(client);
        client_gone.store(true, Ordering::SeqCst);

        assert!(
            wait_until(TEST_TIMEOUT, || outcome.lock().unwrap().is_some()),
            "timed out waiting for the server's outcome"
        );
        let (got, error) = outcome.lock().unwrap().clone().unwrap();
        assert_eq!(got, (MESSAGE, expected_hash(14, MESSAGE)), "{mode}");
        assert!(
            matches!(
                error,
                Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
            ),
            "{mode}: the answering upstream saw {error:?}, expected a reset"
        );
        relay.wait_closed(1);
        // Its end of stream had been passed on whole: a reset after its end, not an abort.
        let stats = relay.stats();
        assert_eq!(
            (stats.client_resets_after_end, stats.client_resets),
            (1, 0),
            "{mode}: {stats:?}"
        );
        assert_relay_holds_nothing(topology, mode);
        relay.stop();
        drop(server);
    });
}

/// The side that reset after half-closing, and how long the other side then waits for its
/// reset when it stays silent.
#[derive(Debug, Clone, Copy)]
enum Resetter {
    /// The client sends, half-closes, resets; the upstream reads to the end and waits.
    Client,
    /// The upstream answers, half-closes, resets; the client reads to the end and waits.
    Upstream,
}

/// One side half-closes and then resets while the other side, having read everything, stays
/// silent. Returns how long the silent side waited for its reset (`None`: not within
/// `limit`).
fn reset_after_half_close_to_a_silent_peer(
    topology: &Topology,
    mode: Mode,
    resetter: Resetter,
    half_close_timeout: Duration,
    limit: Duration,
) -> Option<Duration> {
    let waited = Arc::new(Mutex::new(None));
    let reset_done = Arc::new(AtomicBool::new(false));
    let server = {
        let (waited, reset_done) = (Arc::clone(&waited), Arc::clone(&reset_done));
        topology
            .server
            .serve(server_addr(), move |mut stream, _| match resetter {
                Resetter::Client => {
                    read_to_end_hashed(&mut stream).unwrap();
                    assert!(
                        wait_until(TEST_TIMEOUT, || reset_done.load(Ordering::SeqCst)),
                        "timed out waiting for the client's reset"
                    );
                    let started = Instant::now();
                    let error = wait_for_socket_error(&stream, limit);
                    *waited.lock().unwrap() = Some(error.map(|_| started.elapsed()));
                }
                Resetter::Upstream => {
                    send_generated(&mut stream, 15, MESSAGE).unwrap();
                    stream.shutdown(Shutdown::Write).unwrap();
                    assert!(
                        wait_until(TEST_TIMEOUT, || reset_done.load(Ordering::SeqCst)),
                        "timed out waiting for the answer read"
                    );
                    reset(stream);
                }
            })
    };
    let relay = start_relay(
        topology,
        route(mode).with_options(|o| o.half_close_timeout = half_close_timeout),
    );
    let mut client = topology.client.connect(relay.addr);
    let result = match resetter {
        Resetter::Client => {
            send_generated(&mut client, 16, MESSAGE).unwrap();
            half_close(&client);
            // Let the request and the end of stream through before the reset.
            assert!(
                wait_until(TEST_TIMEOUT, || {
                    relay.stats().bytes_client_to_upstream == MESSAGE
                }),
                "timed out waiting for the end of stream passed on"
            );
            std::thread::sleep(Duration::from_millis(50));
            reset(client);
            reset_done.store(true, Ordering::SeqCst);
            assert!(
                wait_until(TEST_TIMEOUT, || waited.lock().unwrap().is_some()),
                "timed out waiting for the server's wait"
            );
            waited.lock().unwrap().unwrap()
        }
        Resetter::Upstream => {
            let answer = read_to_end_hashed(&mut client).expect("the answer ends cleanly");
            assert_eq!(answer.0, MESSAGE, "{mode}");
            reset_done.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let error = wait_for_socket_error(&client, limit);
            error.map(|_| started.elapsed())
        }
    };
    // Whatever the wait showed, the connection ends by a reset or the timeout, never cleanly.
    relay.wait_closed(1);
    let stats = relay.stats();
    assert_eq!(stats.completed, 0, "{mode} {resetter:?}: {stats:?}");
    assert_relay_holds_nothing(topology, mode);
    relay.stop();
    drop(server);
    result
}

/// One side half-closes and resets while the other stays silent: the silent side is reset at
/// the latest by the half-close timeout, never left with a connection that looks alive.
#[test]
fn reset_after_a_half_close_reaches_a_silent_peer_by_the_half_close_timeout() {
    in_both_modes_without_leaks(|topology, mode| {
        for resetter in [Resetter::Client, Resetter::Upstream] {
            let limit = HALF_CLOSE_TIMEOUT + Duration::from_secs(2);
            let waited = reset_after_half_close_to_a_silent_peer(
                topology,
                mode,
                resetter,
                HALF_CLOSE_TIMEOUT,
                limit,
            );
            let Some(waited) = waited else {
                panic!("{mode}: after the {resetter:?}'s reset the silent side waited {limit:?}");
            };
            eprintln!(
                "{mode}: {resetter:?} half-closed then reset: the silent side was reset after {} \
                 (half-close timeout {})",
                ms(waited),
                ms(HALF_CLOSE_TIMEOUT)
            );
        }
    });
}

/// As above, and the reset is passed on at once instead of waiting for the half-close timeout
/// (default 60 s).
#[test]
fn reset_after_a_half_close_reaches_a_silent_peer_at_once() {
    in_both_modes_without_leaks(|topology, mode| {
        for resetter in [Resetter::Client, Resetter::Upstream] {
            let waited = reset_after_half_close_to_a_silent_peer(
                topology,
                mode,
                resetter,
                Duration::from_secs(10),
                Duration::from_secs(2),
            );
            assert!(
                waited.is_some_and(|w| w < PROMPTLY),
                "{mode}: after the {resetter:?}'s reset the silent side waited {waited:?}"
            );
        }
    });
}
