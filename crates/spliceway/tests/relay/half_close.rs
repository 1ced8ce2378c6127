use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spliceway::Mode;

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// Request/response over one connection: the client sends its request and half-closes; the
/// server answers only after it saw end of stream, then closes.
#[test]
fn server_answers_after_the_client_half_closed() {
    const REQUEST: u64 = 200 * 1024;
    const ANSWER: u64 = 1 << 20;
    for mode in MODES {
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let server = Server::start(move |mut stream| {
            // Reads to end of stream first: the answer cannot start before the relay passed
            // the client's half-close on.
            let got = read_hashed(&mut stream).unwrap();
            record.lock().unwrap().push(got);
            send_generated(&mut stream, 2, ANSWER).unwrap();
        });
        let relay = TestRelay::start(route_to(server.addr, mode));

        let mut client = connect(relay.addr);
        send_generated(&mut client, 1, REQUEST).unwrap();
        half_close(&client);
        let (n, hash) = read_hashed(&mut client)
            .unwrap_or_else(|e| panic!("{mode}: the answer ended with {e}, not a clean end"));
        assert_eq!(n, ANSWER, "{mode}: answer bytes at the client");
        assert_eq!(
            hash,
            expected_hash(2, ANSWER),
            "{mode}: answer hash at the client"
        );
        assert_eq!(
            received.lock().unwrap().clone(),
            vec![(REQUEST, expected_hash(1, REQUEST))],
            "{mode}: request at the server"
        );

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets(), 0, "{mode}: {stats:?}");
        assert_eq!(
            stats.half_close_timeouts + stats.idle_timeouts,
            0,
            "{mode}: {stats:?}"
        );
        assert_eq!(stats.bytes_client_to_upstream, REQUEST, "{mode}");
        assert_eq!(stats.bytes_upstream_to_client, ANSWER, "{mode}");
        relay.stop();
    }
}

/// The server sends everything and half-closes first; the client, having seen end of stream,
/// goes on sending for a while; those later bytes must still reach the server intact.
#[test]
fn client_keeps_sending_after_the_server_half_closed() {
    const GREETING: u64 = 300 * 1024;
    const CHUNKS: u64 = 16;
    const CHUNK: u64 = 64 * 1024;
    for mode in MODES {
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let server = Server::start(move |mut stream| {
            send_generated(&mut stream, 10, GREETING).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let got = read_hashed(&mut stream).unwrap();
            record.lock().unwrap().push(got);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));

        let mut client = connect(relay.addr);
        let (n, hash) = read_hashed(&mut client).unwrap();
        assert_eq!(
            (n, hash),
            (GREETING, expected_hash(10, GREETING)),
            "{mode}: greeting"
        );
        // End of stream seen; now send, in pieces and over time, one generated stream.
        let mut generator = Generator::new(11);
        let mut buf = vec![0u8; CHUNK as usize];
        for _ in 0..CHUNKS {
            generator.fill(&mut buf);
            client.write_all(&buf).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
        half_close(&client);
        assert_clean_end(&mut client, "client after its own half-close");

        assert!(
            wait_until(TEST_TIMEOUT, || { received.lock().unwrap().len() == 1 }),
            "timed out waiting for the server's result"
        );
        assert_eq!(
            received.lock().unwrap()[0],
            (CHUNKS * CHUNK, expected_hash(11, CHUNKS * CHUNK)),
            "{mode}: bytes sent after the server's half-close"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.resets(), 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// Through a one-page pipe (or a small copy buffer) to a server that reads slowly, end of stream
/// must reach the server only after every byte before it.
#[test]
fn end_of_stream_waits_for_buffered_bytes() {
    const LEN: u64 = 2 << 20;
    for mode in MODES {
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let progress = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&progress);
        let server = Server::start(move |mut stream| {
            use sha2::Digest;
            let mut hash = sha2::Sha256::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0u64;
            let mut reads = 0u64;
            loop {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                total += n as u64;
                seen.store(total, Ordering::SeqCst);
                reads += 1;
                if reads.is_multiple_of(2) {
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            record
                .lock()
                .unwrap()
                .push((total, format!("{:x}", hash.finalize())));
        });
        let mut route = route_to(server.addr, mode).with_options(|o| o.pipe_size = 4096);
        let mut options = route.connection_options().clone();
        options.copy_buffer_size = 4096;
        route = route.options(options);
        let relay = TestRelay::start(route);

        let started = Instant::now();
        let mut client = connect(relay.addr);
        send_generated(&mut client, 21, LEN).unwrap();
        half_close(&client);
        let sent_in = started.elapsed();
        // The client is done writing well before the slow server has read everything: the
        // relay holds (in its pipe and the socket buffers) bytes that must precede the end.
        let at_half_close = progress.load(Ordering::SeqCst);
        assert!(
            at_half_close < LEN,
            "test setup: the server was meant to be still reading when the client half-closed"
        );
        assert_clean_end(&mut client, "client after the server closed");

        assert!(
            wait_until(TEST_TIMEOUT, || { received.lock().unwrap().len() == 1 }),
            "timed out waiting for the server's result"
        );
        assert_eq!(
            received.lock().unwrap()[0],
            (LEN, expected_hash(21, LEN)),
            "{mode}: the server read everything before end of stream \
             (client finished writing after {sent_in:?}, when the server had {at_half_close} bytes)"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.bytes_client_to_upstream, LEN, "{mode}");
        relay.stop();
    }
}
