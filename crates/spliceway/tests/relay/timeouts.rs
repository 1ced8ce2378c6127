use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spliceway::Mode;

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// A server that reads until its connection ends and records how it ended.
fn recording_server(endings: Arc<Mutex<Vec<Ending>>>) -> Server {
    Server::start(move |mut stream| {
        let ending = read_ending(&mut stream);
        endings.lock().unwrap().push(ending);
    })
}

/// A client that connects and says nothing is reset after the idle timeout, and so is its
/// upstream.
#[test]
fn silent_connection_is_reset_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_millis(300);
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let server = recording_server(Arc::clone(&endings));
        let relay =
            TestRelay::start(route_to(server.addr, mode).with_options(|o| o.idle_timeout = IDLE));

        let started = Instant::now();
        let mut client = connect(relay.addr);
        assert_reset(&mut client, &format!("{mode}: silent client"));
        let took = started.elapsed();
        assert!(
            took >= IDLE - Duration::from_millis(50),
            "{mode}: reset after {took:?}, before the idle timeout of {IDLE:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "{mode}: reset only after {took:?}"
        );

        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        assert_eq!(
            endings.lock().unwrap()[0],
            Ending::Reset(0),
            "{mode}: at the server"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.idle_timeouts, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets() + stats.completed, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// A byte every 100 ms for 1.2 s keeps a connection with a 400 ms idle timeout alive: the
/// timeout counts silence, not the connection's age.
#[test]
fn trickling_connection_outlives_the_idle_timeout() {
    const BYTES: usize = 12;
    for mode in MODES {
        let server = echo_server();
        let relay = TestRelay::start(
            route_to(server.addr, mode)
                .with_options(|o| o.idle_timeout = Duration::from_millis(400)),
        );
        let started = Instant::now();
        let mut client = connect(relay.addr);
        let mut echoed = Vec::new();
        for i in 0..BYTES {
            client.write_all(&[b'a' + i as u8]).unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).unwrap();
            echoed.push(byte[0]);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(started.elapsed() >= Duration::from_millis(1200));
        half_close(&client);
        assert_eq!(assert_clean_end(&mut client, "trickling client"), b"");
        let sent: Vec<u8> = (0..BYTES as u8).map(|i| b'a' + i).collect();
        assert_eq!(echoed, sent, "{mode}");

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.idle_timeouts, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// After the client half-closed, an answer trickling a byte every 100 ms for 1.2 s keeps the
/// connection alive under a 400 ms half-close timeout: it counts silence, not time since the
/// half-close.
#[test]
fn trickling_answer_outlives_the_half_close_timeout() {
    const BYTES: u8 = 12;
    for mode in MODES {
        let server = Server::start(|mut stream| {
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap();
            for i in 0..BYTES {
                stream.write_all(&[request[0] + i]).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let relay = TestRelay::start(
            route_to(server.addr, mode)
                .with_options(|o| o.half_close_timeout = Duration::from_millis(400)),
        );
        let mut client = connect(relay.addr);
        client.write_all(b"a").unwrap();
        half_close(&client);
        let answer = assert_clean_end(&mut client, &format!("{mode}: client of a slow answer"));
        let expected: Vec<u8> = (0..BYTES).map(|i| b'a' + i).collect();
        assert_eq!(answer, expected, "{mode}");

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.half_close_timeouts, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// The client half-closes and the server neither answers nor closes: after the half-close
/// timeout both sides are reset.
#[test]
fn silent_server_after_a_half_close_is_reset() {
    const HALF_CLOSE: Duration = Duration::from_millis(500);
    for mode in MODES {
        let saw_error = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&saw_error);
        let server = Server::start(move |mut stream| {
            let got = read_hashed(&mut stream).unwrap();
            // Hold the connection without a byte or a FIN until the relay gives up on it.
            let error = wait_for_socket_error(&stream, Duration::from_secs(10));
            record
                .lock()
                .unwrap()
                .push((got, error.map(|e| e.to_string())));
        });
        let relay = TestRelay::start(
            route_to(server.addr, mode).with_options(|o| o.half_close_timeout = HALF_CLOSE),
        );
        let mut client = connect(relay.addr);
        send_generated(&mut client, 31, 10_000).unwrap();
        half_close(&client);
        let started = Instant::now();
        assert_reset(
            &mut client,
            &format!("{mode}: client waiting for an answer"),
        );
        let took = started.elapsed();
        assert!(
            took >= HALF_CLOSE - Duration::from_millis(100),
            "{mode}: reset after {took:?}, before the half-close timeout"
        );
        assert!(
            took < Duration::from_secs(3),
            "{mode}: reset only after {took:?}"
        );

        assert!(
            wait_until(TEST_TIMEOUT, || { saw_error.lock().unwrap().len() == 1 }),
            "timed out waiting for the server's result"
        );
        let (got, error) = saw_error.lock().unwrap()[0].clone();
        assert_eq!(got, (10_000, expected_hash(31, 10_000)), "{mode}");
        assert!(error.is_some(), "{mode}: the server's side was not reset");
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.half_close_timeouts, 1, "{mode}: {stats:?}");
        assert_eq!(
            stats.idle_timeouts + stats.completed,
            0,
            "{mode}: {stats:?}"
        );
        relay.stop();
    }
}

/// The other way round: the server sends and half-closes, and the client reads everything but
/// stays silent without closing; it is reset after the half-close timeout.
#[test]
fn silent_client_after_the_server_half_closed_is_reset() {
    const HALF_CLOSE: Duration = Duration::from_millis(500);
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let server = Server::start(move |mut stream| {
            stream.write_all(b"all I have to say").unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let ending = read_ending(&mut stream);
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start(
            route_to(server.addr, mode).with_options(|o| o.half_close_timeout = HALF_CLOSE),
        );
        let mut client = connect(relay.addr);
        assert_eq!(
            assert_clean_end(&mut client, "client reading"),
            b"all I have to say"
        );
        let started = Instant::now();
        let error = wait_for_socket_error(&client, Duration::from_secs(5));
        let took = started.elapsed();
        assert!(error.is_some(), "{mode}: the silent client was not reset");
        assert!(
            took < Duration::from_secs(3),
            "{mode}: reset only after {took:?}"
        );

        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        assert_eq!(
            endings.lock().unwrap()[0],
            Ending::Reset(0),
            "{mode}: at the server"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.half_close_timeouts, 1, "{mode}: {stats:?}");
        assert_eq!(
            stats.idle_timeouts + stats.completed,
            0,
            "{mode}: {stats:?}"
        );
        relay.stop();
    }
}
