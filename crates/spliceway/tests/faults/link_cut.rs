use spliceway_test_kit::WithOptions;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::*;
use crate::traffic::*;
use spliceway_test_kit::{Ending, TEST_TIMEOUT, wait_until};

/// The idle timeout of these tests: a cut link must be given up on this long after the last
/// byte moved.
const IDLE: Duration = Duration::from_secs(1);
/// Bytes that must have crossed before the link is cut.
const BEFORE_CUT: u64 = 1 << 20;

/// The relay <-> server link goes down in the middle of an upload. The relay keeps writing
/// until the upstream socket's send buffer is full, then nothing moves; the idle timeout
/// resets the connection: the client's blocked write fails with a reset, the relay holds no
/// socket for it any more, and it counts an idle timeout.
#[test]
fn cut_link_mid_upload_is_reset_by_the_idle_timeout() {
    for mode in MODES {
        let Some(topology) = Topology::create() else {
            return;
        };
        let received = Arc::new(AtomicU64::new(0));
        let endings = Arc::new(Mutex::new(Vec::new()));
        let (counter, record) = (Arc::clone(&received), Arc::clone(&endings));
        let server = topology
            .server
            .serve(server_addr(), move |mut stream, stop| {
                let ending = sink_until_stopped(&mut stream, &counter, stop);
                record.lock().unwrap().push(ending);
            });
        let relay = TestRelay::start_route_in(
            &topology.relay,
            route(mode).with_options(|o| o.idle_timeout = IDLE),
        );
        let mut client = topology.client.connect(relay.addr);
        let sent = Arc::new(AtomicU64::new(0));
        let writer = {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || upload(&mut client, 1, u64::MAX, &sent))
        };

        assert!(
            wait_until(TEST_TIMEOUT, || {
                received.load(Ordering::SeqCst) >= BEFORE_CUT
            }),
            "timed out waiting for 1 MiB at the server"
        );
        let cut = Instant::now();
        topology.cut_server_link();
        let result = writer.join().expect("client writer");
        let took = cut.elapsed();

        let error = result.expect_err("the upload cannot finish");
        assert_eq!(
            error.kind(),
            io::ErrorKind::ConnectionReset,
            "{mode}: the client's write ended with {error}, expected a reset"
        );
        assert!(
            took >= IDLE - Duration::from_millis(50) && took < IDLE + Duration::from_secs(3),
            "{mode}: the client was reset {} after the cut (idle timeout {})",
            ms(took),
            ms(IDLE)
        );
        relay.wait_closed(1);
        let stats = relay.stats();
        assert_eq!(stats.idle_timeouts, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets() + stats.completed, 0, "{mode}: {stats:?}");
        let left = topology.relay.live_connections();
        assert!(left.is_empty(), "{mode}: the relay still holds {left:?}");
        eprintln!(
            "{mode}: upload cut after {} KiB; client reset {} after the cut",
            received.load(Ordering::SeqCst) / 1024,
            ms(took)
        );
        relay.stop();
        drop(server);
        let endings = endings.lock().unwrap();
        assert!(
            matches!(endings.as_slice(), [Ending::Other(_, why)] if why == "stopped"),
            "{mode}: the server heard something across a cut link: {endings:?}"
        );
    }
}

/// The relay <-> server link goes down in the middle of a download. The relay writes out what
/// it holds, then nothing moves; the idle timeout resets the client, which has read every byte
/// that crossed and then sees a reset, not an end of stream.
#[test]
fn cut_link_mid_download_is_reset_by_the_idle_timeout() {
    for mode in MODES {
        let Some(topology) = Topology::create() else {
            return;
        };
        let server = topology.server.serve(server_addr(), |mut stream, stop| {
            source_until_stopped(&mut stream, stop);
        });
        let relay = TestRelay::start_route_in(
            &topology.relay,
            route(mode).with_options(|o| o.idle_timeout = IDLE),
        );
        let mut client = topology.client.connect(relay.addr);
        let received = Arc::new(AtomicU64::new(0));
        let reader = {
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let ending = download(&mut client, &received);
                (ending, Instant::now())
            })
        };

        assert!(
            wait_until(TEST_TIMEOUT, || {
                received.load(Ordering::SeqCst) >= BEFORE_CUT
            }),
            "timed out waiting for 1 MiB at the client"
        );
        let cut = Instant::now();
        topology.cut_server_link();
        let (ending, ended) = reader.join().expect("client reader");
        let took = ended.duration_since(cut);

        assert!(
            matches!(ending, Ending::Reset(_)),
            "{mode}: the client saw {ending:?} after the cut, expected a reset"
        );
        assert!(
            took >= IDLE - Duration::from_millis(50) && took < IDLE + Duration::from_secs(3),
            "{mode}: the client was reset {} after the cut (idle timeout {})",
            ms(took),
            ms(IDLE)
        );
        relay.wait_closed(1);
        let stats = relay.stats();
        assert_eq!(stats.idle_timeouts, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets() + stats.completed, 0, "{mode}: {stats:?}");
        let left = topology.relay.live_connections();
        assert!(left.is_empty(), "{mode}: the relay still holds {left:?}");
        eprintln!(
            "{mode}: download cut after {} KiB; client reset {} after the cut",
            received.load(Ordering::SeqCst) / 1024,
            ms(took)
        );
        relay.stop();
        drop(server);
    }
}
