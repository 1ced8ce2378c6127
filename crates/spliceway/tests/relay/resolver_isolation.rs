//! Clients that choose what is looked up (SNI entries without an upstream) cannot starve name
//! resolution (issue 17, docs/reliability.md "Hostile input"): each route has its own queue
//! and a share of the threads, the lookups of closed connections are dropped unrun, pending
//! lookups are bounded per route and per client address (refusals counted), and failures are
//! cached for their negative TTL. Lookups here block on a gate opened at the end of each test
//! (or when it fails), never longer than TEST_TIMEOUT.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use spliceway::limits::{
    MAX_PENDING_LOOKUPS_PER_CLIENT, MAX_PENDING_LOOKUPS_PER_ROUTE, MAX_RUNNING_LOOKUPS_PER_ROUTE,
};
use spliceway::{NegativeAnswer, Relay, Resolution, Route, SniEntry, SniTable, UpstreamAddr};

use spliceway_test_kit::*;

/// Lookups wait here until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// Waits until open (at most TEST_TIMEOUT).
    fn wait(&self) {
        let (lock, cvar) = &*self.0;
        let open = lock.lock().unwrap();
        let _ = cvar
            .wait_timeout_while(open, TEST_TIMEOUT, |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }

    /// Opens the gate when dropped: declared after the relay, so a failing test releases the
    /// lookups before the relay (which joins its resolver threads) is dropped.
    fn opener(&self) -> impl Drop {
        struct Opener(Gate);
        impl Drop for Opener {
            fn drop(&mut self) {
                self.0.open();
            }
        }
        Opener(self.clone())
    }
}

/// Counts calls of a lookup and the most running at once.
#[derive(Clone, Default)]
struct Calls {
    calls: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Calls {
    fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// An SNI route allowing `patterns`, each resolved per connection (no upstream in the entry).
fn sni_route(name: &str, patterns: &[&str], resolution: Resolution) -> Route {
    let entries = patterns
        .iter()
        .map(|p| SniEntry::new(p.parse().unwrap(), None))
        .collect();
    // The test upstreams are on loopback, which names from SNI may not reach by default.
    Route::sni(name, SniTable::new(entries))
        .listen("127.0.0.1:0".parse().unwrap())
        .upstream_allow(vec!["127.0.0.0/8".parse().unwrap()])
        .resolution(resolution)
}

fn not_found(host: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no such name"))
}

/// Connects to `addr` from the loopback address `from` (any of 127.0.0.0/8 binds on Linux),
/// so that one test can be many clients.
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback source address");
    socket
        .connect_timeout(&addr.into(), TEST_TIMEOUT)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
}

/// Opens a connection from `from` and sends a ClientHello naming `name`.
fn hello_from(from: [u8; 4], addr: SocketAddr, name: &str) -> TcpStream {
    let mut stream = connect_from(from, addr);
    stream.write_all(&client_hello(name)).unwrap();
    stream
}

/// A ClientHello for `name` through `addr` comes back from the echo upstream; returns how long
/// that took.
fn hello_echoed(addr: SocketAddr, name: &str) -> Duration {
    let started = Instant::now();
    let hello = client_hello(name);
    let mut client = connect(addr);
    client.write_all(&hello).unwrap();
    let mut echoed = vec![0u8; hello.len()];
    client
        .read_exact(&mut echoed)
        .unwrap_or_else(|e| panic!("{name}: the hello was not relayed ({e})"));
    assert_eq!(echoed, hello);
    let elapsed = started.elapsed();
    reset(client);
    elapsed
}

/// Polls `check` until it holds; panics after `limit`.
fn wait_within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a reset has arrived on `stream` (reported once: read it only until it has).
fn was_reset(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let reset = matches!(
        (&*stream).read(&mut byte),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset
    );
    stream.set_nonblocking(false).unwrap();
    reset
}

/// Waits until exactly `n` of `streams` have been reset (the others wait for their lookups);
/// returns which.
fn wait_resets(streams: &[TcpStream], n: usize) -> Vec<bool> {
    let mut reset = vec![false; streams.len()];
    assert!(
        wait_until(TEST_TIMEOUT, || {
            for (stream, reset) in streams.iter().zip(reset.iter_mut()) {
                *reset = *reset || was_reset(stream);
            }
            reset.iter().filter(|r| **r).count() >= n
        }),
        "timed out waiting for {n} connections reset"
    );
    assert_eq!(reset.iter().filter(|r| **r).count(), n);
    reset
}

/// Hellos naming hosts whose DNS never answers, from several clients, while clients of a fixed
/// route need their (uncached) name resolved. Before the fix the two resolver threads took the
/// first two hanging names and the fixed route's clients waited their whole connect timeout and
/// were reset.
#[test]
fn names_that_never_resolve_do_not_delay_another_route() {
    let echo = echo_server();
    let echo_addr = echo.addr;
    let gate = Gate::default();
    let hanging = Calls::default();
    let (gate2, hanging2) = (gate.clone(), hanging.clone());
    let sni = sni_route(
        "sni",
        &["*.hang.test"],
        Resolution::custom("hangs", move |host: &str, _| {
            hanging2.enter();
            gate2.wait();
            hanging2.leave();
            Err(not_found(host))
        }),
    );
    let connect_timeout = Duration::from_secs(4);
    let mut fixed = Route::new("fixed", UpstreamAddr::parse("fixed.test:7").unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .with_options(|o| o.connect_timeout = connect_timeout);
    let mut options = fixed.connection_options().clone();
    // Every connection of the fixed route needs a lookup (nothing is cached).
    options.resolve_cache_ttl = Duration::ZERO;
    fixed = fixed.options(options);
    let relay = TestRelay::start_with(
        Relay::builder()
            .route(sni)
            .route(fixed)
            .resolver(move |_, _| Ok(vec![echo_addr])),
    );
    let _open = gate.opener();
    let sni_addr = relay.addr_of("sni");

    // 24 hanging names from three clients (8 each, so none is refused).
    let hangers: Vec<TcpStream> = (0..24u8)
        .map(|i| hello_from([127, 0, 1, 1 + i / 8], sni_addr, &format!("h{i}.hang.test")))
        .collect();
    assert!(
        wait_until(TEST_TIMEOUT, || hanging.calls() >= 2),
        "timed out waiting for hanging lookups under way"
    );

    for round in 0..5 {
        let took = hello_echoed_plain(relay.addr_of("fixed"), round);
        assert!(
            took < connect_timeout / 2,
            "round {round}: the fixed route took {took:?} while another route's DNS hung"
        );
    }
    assert!(
        hanging.most.load(Ordering::SeqCst) <= MAX_RUNNING_LOOKUPS_PER_ROUTE,
        "the hanging route ran {} lookups at once",
        hanging.most.load(Ordering::SeqCst)
    );

    gate.open();
    for (i, mut stream) in hangers.into_iter().enumerate() {
        assert_reset(
            &mut stream,
            &format!("hanging name {i}, once its lookup failed"),
        );
    }
    relay.wait_closed(24 + 5);
    // Route counters are updated just after the relay's.
    let route = |name: &str| relay.handle.snapshot().route(name).unwrap().stats;
    assert!(
        wait_until(TEST_TIMEOUT, || {
            route("sni").upstream_unavailable == 24 && route("fixed").completed == 5
        }),
        "timed out waiting for the routes' counters"
    );
}

/// One echo round trip through a fixed route; returns how long it took.
fn hello_echoed_plain(addr: SocketAddr, round: u8) -> Duration {
    let started = Instant::now();
    echo_round_trip(addr, format!("fixed round {round}").as_bytes());
    started.elapsed()
}

/// Hundreds of clients send a hello naming a slow name and close at once. Their lookups are
/// dropped from the queue (none but those already running is performed), so a later client of
/// the same route is resolved at once. Before the fix every queued lookup ran, one after
/// another, and the later client waited behind all of them.
#[test]
fn lookups_of_closed_connections_are_dropped_unrun() {
    let echo = echo_server();
    let echo_addr = echo.addr;
    let gate = Gate::default();
    let burst = Calls::default();
    let (gate2, burst2) = (gate.clone(), burst.clone());
    // Each burst lookup takes 1 s once the gate opens: run one after another at 4 at a time,
    // 60 of them would take 15 s.
    let lookup_time = Duration::from_secs(1);
    let connect_timeout = Duration::from_secs(20);
    let route = sni_route(
        "sni",
        &["*.burst.test", "later.test"],
        Resolution::custom("slow", move |host: &str, _| {
            if host == "later.test" {
                return Ok(vec![echo_addr]);
            }
            burst2.enter();
            gate2.wait();
            std::thread::sleep(lookup_time);
            burst2.leave();
            Err(not_found(host))
        }),
    )
    .with_options(|o| o.connect_timeout = connect_timeout);
    let relay = TestRelay::start(route);
    let _open = gate.opener();

    // 200 clients from 25 addresses (8 each: no client bound is reached), each naming its own
    // host: 64 are queued (4 of them running), the rest refused by the route's bound.
    let clients = 200;
    let streams: Vec<TcpStream> = (0..clients)
        .map(|i| {
            let from = [127, 0, 2, 1 + (i / MAX_PENDING_LOOKUPS_PER_CLIENT) as u8];
            hello_from(from, relay.addr, &format!("c{i}.burst.test"))
        })
        .collect();
    let refused = (clients - MAX_PENDING_LOOKUPS_PER_ROUTE) as u64;
    // Every hello has been handled once this many were refused: nothing has left the queue.
    relay.wait_for("the route's queue full", |s| s.resolve_refused == refused);

    // They all close (a plain close: end of stream, no reset).
    drop(streams);
    let waiting = (MAX_PENDING_LOOKUPS_PER_ROUTE - MAX_RUNNING_LOOKUPS_PER_ROUTE) as u64;
    wait_within(
        connect_timeout / 2,
        "the closed connections' lookups dropped (not left until their connect timeout)",
        || relay.handle.snapshot().stats.resolve_cancelled == waiting,
    );
    gate.open();

    let took = hello_echoed(relay.addr, "later.test");
    assert!(
        took < lookup_time * 5,
        "a later client waited {took:?} behind the lookups of closed connections"
    );
    relay.wait_closed(clients as u64 + 1);
    assert_eq!(
        burst.calls(),
        MAX_RUNNING_LOOKUPS_PER_ROUTE,
        "only the lookups already running when their clients left were performed"
    );
    let stats = relay.handle.snapshot().stats;
    assert_eq!(stats.resolve_refused, refused, "{stats:?}");
    assert_eq!(stats.upstream_connects, 1, "{stats:?}");
    // The clients that left while resolving, and the later one (reset by the test).
    assert_eq!(
        stats.client_resets,
        MAX_PENDING_LOOKUPS_PER_ROUTE as u64 + 1
    );
}

/// One client may have 8 lookups pending, a route 64; a connection that would need one more is
/// reset at once and counted in `resolve_refused`. A name already pending is joined, never
/// refused, and other clients and routes keep their room.
#[test]
fn pending_lookups_are_bounded_per_client_and_per_route() {
    let gate = Gate::default();
    let calls = Calls::default();
    let (gate2, calls2) = (gate.clone(), calls.clone());
    let hang = move |host: &str, _: u16| {
        calls2.enter();
        gate2.wait();
        calls2.leave();
        Err(not_found(host))
    };
    let relay = TestRelay::start_with(
        Relay::builder()
            .route(sni_route(
                "sni",
                &["*.hang.test"],
                Resolution::custom("hangs", hang.clone()),
            ))
            .route(sni_route(
                "other",
                &["*.hang.test"],
                Resolution::custom("hangs", hang),
            )),
    );
    let _open = gate.opener();
    let (sni, other) = (relay.addr_of("sni"), relay.addr_of("other"));
    let mut open = Vec::new();

    // One client: its 8 names are queued, 3 more are refused.
    let one = [127, 0, 3, 1];
    let per_client = MAX_PENDING_LOOKUPS_PER_CLIENT;
    let first: Vec<TcpStream> = (0..per_client + 3)
        .map(|i| hello_from(one, sni, &format!("a{i}.hang.test")))
        .collect();
    relay.wait_for("3 refused", |s| s.resolve_refused == 3);
    // The client's connections beyond its bound are reset.
    let reset = wait_resets(&first, 3);
    let pending = reset.iter().position(|r| !r).unwrap();
    open.extend(first);
    // The same client on another route is refused too (the bound is the client's)...
    let mut again = hello_from(one, other, "b.hang.test");
    assert_reset(
        &mut again,
        "a ninth lookup for the client, on another route",
    );
    // ...but joining a name it already has pending is not.
    open.push(hello_from(one, sni, &format!("a{pending}.hang.test")));
    relay.wait_for("4 refused, 1 joined", |s| {
        s.resolve_refused == 4 && s.accepted == (per_client + 5) as u64
    });

    // The route: up to 64 pending names in all (8 so far), from many clients; 5 more refused.
    let per_route = MAX_PENDING_LOOKUPS_PER_ROUTE;
    let more = per_route - per_client + 5;
    let many: Vec<TcpStream> = (0..more)
        .map(|i| {
            let from = [127, 0, 4, 1 + (i / per_client) as u8];
            hello_from(from, sni, &format!("r{i}.hang.test"))
        })
        .collect();
    relay.wait_for("5 more refused", |s| s.resolve_refused == 9);
    wait_resets(&many, 5);
    open.extend(many);
    // Another route has room of its own.
    open.push(hello_from([127, 0, 5, 1], other, "c.hang.test"));
    assert_eq!(
        relay
            .handle
            .snapshot()
            .route("sni")
            .unwrap()
            .stats
            .resolve_refused,
        8
    );
    assert_eq!(
        relay
            .handle
            .snapshot()
            .route("other")
            .unwrap()
            .stats
            .resolve_refused,
        1
    );
    assert!(calls.most.load(Ordering::SeqCst) <= 2 * MAX_RUNNING_LOOKUPS_PER_ROUTE);

    // Every client this test opened: the first client's, its try on the other route, its
    // join, the route's many, and the other route's one. (Read from the counters instead, the
    // total could miss the last client if the relay had not accepted it yet.)
    let total = (per_client + 3 + 1 + 1 + more + 1) as u64;
    relay.wait_for("every client accepted", |s| s.accepted == total);
    gate.open();
    drop(open);
    relay.wait_closed(total);
    let stats = relay.handle.snapshot().stats;
    assert_eq!(stats.resolve_refused, 9, "{stats:?}");
}

/// A failed lookup is cached for its negative TTL, even on a route that caches no answer
/// (`resolve_cache_ttl` 0): for as long as the lookup reports (a DNS NXDOMAIN's SOA minimum,
/// here 60 s) or 5 s when it reports nothing, and clients asking meanwhile — at once or later —
/// share one lookup. Before the fix failures were cached for at most 1 s and no longer than the
/// route's TTL, and concurrent requests each ran a lookup.
#[test]
fn failed_lookups_are_cached_for_their_negative_ttl() {
    let with_ttl = Calls::default();
    let plain = Calls::default();
    let (with_ttl2, plain2) = (with_ttl.clone(), plain.clone());
    let route = sni_route(
        "sni",
        &["*.missing.test"],
        Resolution::with_ttl("nxdomain", move |host: &str, _| {
            // A DNS server that answers in 200 ms.
            std::thread::sleep(Duration::from_millis(200));
            if host == "soa.missing.test" {
                with_ttl2.enter();
                with_ttl2.leave();
                Err(
                    NegativeAnswer::new(format!("{host}: NXDOMAIN"), Duration::from_secs(60))
                        .into(),
                )
            } else {
                plain2.enter();
                plain2.leave();
                Err(not_found(host))
            }
        }),
    );
    let mut options = route.connection_options().clone();
    options.resolve_cache_ttl = Duration::ZERO;
    let relay = TestRelay::start(route.options(options));
    let fails = |name: &str| {
        let mut client = hello_from([127, 0, 6, 1], relay.addr, name);
        assert_reset(&mut client, name);
    };

    // Ten clients at once: one lookup.
    let at_once: Vec<TcpStream> = (0..10)
        .map(|_| hello_from([127, 0, 6, 1], relay.addr, "soa.missing.test"))
        .collect();
    for (i, mut client) in at_once.into_iter().enumerate() {
        assert_reset(&mut client, &format!("concurrent client {i}"));
    }
    assert_eq!(with_ttl.calls(), 1, "concurrent requests join one lookup");
    fails("plain.missing.test");
    assert_eq!(plain.calls(), 1);

    // Later (past the old 1 s), well within both negative TTLs: answered from the cache.
    std::thread::sleep(Duration::from_millis(1500));
    fails("soa.missing.test");
    fails("plain.missing.test");
    assert_eq!(with_ttl.calls(), 1, "cached for the reported 60 s");
    assert_eq!(plain.calls(), 1, "cached for the default 5 s");
    relay.wait_closed(13);
    assert_eq!(relay.handle.snapshot().stats.upstream_unavailable, 13);
}
