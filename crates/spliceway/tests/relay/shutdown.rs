use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;
use spliceway::{Mode, Relay};

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// A server that reads everything (counting as it goes) and answers with the SHA-256 of what
/// it read, in hex, then closes.
fn hashing_server(progress: Arc<AtomicU64>) -> Server {
    Server::start(move |mut stream| {
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            progress.fetch_add(n as u64, Ordering::SeqCst);
        }
        stream
            .write_all(format!("{:x}", hash.finalize()).as_bytes())
            .unwrap();
    })
}

/// Expects a connection to a relay that stopped accepting to fail: refused, or reset when it
/// was queued just as the listener closed. With `may_be_served` (a client that connects while
/// the workers are being told of the drain), a connection a worker accepted just before may
/// also be served: no reset comes, and it is closed at once. Returns whether it was refused
/// outright.
fn expect_no_service(addr: SocketAddr, context: &str, may_be_served: bool) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
        Err(e) => panic!("{context}: connect failed with {e}"),
        Ok(mut stream) if may_be_served => {
            stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            match stream.read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
                // Served (accepted before the drain): nothing to read, no reset.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    false
                }
                other => panic!("{context}: expected a reset or service, got {other:?}"),
            }
        }
        Ok(mut stream) => {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            assert_reset(&mut stream, context);
            false
        }
    }
}

/// An open, relaying connection with nothing in flight.
fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut client = connect(addr);
    client.write_all(b"ping").unwrap();
    let mut answer = [0u8; 4];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"ping");
    client
}

/// Graceful shutdown with an upload in flight: new connections are refused, the upload
/// completes intact, and `run()` returns Ok.
#[test]
fn graceful_shutdown_lets_the_transfer_in_flight_finish() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: u64 = 80; // 20 MiB
    for mode in MODES {
        let progress = Arc::new(AtomicU64::new(0));
        let server = hashing_server(Arc::clone(&progress));
        let relay = TestRelay::start(route_to(server.addr, mode));
        let handle = relay.handle.clone();
        let addr = relay.addr;

        let uploader = std::thread::spawn(move || {
            let mut client = connect(addr);
            let mut generator = Generator::new(41);
            let mut hash = sha2::Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..CHUNKS {
                generator.fill(&mut buf);
                hash.update(&buf);
                client.write_all(&buf).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            half_close(&client);
            let answer = assert_clean_end(&mut client, "uploader after the shutdown");
            (
                format!("{:x}", hash.finalize()),
                String::from_utf8(answer).unwrap(),
            )
        });
        assert!(
            wait_until(TEST_TIMEOUT, || {
                progress.load(Ordering::SeqCst) >= 2 << 20
            }),
            "timed out waiting for the upload under way"
        );
        handle.shutdown();
        let shut_at = progress.load(Ordering::SeqCst);

        // Refused from now on (or reset, for a client queued just as the listener closed; or,
        // on a loaded machine, served: accepted by a worker before it saw the drain begin).
        let started = Instant::now();
        while !expect_no_service(addr, &format!("{mode}: new client while draining"), true) {
            assert!(
                started.elapsed() < TEST_TIMEOUT,
                "{mode}: the listener stayed open"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let (sent, answered) = uploader.join().expect("uploader");
        assert_eq!(sent, expected_hash(41, CHUNKS * CHUNK as u64));
        assert_eq!(answered, sent, "{mode}: what the server received");
        assert!(
            shut_at < CHUNKS * CHUNK as u64,
            "test setup: the upload was meant to be in flight at the shutdown"
        );
        relay
            .join_within(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{mode}: run() returned {e}"));
        let stats = handle.snapshot().stats;
        assert_eq!(
            stats.accepted, 1,
            "{mode}: nothing accepted after the shutdown: {stats:?}"
        );
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.drain_resets, 0, "{mode}: {stats:?}");
    }
}

/// A connection still open when the drain timeout runs out is reset, and `run()` returns.
#[test]
fn drain_timeout_resets_the_connections_left() {
    const DRAIN: Duration = Duration::from_millis(300);
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let server = Server::start(move |mut stream| {
            let mut ping = [0u8; 4];
            stream.read_exact(&mut ping).unwrap();
            stream.write_all(&ping).unwrap();
            let ending = read_ending(&mut stream);
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let handle = relay.handle.clone();
        let mut client = idle_connection(relay.addr);

        let started = Instant::now();
        handle.shutdown_with(handle.drain_delay(), Some(DRAIN));
        assert_reset(
            &mut client,
            &format!("{mode}: client left open past the drain"),
        );
        let took = started.elapsed();
        assert!(
            took >= DRAIN - Duration::from_millis(50),
            "{mode}: reset after {took:?}"
        );
        relay
            .join_within(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{mode}: run() returned {e}"));
        assert!(started.elapsed() < Duration::from_secs(2));

        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        assert_eq!(
            endings.lock().unwrap()[0],
            Ending::Reset(0),
            "{mode}: at the server"
        );
        let stats = handle.snapshot().stats;
        assert_eq!(stats.drain_resets, 1, "{mode}: {stats:?}");
        assert_eq!(stats.closed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode}: {stats:?}");
    }
}

/// An immediate shutdown resets open connections at once, without waiting for the drain
/// timeout (30 s by default).
#[test]
fn shutdown_now_resets_open_connections_at_once() {
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let server = Server::start(move |mut stream| {
            let mut ping = [0u8; 4];
            stream.read_exact(&mut ping).unwrap();
            stream.write_all(&ping).unwrap();
            let ending = read_ending(&mut stream);
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let handle = relay.handle.clone();
        let mut clients = [idle_connection(relay.addr), idle_connection(relay.addr)];

        let started = Instant::now();
        handle.shutdown_now();
        for client in &mut clients {
            assert_reset(client, &format!("{mode}: client at an immediate shutdown"));
        }
        relay
            .join_within(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{mode}: run() returned {e}"));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "{mode}: took {took:?}");
        expect_no_service(
            addr_after(&handle),
            &format!("{mode}: client after the shutdown"),
            false,
        );

        assert!(
            wait_until(TEST_TIMEOUT, || { endings.lock().unwrap().len() == 2 }),
            "timed out waiting for the server's endings"
        );
        assert_eq!(
            endings.lock().unwrap().clone(),
            vec![Ending::Reset(0), Ending::Reset(0)],
            "{mode}: at the server"
        );
        let stats = handle.snapshot().stats;
        assert_eq!(stats.drain_resets, 2, "{mode}: {stats:?}");
        assert_eq!(stats.closed, 2, "{mode}: {stats:?}");
    }
}

fn addr_after(handle: &spliceway::RelayHandle) -> SocketAddr {
    handle.local_addrs()[0].1
}

/// With a drain delay the relay says it is stopping at once but keeps accepting (a load
/// balancer that saw readiness fail may still send clients); a drain without delay (what an
/// upgrade asks) then closes the listeners at once.
#[test]
fn a_drain_delay_keeps_accepting_until_a_drain_without_one() {
    let echo = echo_server();
    let relay = Relay::builder()
        .route(route_to(echo.addr, Mode::Splice))
        .drain_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = relay.handle();
    let addr = addr_after(&handle);
    let thread = std::thread::spawn(move || relay.run());
    assert!(
        wait_until(TEST_TIMEOUT, || handle.is_healthy()),
        "timed out waiting for the relay to run"
    );
    handle.shutdown();
    assert!(handle.is_stopping(), "readiness fails at once");
    assert!(handle.is_healthy(), "a draining relay is still alive");
    for i in 0..3 {
        echo_round_trip(addr, format!("served during the delay {i}").as_bytes());
    }
    handle.shutdown_with(Duration::ZERO, None);
    assert!(
        wait_until(TEST_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
        }),
        "timed out waiting for the listeners to close"
    );
    thread.join().unwrap().unwrap();
    assert!(!handle.is_healthy(), "a stopped relay is not");
    assert_eq!(handle.snapshot().stats.completed, 3);
}

/// A drain delay ends by itself: the listeners close once it has passed.
#[test]
fn a_drain_delay_ends_by_itself() {
    let echo = echo_server();
    let delay = Duration::from_millis(300);
    let relay = Relay::builder()
        .route(route_to(echo.addr, Mode::Splice))
        .drain_delay(delay)
        .build()
        .unwrap();
    let handle = relay.handle();
    let addr = addr_after(&handle);
    let thread = std::thread::spawn(move || relay.run());
    assert!(
        wait_until(TEST_TIMEOUT, || handle.is_healthy()),
        "timed out waiting for the relay to run"
    );
    let started = Instant::now();
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert!(started.elapsed() >= delay, "not before the delay");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}
