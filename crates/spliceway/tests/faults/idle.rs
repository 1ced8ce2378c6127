use spliceway_test_kit::WithOptions;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::*;
use crate::traffic::is_timeout;
use spliceway_test_kit::{Ending, TEST_TIMEOUT, assert_clean_end, read_ending, wait_until};

/// The idle timeout of these tests.
const IDLE: Duration = Duration::from_millis(500);
/// A trickle slower than the idle timeout (the "byte a minute" client, scaled down) ...
const SLOW_TRICKLE: Duration = Duration::from_millis(700);
/// ... and one faster than it.
const FAST_TRICKLE: Duration = Duration::from_millis(200);
/// Bytes the fast trickle sends (1.6 s, three idle timeouts' worth).
const FAST_BYTES: u8 = 8;

/// Three clients at once under a 500 ms idle timeout: one that connects and never sends, one
/// that sends a byte every 700 ms and one that sends a byte every 200 ms. The first two are
/// reset (both sides) after 500 ms of silence and counted as idle timeouts; the third is not
/// touched and completes.
#[test]
fn silent_and_slow_clients_are_reset_and_a_faster_trickle_is_not() {
    for mode in MODES {
        let Some(topology) = Topology::create() else {
            return;
        };
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let server = topology.server.serve(server_addr(), move |mut stream, _| {
            let ending = read_ending(&mut stream);
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start_route_in(
            &topology.relay,
            route(mode).with_options(|o| o.idle_timeout = IDLE),
        );
        let addr = relay.addr;

        let silent = {
            let mut client = topology.client.connect(addr);
            std::thread::spawn(move || {
                let started = Instant::now();
                let ending = read_ending(&mut client);
                (ending, started.elapsed())
            })
        };
        let slow = {
            let mut client = topology.client.connect(addr);
            std::thread::spawn(move || {
                let mut sent = 0u64;
                loop {
                    if let Err(e) = client.write_all(b"s") {
                        return (Err(e), sent, Duration::ZERO);
                    }
                    sent += 1;
                    let last_byte = Instant::now();
                    // Wait out the interval on a read: a reset ends it at once.
                    loop {
                        let left = SLOW_TRICKLE.saturating_sub(last_byte.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        client.set_read_timeout(Some(left)).unwrap();
                        let mut byte = [0u8; 1];
                        match client.read(&mut byte) {
                            Err(e) if is_timeout(&e) => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => return (other, sent, last_byte.elapsed()),
                        }
                    }
                }
            })
        };
        let fast = {
            let mut client = topology.client.connect(addr);
            std::thread::spawn(move || {
                for i in 0..FAST_BYTES {
                    client.write_all(&[b'a' + i]).unwrap();
                    std::thread::sleep(FAST_TRICKLE);
                }
                client.shutdown(Shutdown::Write).unwrap();
                assert_clean_end(&mut client, "the fast trickle")
            })
        };

        let (silent_ending, silent_took) = silent.join().expect("silent client");
        let (slow_result, slow_sent, slow_took) = slow.join().expect("slow client");
        let fast_answer = fast.join().expect("fast client");

        assert_eq!(silent_ending, Ending::Reset(0), "{mode}: the silent client");
        let on_time = |took: Duration| {
            took >= IDLE - Duration::from_millis(50) && took < IDLE + Duration::from_millis(700)
        };
        assert!(
            on_time(silent_took),
            "{mode}: the silent client was reset after {}",
            ms(silent_took)
        );
        match &slow_result {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("{mode}: the slow trickle ended with {other:?}, expected a reset"),
        }
        assert_eq!(
            slow_sent, 1,
            "{mode}: the slow trickle got its second byte out"
        );
        assert!(
            on_time(slow_took),
            "{mode}: the slow trickle was reset {} after its last byte",
            ms(slow_took)
        );
        assert_eq!(fast_answer, b"", "{mode}: the fast trickle");

        relay.wait_closed(3);
        let stats = relay.stats();
        assert_eq!(stats.idle_timeouts, 2, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets(), 0, "{mode}: {stats:?}");
        assert!(
            wait_until(TEST_TIMEOUT, || { endings.lock().unwrap().len() == 3 }),
            "timed out waiting for the server's endings"
        );
        let mut endings = endings.lock().unwrap().clone();
        endings.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            endings,
            vec![
                Ending::Clean(FAST_BYTES as u64),
                Ending::Reset(0),
                Ending::Reset(1)
            ],
            "{mode}: what the server saw of the three"
        );
        eprintln!(
            "{mode}: idle timeout {}: silent client reset after {}, slow trickle {} after its \
             byte",
            ms(IDLE),
            ms(silent_took),
            ms(slow_took)
        );
        relay.stop();
        drop(server);
    }
}
