//! Integration tests of UDP routes over loopback: sessions per client address, whole
//! datagrams of every size, idle timeout and limits, ICMP errors, access lists, reload and
//! drain. Every wait is bounded; no assertion is about time. Reloads that add, remove and
//! move UDP routes: `reload.rs`; sessions in `RelayHandle::connections`: `observe.rs`;
//! several upstreams: `groups.rs`; sessions ended by their answers' count: `responses.rs`.

mod groups;
mod observe;
mod reload;
mod responses;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spliceway::{
    AccessList, Error, Protocol, Relay, RelayHandle, Route, StatsSnapshot, UdpOptions, UpstreamAddr,
};

/// Upper bound for any single wait in these tests.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay on its own thread; stopped at once when dropped.
struct TestRelay {
    handle: RelayHandle,
    addr: SocketAddr,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl TestRelay {
    fn start(route: Route) -> TestRelay {
        TestRelay::start_all(vec![route])
    }

    /// A relay of `routes`; `addr` is the first route's first address.
    fn start_all(routes: Vec<Route>) -> TestRelay {
        let relay = routes
            .into_iter()
            .fold(Relay::builder(), |builder, route| builder.route(route))
            .build()
            .expect("relay builds");
        let handle = relay.handle();
        let addr = relay.local_addrs()[0].1;
        let thread = std::thread::spawn(move || relay.run());
        TestRelay {
            handle,
            addr,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> StatsSnapshot {
        self.handle.snapshot().stats
    }

    fn wait_for(&self, what: &str, check: impl Fn(&StatsSnapshot) -> bool) {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if check(&stats) {
                return;
            }
            assert!(
                start.elapsed() < TEST_TIMEOUT,
                "timed out waiting for {what}: {stats:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `run()` to return after a shutdown began.
    fn join(mut self) -> Result<(), Error> {
        let thread = self.thread.take().expect("running");
        let start = Instant::now();
        while !thread.is_finished() {
            assert!(start.elapsed() < TEST_TIMEOUT, "the relay did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().expect("relay thread")
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP server that answers every datagram with the same bytes, until dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(bind: &str) -> Echo {
        let socket = UdpSocket::bind(bind).unwrap();
        large_receive_buffer(&socket);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn udp_route(name: &str, listen: &str, upstream: SocketAddr, options: UdpOptions) -> Route {
    Route::new(name, UpstreamAddr::Ip(upstream))
        .listen(listen.parse().unwrap())
        .protocol(Protocol::Udp)
        .udp_options(options)
}

fn options(idle: Duration) -> UdpOptions {
    let mut options = UdpOptions::default();
    options.idle_timeout = idle;
    options
}

/// Gives `socket` a 4 MiB receive buffer (`SO_RCVBUFFORCE` as root, else as much of it as
/// `net.core.rmem_max` allows): the tests send bursts of up to 96 datagrams before reading,
/// and a default buffer (`net.core.rmem_default`, about 208 KiB of skb truesize) holds about
/// 91 answers of 1,000 bytes. With the test's own sockets large, a loss can only be the
/// relay's (its session sockets had the default, and lost 5 of 96 on a busy machine).
fn large_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    const BYTES: usize = 4 << 20;
    if setsockopt(socket, sockopt::RcvBufForce, &BYTES).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &BYTES);
    }
}

fn client(bind: &str) -> UdpSocket {
    let socket = UdpSocket::bind(bind).unwrap();
    large_receive_buffer(&socket);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket
}

/// Sends `payload` to `to` and returns the answer, sending again when none comes (loopback
/// may drop under load); bounded by TEST_TIMEOUT.
fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        socket.send_to(payload, to).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, to, "the answer comes from the relay's address");
                return buf[..n].to_vec();
            }
            Err(_) => assert!(start.elapsed() < TEST_TIMEOUT, "no answer from {to}"),
        }
    }
}

/// Deterministic bytes of `len` for `(client, seq)`.
fn payload(client: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(format!("{client}/{seq}").as_bytes()).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

#[test]
fn hashed_payloads_through_many_concurrent_sessions_reach_only_their_own_client() {
    let echo = Echo::start("127.0.0.1:0");
    let relay = TestRelay::start(udp_route(
        "udp",
        "127.0.0.1:0",
        echo.addr,
        options(Duration::from_secs(60)),
    ));
    const CLIENTS: usize = 24;
    const DATAGRAMS: usize = 40;
    let to = relay.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = client("127.0.0.1:0");
                let mut sent = HashSet::new();
                for seq in 0..DATAGRAMS {
                    let data = payload(c, seq, 1 + (c * 977 + seq * 131) % 9000);
                    sent.insert(Sha256::digest(&data).to_vec());
                    let answer = ask(&socket, to, &data);
                    let hash = Sha256::digest(&answer).to_vec();
                    assert!(
                        sent.contains(&hash),
                        "client {c} got an answer it did not ask for ({} bytes)",
                        answer.len()
                    );
                }
                sent.len()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), DATAGRAMS);
    }
    // Counted just after each send: wait for the last ones.
    relay.wait_for("every datagram counted both ways", |s| {
        s.udp_datagrams_client_to_upstream >= (CLIENTS * DATAGRAMS) as u64
            && s.udp_datagrams_upstream_to_client >= (CLIENTS * DATAGRAMS) as u64
    });
    let stats = relay.stats();
    assert_eq!(
        stats.udp_sessions_started, CLIENTS as u64,
        "one session per client"
    );
    assert!(
        stats.udp_bytes_upstream_to_client <= stats.udp_bytes_client_to_upstream,
        "an echo answers no more than it got"
    );
    assert_eq!(relay.handle.snapshot().udp_sessions, CLIENTS);
}

fn whole_datagrams_of_every_size(family: &str) {
    let echo = Echo::start(&format!("{family}:0"));
    let relay = TestRelay::start(udp_route(
        "udp",
        &format!("{family}:0"),
        echo.addr,
        UdpOptions::default(),
    ));
    let socket = client(&format!("{family}:0"));
    for len in [1, 2, 1400, 9000, 65_507] {
        let data = payload(0, len, len);
        let answer = ask(&socket, relay.addr, &data);
        assert_eq!(answer.len(), len);
        assert_eq!(
            Sha256::digest(&answer),
            Sha256::digest(&data),
            "{len} bytes"
        );
    }
    assert_eq!(relay.stats().udp_dropped_truncated, 0);
}

#[test]
fn datagrams_of_1_and_65507_bytes_arrive_whole_over_ipv4() {
    whole_datagrams_of_every_size("127.0.0.1");
}

#[test]
fn datagrams_of_1_and_65507_bytes_arrive_whole_over_ipv6() {
    whole_datagrams_of_every_size("[::1]");
}

#[test]
fn an_upstream_that_does_not_answer_leaves_a_session_that_idles_out() {
    // Bound, never read: the datagrams queue in its buffer, no ICMP error comes back.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = TestRelay::start(udp_route(
        "udp",
        "127.0.0.1:0",
        silent.local_addr().unwrap(),
        options(Duration::from_millis(300)),
    ));
    let socket = client("127.0.0.1:0");
    for i in 0..3u8 {
        socket.send_to(&[i; 10], relay.addr).unwrap();
    }
    relay.wait_for("three datagrams sent up", |s| {
        s.udp_datagrams_client_to_upstream == 3
    });
    relay.wait_for("the session idles out", |s| s.udp_idle_timeouts == 1);
    let stats = relay.stats();
    assert_eq!(stats.udp_sessions_started, 1);
    assert_eq!(stats.udp_sessions_ended, 1);
    assert_eq!(stats.udp_datagrams_upstream_to_client, 0);
    assert_eq!(relay.handle.snapshot().udp_sessions, 0);
    // The same client again: a new session.
    socket.send_to(b"again", relay.addr).unwrap();
    relay.wait_for("a second session", |s| s.udp_sessions_started == 2);
}

#[test]
fn sessions_are_limited_per_route_and_per_client_address_and_counted() {
    let echo = Echo::start("127.0.0.1:0");
    let mut limits = options(Duration::from_secs(60));
    limits.max_sessions = Some(2);
    limits.max_sessions_per_client = Some(1);
    let relay = TestRelay::start(udp_route("udp", "127.0.0.1:0", echo.addr, limits));
    let first = client("127.0.0.1:0");
    assert_eq!(ask(&first, relay.addr, b"one"), b"one");
    // Same address, another port: over the per-client limit.
    let same_address = client("127.0.0.1:0");
    same_address.send_to(b"two", relay.addr).unwrap();
    relay.wait_for("a client-limit drop", |s| s.udp_dropped_client_limit == 1);
    // Another address takes the route's second session; a third address is over its limit.
    let second = client("127.0.0.2:0");
    assert_eq!(ask(&second, relay.addr, b"three"), b"three");
    let third = client("127.0.0.3:0");
    third.send_to(b"four", relay.addr).unwrap();
    relay.wait_for("a session-limit drop", |s| s.udp_dropped_session_limit == 1);
    let stats = relay.stats();
    assert_eq!(stats.udp_sessions_started, 2);
    // The first client still has its session.
    assert_eq!(ask(&first, relay.addr, b"five"), b"five");
}

#[test]
fn an_icmp_port_unreachable_ends_the_session_and_is_counted() {
    // A port nobody listens on: the kernel answers with ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = TestRelay::start(udp_route(
        "udp",
        "127.0.0.1:0",
        closed,
        options(Duration::from_secs(60)),
    ));
    let socket = client("127.0.0.1:0");
    let start = Instant::now();
    // The first datagram goes out; the error comes back on the upstream socket.
    while relay.stats().udp_upstream_unreachable == 0 {
        assert!(start.elapsed() < TEST_TIMEOUT, "no ICMP error seen");
        socket.send_to(b"anyone?", relay.addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = relay.stats();
    assert!(stats.udp_upstream_unreachable >= 1);
    assert_eq!(
        stats.udp_idle_timeouts, 0,
        "ended by the error, not by time"
    );
    relay.wait_for("every session ended", |s| {
        s.udp_sessions_started == s.udp_sessions_ended
    });
}

#[test]
fn clients_refused_by_the_access_lists_get_no_session_and_are_counted() {
    let echo = Echo::start("127.0.0.1:0");
    let route = udp_route(
        "udp",
        "127.0.0.1:0",
        echo.addr,
        options(Duration::from_secs(60)),
    )
    .access(AccessList {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        deny: vec![],
    });
    let relay = TestRelay::start(route);
    let refused = client("127.0.0.2:0");
    for _ in 0..3 {
        refused.send_to(b"let me in", relay.addr).unwrap();
    }
    relay.wait_for("three denied datagrams", |s| s.udp_dropped_denied == 3);
    let allowed = client("127.0.0.1:0");
    assert_eq!(ask(&allowed, relay.addr, b"hello"), b"hello");
    let stats = relay.stats();
    assert_eq!(stats.udp_sessions_started, 1);
    let route = relay.handle.snapshot();
    assert_eq!(route.route("udp").unwrap().stats.udp_dropped_denied, 3);
}

#[test]
fn a_reload_sends_new_sessions_to_the_new_upstream_and_a_drain_lets_the_rest_idle_out() {
    let old = Echo::start("127.0.0.1:0");
    // The new upstream answers with a prefix, to tell them apart.
    let new = UdpSocket::bind("127.0.0.1:0").unwrap();
    let new_addr = new.local_addr().unwrap();
    new.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let new_thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((n, from)) = new.recv_from(&mut buf) {
                let mut answer = b"new:".to_vec();
                answer.extend_from_slice(&buf[..n]);
                let _ = new.send_to(&answer, from);
            }
        }
    });
    let idle = Duration::from_millis(500);
    let relay = TestRelay::start(udp_route("udp", "127.0.0.1:0", old.addr, options(idle)));
    let early = client("127.0.0.1:0");
    assert_eq!(ask(&early, relay.addr, b"a"), b"a");

    let summary = relay
        .handle
        .reload(
            vec![udp_route("udp", "127.0.0.1:0", new_addr, options(idle))],
            None,
        )
        .expect("reload");
    assert_eq!(summary.changed, vec!["udp".to_string()]);
    let late = client("127.0.0.1:0");
    assert_eq!(ask(&late, relay.addr, b"b"), b"new:b", "a new session");
    assert_eq!(
        ask(&early, relay.addr, b"c"),
        b"c",
        "an open session keeps its upstream"
    );

    // The same file again: nothing changes (a port-0 address keeps the port it got).
    let summary = relay
        .handle
        .reload(
            vec![udp_route("udp", "127.0.0.1:0", new_addr, options(idle))],
            None,
        )
        .expect("reload");
    assert_eq!(summary.unchanged, vec!["udp".to_string()]);
    assert_eq!(relay.handle.local_addrs()[0].1, relay.addr);

    // Drain: no new sessions, the open ones go on until they idle out; then run() returns.
    relay
        .handle
        .shutdown_with(Duration::ZERO, Some(TEST_TIMEOUT));
    let newcomer = client("127.0.0.1:0");
    newcomer.send_to(b"d", relay.addr).unwrap();
    relay.wait_for("a drop while draining", |s| s.udp_dropped_draining >= 1);
    assert_eq!(
        ask(&early, relay.addr, b"e"),
        b"e",
        "open sessions still relay"
    );
    relay.wait_for("both sessions idled out", |s| s.udp_idle_timeouts == 2);
    assert_eq!(relay.stats().udp_drain_ends, 0);
    relay.join().expect("the relay stopped cleanly");
    stop.store(true, Ordering::Relaxed);
    new_thread.join().unwrap();
}

#[test]
fn a_drain_out_of_time_ends_the_open_sessions() {
    let echo = Echo::start("127.0.0.1:0");
    let relay = TestRelay::start(udp_route(
        "udp",
        "127.0.0.1:0",
        echo.addr,
        options(Duration::from_secs(60)),
    ));
    let socket = client("127.0.0.1:0");
    assert_eq!(ask(&socket, relay.addr, b"x"), b"x");
    relay
        .handle
        .shutdown_with(Duration::ZERO, Some(Duration::from_millis(200)));
    relay.wait_for("the drain ended the session", |s| s.udp_drain_ends == 1);
    relay.join().expect("stopped");
}

#[test]
fn udp_routes_refuse_what_only_tcp_has() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut zero = UdpOptions::default();
    zero.max_sessions = Some(0);
    let built = Relay::builder()
        .route(udp_route("udp", "127.0.0.1:0", upstream, zero))
        .build();
    assert!(matches!(built, Err(Error::Invalid(_))), "{built:?}");
    // The same port for a TCP and a UDP route is two sockets, not a clash. The port is found
    // free for UDP, then bound for both: another test may take it for TCP in between (an
    // ephemeral port of its connect), so a bind error tries another port, at most 20 times.
    let (listen, both) = (0..20)
        .find_map(|_| {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("127.0.0.1:{port}");
            let both = Relay::builder()
                .route(udp_route("udp", &listen, upstream, UdpOptions::default()))
                .route(
                    Route::new("tcp", UpstreamAddr::Ip(upstream)).listen(listen.parse().unwrap()),
                )
                .build();
            match both {
                Err(Error::Bind { .. }) => None,
                other => Some((listen, other)),
            }
        })
        .expect("a port free for both TCP and UDP within 20 tries");
    assert!(both.is_ok(), "{both:?}");
    // An upstream that is the route's own address would loop.
    let looping = Relay::builder()
        .route(udp_route(
            "udp",
            &listen,
            listen.parse().unwrap(),
            UdpOptions::default(),
        ))
        .build();
    drop(both);
    let looping = looping.map(|_| ());
    assert!(
        matches!(
            looping,
            Err(Error::SelfLoop { .. }) | Err(Error::Bind { .. })
        ),
        "{looping:?}"
    );
}

/// Whether this kernel sends trains of datagrams (`UDP_SEGMENT`, Linux 4.18); says the test
/// is skipped when it does not.
fn kernel_sends_trains() -> bool {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Setting the default segment size to 0 (none) changes nothing, and fails without GSO.
    let sends =
        nix::sys::socket::setsockopt(&probe, nix::sys::socket::sockopt::UdpGsoSegment, &0).is_ok();
    if !sends {
        eprintln!("skipped: this kernel has no UDP_SEGMENT");
    }
    sends
}

/// A relay of one UDP route, with default options, to `upstream`.
fn udp_relay_to(upstream: SocketAddr) -> TestRelay {
    TestRelay::start(udp_route(
        "udp",
        "127.0.0.1:0",
        upstream,
        UdpOptions::default(),
    ))
}

/// Sends `datagrams` to `to` as one `UDP_SEGMENT` send: all of one size but the last.
fn send_train(socket: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    use std::os::fd::AsRawFd;
    let segment = datagrams[0].len() as u16;
    let bytes: Vec<u8> = datagrams.concat();
    let to = nix::sys::socket::SockaddrStorage::from(to);
    nix::sys::socket::sendmsg(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(&bytes)],
        &[nix::sys::socket::ControlMessage::UdpGsoSegments(&segment)],
        nix::sys::socket::MsgFlags::empty(),
        Some(&to),
    )
    .expect("a UDP_SEGMENT send");
}

/// Receives datagrams on `socket` until `count` came or none came for 2 s.
fn receive(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while got.len() < count {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

/// Sends `sends` (each a train of datagrams, or one datagram) from a new client to `to`, and
/// checks the echo returns exactly those datagrams, each intact, in order (by hash). A run
/// that loses datagrams (loopback under load) is tried again, at most five times; one that
/// returns a datagram that was not sent (merged, cut) or out of order fails at once.
fn datagrams_come_back_one_by_one(to: SocketAddr, sends: &[Vec<Vec<u8>>]) {
    let expected: Vec<_> = sends.iter().flatten().map(Sha256::digest).collect();
    for attempt in 0..5 {
        let socket = client("127.0.0.1:0");
        socket.connect(to).unwrap();
        for send in sends {
            if send.len() == 1 {
                socket.send(&send[0]).unwrap();
            } else {
                send_train(&socket, to, send);
            }
        }
        let got: Vec<_> = receive(&socket, expected.len())
            .iter()
            .map(Sha256::digest)
            .collect();
        // Each datagram that came back is one that was sent, whole, and after the one before
        // it: loopback may drop one (then the run is tried again), never merge, cut or reorder.
        let mut next = 0;
        for (k, hash) in got.iter().enumerate() {
            let Some(at) = expected[next..].iter().position(|e| e == hash) else {
                panic!(
                    "datagram {k} that came back is not one sent, or not in order \
                     (attempt {attempt})"
                );
            };
            next += at + 1;
        }
        if got.len() == expected.len() {
            return;
        }
        eprintln!(
            "attempt {attempt}: {} of {} datagrams came back; again",
            got.len(),
            expected.len()
        );
    }
    panic!("datagrams lost in five attempts");
}

/// The train of the issue: 20 datagrams of 1,000 bytes and one of 300.
fn train_of_21(seed: usize) -> Vec<Vec<u8>> {
    let mut train: Vec<Vec<u8>> = (0..20).map(|i| payload(seed, i, 1000)).collect();
    train.push(payload(seed, 20, 300));
    train
}

#[test]
fn a_train_sent_with_udp_segment_comes_back_as_the_same_datagrams() {
    if !kernel_sends_trains() {
        return;
    }
    let echo = Echo::start("127.0.0.1:0");
    let relay = udp_relay_to(echo.addr);
    datagrams_come_back_one_by_one(relay.addr, &[train_of_21(1)]);
    // Counted just after each send (the answer may be back first): wait for the counts.
    relay.wait_for("each datagram of the train counted both ways", |s| {
        s.udp_datagrams_client_to_upstream >= 21 && s.udp_datagrams_upstream_to_client >= 21
    });
    assert_eq!(relay.stats().udp_dropped_truncated, 0);
}

#[test]
fn trains_of_several_sizes_and_single_datagrams_between_keep_their_boundaries() {
    if !kernel_sends_trains() {
        return;
    }
    let echo = Echo::start("127.0.0.1:0");
    let relay = udp_relay_to(echo.addr);
    let sends = vec![
        (0..5).map(|i| payload(2, i, 64)).collect::<Vec<_>>(),
        vec![payload(2, 10, 1)],
        train_of_21(3),
        vec![payload(2, 11, 9000)],
        (0..3).map(|i| payload(4, i, 1400)).collect(),
        // 64 x 1,000: the kernel's most segments in one send.
        (0..64).map(|i| payload(5, i, 1000)).collect(),
        vec![payload(2, 12, 64)],
    ];
    datagrams_come_back_one_by_one(relay.addr, &sends);
}

/// One receive on `socket` (with `UDP_GRO` on) into `buf`: its length, its segment size when
/// the kernel delivered a train as one receive, and its sender; `None` on an error or timeout.
fn recv_with_segment(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> Option<(
    usize,
    Option<u16>,
    Option<nix::sys::socket::SockaddrStorage>,
)> {
    use std::os::fd::AsRawFd;
    let mut control = nix::cmsg_space!(i32);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let message = nix::sys::socket::recvmsg::<nix::sys::socket::SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        nix::sys::socket::MsgFlags::empty(),
    )
    .ok()?;
    let segment = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::UdpGroSegments(size) => Some(size as u16),
            _ => None,
        })
    });
    Some((message.bytes, segment, message.address))
}

/// An upstream that answers a coalesced receive with the same train (UDP_GRO on, then
/// UDP_SEGMENT back), so that the relay's upstream socket receives trains too.
struct TrainEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TrainEcho {
    fn start() -> TrainEcho {
        use std::os::fd::AsRawFd;
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        large_receive_buffer(&socket);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::UdpGroSegment, &true)
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stopping.load(Ordering::Relaxed) {
                let Some((len, segment, from)) = recv_with_segment(&socket, &mut buf) else {
                    continue;
                };
                let Some(from) = from else { continue };
                let bytes = &buf[..len];
                let gso;
                let cmsgs: &[nix::sys::socket::ControlMessage<'_>] = match segment {
                    Some(size) if usize::from(size) < len => {
                        gso = size;
                        &[nix::sys::socket::ControlMessage::UdpGsoSegments(&gso)]
                    }
                    _ => &[],
                };
                let _ = nix::sys::socket::sendmsg(
                    socket.as_raw_fd(),
                    &[std::io::IoSlice::new(bytes)],
                    cmsgs,
                    nix::sys::socket::MsgFlags::empty(),
                    Some(&from),
                );
            }
        });
        TrainEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TrainEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn trains_from_the_upstream_reach_the_client_as_the_same_datagrams() {
    if !kernel_sends_trains() {
        return;
    }
    let echo = TrainEcho::start();
    let relay = udp_relay_to(echo.addr);
    let sends = vec![
        train_of_21(6),
        vec![payload(7, 0, 5)],
        (0..40).map(|i| payload(8, i, 1400)).collect(),
    ];
    datagrams_come_back_one_by_one(relay.addr, &sends);
    relay.wait_for("each answer counted", |s| {
        s.udp_datagrams_upstream_to_client >= 62
    });
    assert_eq!(relay.stats().udp_dropped_truncated, 0);
}

/// Receives on `socket` (which has `UDP_GRO` on) until `bytes` came or none came for 2 s: each
/// receive's bytes, and its segment size when the kernel delivered a train as one receive.
fn receive_trains(socket: &UdpSocket, bytes: usize) -> Vec<(Vec<u8>, Option<u16>)> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got: Vec<(Vec<u8>, Option<u16>)> = Vec::new();
    while got.iter().map(|(b, _)| b.len()).sum::<usize>() < bytes {
        let Some((len, segment, _)) = recv_with_segment(socket, &mut buf) else {
            break;
        };
        got.push((buf[..len].to_vec(), segment));
    }
    got
}

/// Issue 32's follow-up: a train of answers refused by one client's route (its MTU below the
/// segment size: `EMSGSIZE`) used to turn trains off on the listening socket for every client.
/// In a namespace where the route to 127.0.0.3 has an MTU of 1,200, that client still gets its
/// eight 1,400-byte answers whole (one by one, fragmented and reassembled), and 127.0.0.2 then
/// gets its eight as one train, as before the small-MTU client came.
#[test]
fn a_client_behind_a_small_mtu_does_not_take_trains_from_the_others() {
    use spliceway_test_kit::{Netns, require_root};
    if !require_root("a namespace with a small-MTU route to one client") {
        return;
    }
    let ns = Netns::create("udp-mtu");
    ns.ip(&[
        "route",
        "add",
        "local",
        "127.0.0.3/32",
        "dev",
        "lo",
        "mtu",
        "lock",
        "1200",
        "table",
        "local",
    ]);
    ns.run(|| {
        if !kernel_sends_trains() {
            return;
        }
        let echo = TrainEcho::start();
        let relay = udp_relay_to(echo.addr);
        let eight = |seed: usize| (0..8).map(|i| payload(seed, i, 1400)).collect::<Vec<_>>();
        let hashes =
            |datagrams: &[Vec<u8>]| -> Vec<_> { datagrams.iter().map(Sha256::digest).collect() };

        let small = client("127.0.0.3:0");
        let sent = eight(20);
        send_train(&small, relay.addr, &sent);
        let got = receive(&small, 8);
        assert_eq!(
            hashes(&got),
            hashes(&sent),
            "the small-MTU client's answers, whole"
        );

        let other = client("127.0.0.2:0");
        nix::sys::socket::setsockopt(&other, nix::sys::socket::sockopt::UdpGroSegment, &true)
            .unwrap();
        let sent = eight(21);
        send_train(&other, relay.addr, &sent);
        let got = receive_trains(&other, 8 * 1400);
        assert_eq!(
            got.iter().map(|(b, s)| (b.len(), *s)).collect::<Vec<_>>(),
            vec![(8 * 1400, Some(1400))],
            "the other client's eight answers came as one train"
        );
        let split: Vec<Vec<u8>> = got[0].0.chunks(1400).map(<[u8]>::to_vec).collect();
        assert_eq!(hashes(&split), hashes(&sent));
        relay.wait_for("all sixteen answers counted", |s| {
            s.udp_datagrams_upstream_to_client >= 16
        });
        assert_eq!(relay.stats().udp_dropped_send_failed, 0);
    });
}
