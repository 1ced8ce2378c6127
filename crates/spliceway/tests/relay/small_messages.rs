//! Small messages and short connections, where the relay skips the reads that would only
//! answer EAGAIN (a short read under edge-triggered epoll means the socket was drained) and
//! starts a connection's directions from the events seen while it was connecting. What could go
//! wrong is lost readiness: a message or an end of stream that no event announces again. Each
//! test here would stall (and fail on the socket timeouts) if one were lost.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spliceway::Mode;

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// Short enough that a lost event fails the test quickly instead of after the idle timeout.
const STALL: Duration = Duration::from_secs(5);

/// Many small request/answer round trips of varying sizes over one connection: every message
/// arrives whole and in order (checked by hashing both ends), and the end is clean.
#[test]
fn small_round_trips_arrive_intact_in_order() {
    for mode in MODES {
        let server = echo_server();
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        client.set_nodelay(true).unwrap();
        client.set_read_timeout(Some(STALL)).unwrap();
        let mut generator = Generator::new(11);
        let (mut sent, mut echoed) = (Sha256::new(), Sha256::new());
        let mut total = 0u64;
        for round in 0..2000usize {
            let mut message = vec![0u8; 1 + (round * 37) % 300];
            generator.fill(&mut message);
            client.write_all(&message).unwrap();
            sent.update(&message);
            let mut back = vec![0u8; message.len()];
            client
                .read_exact(&mut back)
                .unwrap_or_else(|e| panic!("{mode}: round {round}: {e} (lost readiness?)"));
            echoed.update(&back);
            total += message.len() as u64;
        }
        half_close(&client);
        assert!(
            assert_clean_end(&mut client, "after the round trips").is_empty(),
            "{mode}: nothing after the echoes"
        );
        assert_eq!(
            format!("{:x}", sent.finalize()),
            format!("{:x}", echoed.finalize()),
            "{mode}: echoed bytes"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.bytes_client_to_upstream, total, "{mode}");
        assert_eq!(stats.bytes_upstream_to_client, total, "{mode}");
        relay.stop();
    }
}

/// A peer whose bytes and end of stream come in one segment (TCP_CORK, then shutdown): after
/// the short read that takes the bytes, the end of stream is already queued and no new event
/// will come for it (the one that came carried EPOLLRDHUP). Client side and upstream side, on
/// many connections, both modes: each end must be passed on.
#[test]
fn bytes_and_end_of_stream_in_one_segment_are_both_passed_on() {
    for mode in MODES {
        // The server answers as soon as it has accepted (before the client's bytes), bytes and
        // FIN in one segment, then reads the request to its end.
        let server = Server::start(|mut stream| {
            let socket = socket2::SockRef::from(&stream);
            socket.set_tcp_cork(true).unwrap();
            stream.write_all(b"banner and goodbye").unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap();
            assert_eq!(request, b"request and end", "the request at the server");
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        for i in 0..200 {
            let mut client = connect(relay.addr);
            client.set_read_timeout(Some(STALL)).unwrap();
            let socket = socket2::SockRef::from(&client);
            socket.set_tcp_cork(true).unwrap();
            client.write_all(b"request and end").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut answer = Vec::new();
            client
                .read_to_end(&mut answer)
                .unwrap_or_else(|e| panic!("{mode}: connection {i}: {e} (end of stream lost?)"));
            assert_eq!(answer, b"banner and goodbye", "{mode}: connection {i}");
        }
        relay.wait_closed(200);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 200, "{mode}: {stats:?}");
        assert_eq!(stats.resets(), 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// Short connections one after another reuse the same connection slot (and often the same
/// descriptor numbers), their sockets closed without leaving epoll first: each must see only
/// its own events. A client that resets right after connecting, and one that completes, in
/// turn: the completed ones stay intact, the reset ones are counted as resets.
#[test]
fn short_connections_reusing_a_slot_see_only_their_own_events() {
    for mode in MODES {
        let server = echo_server();
        let relay = TestRelay::start(route_to(server.addr, mode));
        for i in 0..300u64 {
            if i % 2 == 0 {
                let mut client = connect(relay.addr);
                client.write_all(&[1, 2, 3]).unwrap();
                reset(client);
            } else {
                let message = format!("message {i}");
                echo_round_trip(relay.addr, message.as_bytes());
            }
        }
        relay.wait_closed(300);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.completed, 150, "{mode}: {stats:?}");
        relay.stop();
    }
}
