//! Connections handed to a running relay (`RelayHandle::adopt`): relayed intact both ways with
//! the handed-over bytes first, half-close and resets passed on, ends reported once, counted and
//! limited like accepted connections, drained and reset at shutdown, and every refusal giving
//! both sockets back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use spliceway::{
    AdoptRefusal, Adoption, CloseReason, ConnectionEnd, Relay, RelayBuilder, RelayHandle, Route,
    Side, UpstreamAddr,
};

use spliceway_test_kit::*;

/// A relay built from `builder` (no routes unless it has some), running on its own thread;
/// stopped at once when dropped.
struct Running {
    handle: RelayHandle,
    thread: Option<JoinHandle<Result<(), spliceway::Error>>>,
}

impl Running {
    fn start(builder: RelayBuilder) -> Running {
        let relay = builder.build().expect("relay builds");
        let handle = relay.handle();
        let thread = Some(std::thread::spawn(move || relay.run()));
        Running { handle, thread }
    }

    fn join(mut self) -> Result<(), spliceway::Error> {
        self.thread.take().unwrap().join().expect("relay thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two connected loopback sockets: (the far end the test drives, the end the program holds).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let far = connect(listener.local_addr().unwrap());
    let (near, _) = listener.accept().unwrap();
    (far, near)
}

/// A client pair and an upstream pair: (test client, program's client socket, program's
/// upstream socket, test server).
fn two_pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let (client, program_client) = pair();
    let (server, program_upstream) = pair();
    (client, program_client, program_upstream, server)
}

/// An end callback that sends the end on a channel.
fn ends() -> (
    impl FnOnce(ConnectionEnd) + Send + 'static,
    mpsc::Receiver<ConnectionEnd>,
) {
    let (tx, rx) = mpsc::channel();
    (move |end| drop(tx.send(end)), rx)
}

fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    format!("{:x}", h.finalize())
}

#[test]
fn adopted_pair_relays_both_ways_with_the_handed_over_bytes_first() {
    let running = Running::start(Relay::builder()); // no routes: only adopted connections
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    // More than a pipe holds (512 KiB), so handing over takes several reads and writes.
    let client_bytes = generated(1, 1_300_000);
    let upstream_bytes = generated(2, 700_001);
    let client_payload = generated(3, 6 << 20);
    let server_payload = generated(4, 3 << 20);
    let (on_end, ended) = ends();
    let id = running
        .handle
        .adopt(
            Adoption::new(program_client, program_upstream)
                .client_bytes(client_bytes.clone())
                .upstream_bytes(upstream_bytes.clone())
                .on_end(on_end),
        )
        .expect("adopted");

    // The server reads everything first (the client's end of stream reaches it while its own
    // direction is still open: half-close), then answers.
    let server_thread = {
        let server_payload = server_payload.clone();
        std::thread::spawn(move || {
            let received = read_hashed(&mut server).expect("server reads to end of stream");
            server.write_all(&server_payload).unwrap();
            half_close(&server);
            received
        })
    };
    let writer = {
        let mut client = client.try_clone().unwrap();
        let client_payload = client_payload.clone();
        std::thread::spawn(move || {
            client.write_all(&client_payload).unwrap();
            half_close(&client);
        })
    };
    let (down_len, down_hash) = read_hashed(&mut client).expect("client reads to end of stream");
    writer.join().unwrap();
    let (up_len, up_hash) = server_thread.join().unwrap();

    assert_eq!(up_len as usize, client_bytes.len() + client_payload.len());
    assert_eq!(
        up_hash,
        sha(&[&client_bytes, &client_payload]),
        "upstream got"
    );
    assert_eq!(
        down_len as usize,
        upstream_bytes.len() + server_payload.len()
    );
    assert_eq!(
        down_hash,
        sha(&[&upstream_bytes, &server_payload]),
        "client got"
    );

    let end = ended
        .recv_timeout(TEST_TIMEOUT)
        .expect("the end is reported");
    assert_eq!(end.id(), id);
    assert_eq!(end.reason(), &CloseReason::Completed);
    assert_eq!(end.bytes_client_to_upstream(), up_len);
    assert_eq!(end.bytes_upstream_to_client(), down_len);
    assert!(ended.try_recv().is_err(), "reported once");

    assert!(
        wait_until(TEST_TIMEOUT, || {
            running.handle.snapshot().stats.completed == 1
        }),
        "timed out waiting for the close is counted"
    );
    let s = running.handle.snapshot().stats;
    assert_eq!((s.accepted, s.adopted, s.closed), (1, 1, 1), "{s:?}");
    assert_eq!(s.bytes_client_to_upstream, up_len);
    assert_eq!(s.bytes_upstream_to_client, down_len);
    assert_eq!(s.bytes_spliced, up_len + down_len, "moved by splice");
    assert_eq!(running.handle.snapshot().active_connections, 0);
}

#[test]
fn an_adopted_pair_waits_for_the_relay_to_run_and_uses_its_route() {
    let echo = echo_server();
    let route = Route::new("web", UpstreamAddr::Ip(echo.addr))
        .listen("127.0.0.1:0".parse().unwrap())
        .with_options(|o| o.mode = spliceway::Mode::Copy);
    let relay = Relay::builder().route(route).build().unwrap();
    let handle = relay.handle();
    let (mut client, program_client) = pair();
    let program_upstream = connect(echo.addr);
    // Adopted before run(): it waits in the worker's mailbox.
    handle
        .adopt(Adoption::new(program_client, program_upstream).route("web"))
        .expect("adopted");
    let running = Running {
        handle: handle.clone(),
        thread: Some(std::thread::spawn(move || relay.run())),
    };
    client.write_all(b"ping through an adopted pair").unwrap();
    let mut back = [0; 28];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping through an adopted pair");
    let web = handle.snapshot().route("web").unwrap().stats;
    assert_eq!((web.accepted, web.adopted), (1, 1), "counted in its route");
    assert!(
        web.bytes_copied >= 28,
        "with the route's options (copy mode)"
    );
    drop(running);
}

#[test]
fn a_reset_on_either_side_is_passed_on_and_reported() {
    for upstream_resets in [true, false] {
        let running = Running::start(Relay::builder());
        let (mut client, program_client, program_upstream, mut server) = two_pairs();
        let (on_end, ended) = ends();
        running
            .handle
            .adopt(Adoption::new(program_client, program_upstream).on_end(on_end))
            .unwrap();
        client.write_all(b"hello").unwrap();
        let mut got = [0; 5];
        server.read_exact(&mut got).unwrap();
        let (expected, survivor) = if upstream_resets {
            reset(server);
            (CloseReason::UpstreamReset, &mut client)
        } else {
            reset(client);
            (CloseReason::ClientReset, &mut server)
        };
        assert_reset(survivor, "the other side");
        let end = ended.recv_timeout(TEST_TIMEOUT).unwrap();
        assert_eq!(end.reason(), &expected);
        assert_eq!(end.bytes_client_to_upstream(), 5);
    }
}

#[test]
fn shutdown_resets_adopted_connections_and_reports_them() {
    let running = Running::start(Relay::builder());
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let (on_end, ended) = ends();
    running
        .handle
        .adopt(Adoption::new(program_client, program_upstream).on_end(on_end))
        .unwrap();
    client.write_all(b"x").unwrap();
    server.read_exact(&mut [0; 1]).unwrap();
    running.handle.shutdown_with(
        running.handle.drain_delay(),
        Some(std::time::Duration::from_millis(50)),
    );
    assert_reset(&mut client, "client after the drain ran out");
    assert_reset(&mut server, "server after the drain ran out");
    assert_eq!(
        ended.recv_timeout(TEST_TIMEOUT).unwrap().reason(),
        &CloseReason::Shutdown
    );
    let handle = running.handle.clone();
    running.join().expect("run() returns");
    assert_eq!(handle.snapshot().stats.drain_resets, 1);

    // Once stopped, a pair is refused and given back.
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream))
        .unwrap_err();
    assert!(
        matches!(refused.refusal(), AdoptRefusal::Stopping),
        "{refused}"
    );
    let (mut program_client, _program_upstream) = refused.into_sockets();
    program_client.write_all(b"still mine").unwrap();
    let mut got = [0; 10];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still mine");
    drop(server.write_all(b"-"));
}

/// The given-back sockets are the same connections, still usable.
fn assert_usable(refused: spliceway::AdoptError, client: &mut TcpStream, server: &mut TcpStream) {
    let (mut program_client, mut program_upstream) = refused.into_sockets();
    program_client.write_all(b"c").unwrap();
    program_upstream.write_all(b"u").unwrap();
    let (mut c, mut u) = ([0; 1], [0; 1]);
    client.read_exact(&mut c).unwrap();
    server.read_exact(&mut u).unwrap();
    assert_eq!((&c, &u), (b"c", b"u"));
}

#[test]
fn limits_refuse_and_give_the_sockets_back() {
    let echo = echo_server();
    let route = Route::new("r", UpstreamAddr::Ip(echo.addr))
        .listen("127.0.0.1:0".parse().unwrap())
        .max_connections(1);
    let running = Running::start(Relay::builder().route(route).max_connections(2));
    let handle = &running.handle;
    let mut open = Vec::new();
    // One in route r (its limit), one without a route (the relay's limit of two).
    for route in [Some("r"), None] {
        let (client, program_client, program_upstream, server) = two_pairs();
        let adoption = Adoption::new(program_client, program_upstream);
        let adoption = match route {
            Some(name) => adoption.route(name),
            None => adoption,
        };
        handle.adopt(adoption).expect("within the limits");
        open.push((client, server));
    }
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream))
        .unwrap_err();
    assert!(
        matches!(refused.refusal(), AdoptRefusal::ConnectionLimit),
        "{refused}"
    );
    assert_usable(refused, &mut client, &mut server);
    assert_eq!(handle.snapshot().active_connections, 2);

    // Route r is full even after a relay-wide slot frees.
    let (first_client, first_server) = open.remove(1);
    reset(first_client);
    drop(first_server);
    assert!(
        wait_until(TEST_TIMEOUT, || handle.snapshot().active_connections == 1),
        "timed out waiting for a slot frees"
    );
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream).route("r"))
        .unwrap_err();
    assert!(
        matches!(refused.refusal(), AdoptRefusal::RouteConnectionLimit(r) if r == "r"),
        "{refused}"
    );
    assert_usable(refused, &mut client, &mut server);

    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream).route("nope"))
        .unwrap_err();
    assert!(matches!(refused.refusal(), AdoptRefusal::UnknownRoute(r) if r == "nope"));
    assert_usable(refused, &mut client, &mut server);

    let mut bad = spliceway::ConnectionOptions::default();
    bad.idle_timeout = std::time::Duration::ZERO;
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream).options(bad))
        .unwrap_err();
    assert!(matches!(refused.refusal(), AdoptRefusal::InvalidOptions(_)));
    assert_usable(refused, &mut client, &mut server);
}

#[test]
fn sockets_that_are_not_connected_tcp_are_refused_and_given_back() {
    let running = Running::start(Relay::builder());
    let handle = &running.handle;

    // Not TCP: a Unix stream socket as the upstream.
    let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let (_client, program_client) = pair();
    let refused = handle
        .adopt(Adoption::from_fds(
            OwnedFd::from(program_client),
            OwnedFd::from(unix),
        ))
        .unwrap_err();
    assert!(
        matches!(refused.refusal(), AdoptRefusal::NotTcp(Side::Upstream)),
        "{refused}"
    );
    let (_, upstream) = refused.into_sockets();
    let unix = std::os::unix::net::UnixStream::from(OwnedFd::from(upstream));
    assert!(unix.peer_addr().is_ok(), "the Unix socket came back open");

    // Not connected: a TCP socket never connected, as the client.
    let unconnected = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    let (_server, program_upstream) = pair();
    let refused = handle
        .adopt(Adoption::from_fds(
            OwnedFd::from(unconnected),
            OwnedFd::from(program_upstream),
        ))
        .unwrap_err();
    assert!(
        matches!(refused.refusal(), AdoptRefusal::NotConnected(Side::Client)),
        "{refused}"
    );

    // A listening socket is not connected either.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_client, program_client) = pair();
    let refused = handle
        .adopt(Adoption::from_fds(
            OwnedFd::from(program_client),
            OwnedFd::from(listener),
        ))
        .unwrap_err();
    assert!(matches!(
        refused.refusal(),
        AdoptRefusal::NotConnected(Side::Upstream)
    ));

    // Already failed: the upstream's peer reset it and nobody read the error yet.
    let (mut client, program_client, program_upstream, server) = two_pairs();
    reset(server);
    assert!(
        wait_until(TEST_TIMEOUT, || {
            use nix::poll::{PollFd, PollFlags, poll};
            use std::os::fd::AsFd;
            let mut fds = [PollFd::new(program_upstream.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, 10u16).unwrap() > 0
                && fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLERR))
        }),
        "timed out waiting for the reset arrives (POLLERR, the error left unread)"
    );
    let refused = handle
        .adopt(Adoption::new(program_client, program_upstream))
        .unwrap_err();
    match refused.refusal() {
        AdoptRefusal::Closed {
            side: Side::Upstream,
            error,
        } => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("{other}"),
    }
    let (mut program_client, _) = refused.into_sockets();
    program_client.write_all(b"back").unwrap();
    let mut got = [0; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back");

    assert_eq!(handle.snapshot().stats.accepted, 0, "nothing was taken in");
    assert_eq!(handle.snapshot().active_connections, 0, "no slot kept");
}

#[test]
fn a_panicking_end_callback_ends_nothing_else() {
    let running = Running::start(Relay::builder());
    let (client, program_client, program_upstream, server) = two_pairs();
    running
        .handle
        .adopt(
            Adoption::new(program_client, program_upstream)
                .on_end(|_| panic!("a program's bug in its end callback")),
        )
        .unwrap();
    reset(client);
    drop(server);
    assert!(
        wait_until(TEST_TIMEOUT, || running.handle.snapshot().stats.closed == 1),
        "timed out waiting for closed"
    );
    // The worker goes on: a second pair relays.
    let (mut client, program_client, program_upstream, mut server) = two_pairs();
    let (on_end, ended) = ends();
    running
        .handle
        .adopt(Adoption::new(program_client, program_upstream).on_end(on_end))
        .unwrap();
    client.write_all(b"after").unwrap();
    half_close(&client);
    let got = assert_clean_end(&mut server, "server");
    assert_eq!(got, b"after");
    half_close(&server);
    assert_clean_end(&mut client, "client");
    assert_eq!(
        ended.recv_timeout(TEST_TIMEOUT).unwrap().reason(),
        &CloseReason::Completed
    );
}
