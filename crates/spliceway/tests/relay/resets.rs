use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spliceway::Mode;

use spliceway_test_kit::*;

const MODES: [Mode; 2] = [Mode::Splice, Mode::Copy];

/// The upstream sends 1 MiB and then resets: the client must see a reset, never a clean end.
#[test]
fn upstream_reset_mid_transfer_reaches_the_client_as_a_reset() {
    for mode in MODES {
        let server = Server::start(|mut stream| {
            let mut go = [0u8; 2];
            stream.read_exact(&mut go).unwrap();
            send_generated(&mut stream, 5, 1 << 20).unwrap();
            reset(stream);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        client.write_all(b"go").unwrap();
        assert_reset(
            &mut client,
            &format!("{mode}: client after the upstream reset"),
        );

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.upstream_resets, 1, "{mode}: {stats:?}");
        assert_eq!(stats.client_resets, 0, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// The client resets in the middle of an upload: the server's read must end in a reset, not in
/// an end of stream that would make the truncated upload look complete.
#[test]
fn client_reset_mid_upload_reaches_the_server_as_a_reset() {
    const SENT: u64 = 512 * 1024;
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let progress = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&progress);
        let server = Server::start(move |mut stream| {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            let ending = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break Ending::Clean(total),
                    Ok(n) => {
                        total += n as u64;
                        seen.store(total, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        break Ending::Reset(total);
                    }
                    Err(e) => break Ending::Other(total, e.to_string()),
                }
            };
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        send_generated(&mut client, 6, SENT).unwrap();
        assert!(
            wait_until(TEST_TIMEOUT, || {
                progress.load(Ordering::SeqCst) >= SENT / 2
            }),
            "timed out waiting for the upload under way"
        );
        reset(client);

        assert!(
            wait_until(TEST_TIMEOUT, || endings.lock().unwrap().len() == 1),
            "timed out waiting for the server's ending"
        );
        let ending = endings.lock().unwrap()[0].clone();
        assert!(
            matches!(ending, Ending::Reset(_)),
            "{mode}: the server saw {ending:?}, expected a reset"
        );
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.client_resets, 1, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_resets, 0, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// The client sends its request and half-closes; the upstream reads it and resets instead of
/// answering: the client, still waiting for the answer, must see a reset.
#[test]
fn upstream_reset_after_the_client_half_closed() {
    const REQUEST: u64 = 100 * 1024;
    for mode in MODES {
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let server = Server::start(move |mut stream| {
            let got = read_hashed(&mut stream).unwrap();
            record.lock().unwrap().push(got);
            reset(stream);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        send_generated(&mut client, 7, REQUEST).unwrap();
        half_close(&client);
        assert_reset(
            &mut client,
            &format!("{mode}: half-closed client after the upstream reset"),
        );
        assert_eq!(
            received.lock().unwrap().clone(),
            vec![(REQUEST, expected_hash(7, REQUEST))],
            "{mode}: the request reached the server whole before its reset"
        );

        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.upstream_resets, 1, "{mode}: {stats:?}");
        assert_eq!(stats.client_resets, 0, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// A client that resets right after connecting, before sending anything: counted as a client
/// reset, its upstream (if one was opened) is reset too, and the relay goes on serving.
#[test]
fn client_reset_right_after_connecting() {
    for mode in MODES {
        let endings = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&endings);
        let server = Server::start(move |mut stream| {
            let mut first = [0u8; 4];
            let ending = match stream.read(&mut first) {
                // The reset client: nothing arrives before the relay resets this side.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ending::Reset(0),
                Ok(0) => Ending::Clean(0),
                Err(e) => Ending::Other(0, e.to_string()),
                Ok(n) => {
                    // The normal client: echo.
                    stream.write_all(&first[..n]).unwrap();
                    let mut rest = Vec::new();
                    stream.read_to_end(&mut rest).unwrap();
                    stream.write_all(&rest).unwrap();
                    Ending::Clean((n + rest.len()) as u64)
                }
            };
            record.lock().unwrap().push(ending);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));

        let client = connect(relay.addr);
        reset(client);
        relay.wait_for("the reset client handled", |s| {
            s.accepted == 1 && s.closed == 1
        });
        echo_round_trip(relay.addr, b"still serving");
        relay.wait_closed(2);

        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.accepted, 2, "{mode}: {stats:?}");
        assert_eq!(stats.client_resets, 1, "{mode}: {stats:?}");
        assert_eq!(stats.completed, 1, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_resets, 0, "{mode}: {stats:?}");
        // Whatever upstream connection the reset client got was reset, not ended cleanly. The
        // relay may drop its connect attempt before or after the server accepted it, so the
        // server sees the echo and at most one reset connection.
        assert!(
            wait_until(TEST_TIMEOUT, || {
                endings.lock().unwrap().contains(&Ending::Clean(13))
            }),
            "timed out waiting for the echo's ending"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut endings = endings.lock().unwrap().clone();
        endings.sort_by_key(|e| format!("{e:?}"));
        let expected: Vec<Ending> = if endings.len() == 2 {
            vec![Ending::Clean(13), Ending::Reset(0)]
        } else {
            vec![Ending::Clean(13)]
        };
        assert_eq!(endings, expected, "{mode}: what the server saw");
        relay.stop();
    }
}

/// Issue 25: the AWS CLI ends most finished exchanges with FIN then RST (it closes with the
/// server's TLS close_notify unread), and every one was logged and counted as a client reset,
/// so the reset counters said nothing about aborts. A client that resets after its own end of
/// stream has been passed on whole is counted apart (`client_resets_after_end`); the upstream,
/// which got every byte and the end, is still reset; a reset mid-upload stays a client reset.
#[test]
fn a_client_reset_after_its_own_end_of_stream_is_counted_apart() {
    const REQUEST: u64 = 64 * 1024;
    for mode in MODES {
        let received: Received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let server = Server::start(move |mut stream| {
            let got = read_hashed(&mut stream).unwrap();
            record.lock().unwrap().push(got);
            // The answer the client will not read (a TLS close_notify, say), until it fails:
            // far more than every buffer on the way can hold (4 MiB once fitted, and the relay
            // then ended the exchange cleanly before the client's reset arrived), so that the
            // reset always comes first. The relay's reset of this socket ends the send.
            let _ = send_generated(&mut stream, 9, 256 << 20);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        send_generated(&mut client, 8, REQUEST).unwrap();
        half_close(&client);
        assert!(
            wait_until(TEST_TIMEOUT, || { !received.lock().unwrap().is_empty() }),
            "timed out waiting for the request at the server"
        );
        reset(client);
        relay.wait_closed(1);
        assert_eq!(
            received.lock().unwrap().clone(),
            vec![(REQUEST, expected_hash(8, REQUEST))],
            "{mode}: the request reached the server whole"
        );
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.client_resets_after_end, 1, "{mode}: {stats:?}");
        assert_eq!(stats.client_resets, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}

/// The same for an upstream that sends its whole answer and its end, then resets (a server
/// closing with the request partly unread): the client gets every byte and then a reset; the
/// end is counted as `upstream_resets_after_end`, not as an upstream abort.
#[test]
fn an_upstream_reset_after_its_own_end_of_stream_is_counted_apart() {
    const ANSWER: u64 = 256 * 1024;
    for mode in MODES {
        let server = Server::start(move |mut stream| {
            let mut go = [0u8; 2];
            stream.read_exact(&mut go).unwrap();
            send_generated(&mut stream, 10, ANSWER).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            // Let the end of stream travel, then reset.
            std::thread::sleep(std::time::Duration::from_millis(200));
            reset(stream);
        });
        let relay = TestRelay::start(route_to(server.addr, mode));
        let mut client = connect(relay.addr);
        client.write_all(b"go").unwrap();
        let (n, hash) = read_hashed(&mut client).expect("the whole answer, then its end");
        assert_eq!((n, hash), (ANSWER, expected_hash(10, ANSWER)), "{mode}");
        relay.wait_closed(1);
        let stats = relay.handle.snapshot().stats;
        assert_eq!(stats.upstream_resets_after_end, 1, "{mode}: {stats:?}");
        assert_eq!(stats.upstream_resets, 0, "{mode}: {stats:?}");
        relay.stop();
    }
}
