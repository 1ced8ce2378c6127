use std::net::SocketAddr;

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn asker(group: &str, client: [u8; 4]) -> Asker<'_> {
    Asker {
        group,
        client: IpAddr::from(client),
        peer: IpAddr::from(client),
    }
}

/// Lookups that block until the gate opens (bounded by WAIT), counting calls and the most
/// running at once; names starting with `fail` fail.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    calls: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Gate {
    fn resolution(&self, blocking: bool) -> Resolution {
        let gate = self.clone();
        Resolution::custom("gate", move |host: &str, port| {
            gate.calls.fetch_add(1, Ordering::SeqCst);
            let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
            gate.most.fetch_max(now, Ordering::SeqCst);
            if blocking {
                let (lock, cvar) = &*gate.open;
                let open = lock.lock().unwrap();
                let _ = cvar.wait_timeout_while(open, WAIT, |open| !*open).unwrap();
            }
            gate.running.fetch_sub(1, Ordering::SeqCst);
            if host.starts_with("fail") {
                Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
            } else {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            }
        })
    }

    fn open(&self) {
        let (lock, cvar) = &*self.open;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }

    fn wait_running(&self, n: usize) {
        let start = Instant::now();
        while self.running.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < WAIT, "{n} lookups never ran at once");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

type Answers = mpsc::Receiver<(u32, Result<Arc<[Target]>, String>)>;

fn answers() -> (impl Fn(u32) -> Answer, Answers) {
    let (tx, rx) = mpsc::channel();
    let answer_to = move |tag: u32| -> Answer {
        let tx = tx.clone();
        Box::new(move |result| {
            let _ = tx.send((tag, result));
        })
    };
    (answer_to, rx)
}

const TTL: Duration = Duration::from_secs(60);

#[test]
fn record_ttl_overrides_the_route_ttl() {
    let resolver = Resolver::new();
    let resolution = Resolution::with_ttl("ttl", |_: &str, port| {
        Ok((
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
            Some(Duration::from_secs(3)),
        ))
    });
    resolver
        .resolve_blocking(&resolution, "x.test", 1, Duration::from_secs(600))
        .unwrap();
    let now = Instant::now();
    assert!(resolver.cached(&resolution, "x.test", 1, now).is_some());
    assert!(
        resolver
            .cached(&resolution, "x.test", 1, now + Duration::from_secs(4))
            .is_none(),
        "expired after the record's TTL, not the route's 600 s"
    );
}

#[test]
fn loopback_and_own_addresses_are_local() {
    assert!(is_local("127.0.0.1".parse().unwrap()));
    assert!(is_local("127.1.2.3".parse().unwrap()));
    // TEST-NET-3 is never assigned to a host.
    assert!(!is_local("203.0.113.7".parse().unwrap()));
}

#[test]
fn lookups_are_cached_and_answered_through_the_callback() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let resolution = Resolution::custom("test", move |host: &str, port| {
        counter.fetch_add(1, Ordering::SeqCst);
        if host == "good.test" {
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
        }
    });
    let other = Resolution::system();
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let a = asker("r", [10, 0, 0, 1]);
    let _good = resolver.request(&resolution, "good.test", 80, TTL, a, answer_to(10));
    let _bad = resolver.request(&resolution, "bad.test", 80, TTL, a, answer_to(20));
    for _ in 0..2 {
        match rx.recv_timeout(WAIT).unwrap() {
            (10, result) => {
                let targets = result.unwrap();
                assert_eq!(targets[0].addr.port(), 80);
                assert!(targets[0].local);
            }
            (20, result) => assert!(result.unwrap_err().contains("no such name")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let now = Instant::now();
    assert!(
        resolver
            .cached(&resolution, "good.test", 80, now)
            .unwrap()
            .is_ok()
    );
    assert!(
        resolver
            .cached(&resolution, "bad.test", 80, now)
            .unwrap()
            .is_err()
    );
    assert!(resolver.cached(&resolution, "good.test", 81, now).is_none());
    assert!(
        resolver.cached(&other, "good.test", 80, now).is_none(),
        "another lookup does not share the answer"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    resolver.stop();
}

#[test]
fn failures_are_cached_for_their_negative_ttl_whatever_the_route_ttl() {
    let reported = Resolution::with_ttl("soa", |host: &str, _| {
        let ttl = match host {
            "long.test" => Duration::from_secs(3600),
            "zero.test" => Duration::ZERO,
            _ => Duration::from_secs(30),
        };
        Err(NegativeAnswer::new(format!("{host}: NXDOMAIN"), ttl).into())
    });
    let plain = Resolution::custom("plain", |_: &str, _| {
        Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
    });
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let mut tickets = Vec::new();
    let names = [
        (&reported, "soa.test"),
        (&reported, "long.test"),
        (&reported, "zero.test"),
        (&plain, "plain.test"),
    ];
    for (i, (resolution, name)) in names.into_iter().enumerate() {
        // A route TTL of 0 caches no success, but failures still are.
        let a = asker("r", [10, 0, 0, 1]);
        let ticket = resolver.request(resolution, name, 1, Duration::ZERO, a, answer_to(0));
        tickets.push(ticket.unwrap());
        let (_, result) = rx.recv_timeout(WAIT).unwrap();
        assert!(result.is_err(), "{i}");
    }
    let now = Instant::now();
    let cached = |resolution: &Resolution, name: &str, after: u64| {
        resolver
            .cached(resolution, name, 1, now + Duration::from_secs(after))
            .is_some()
    };
    assert!(cached(&reported, "soa.test", 29) && !cached(&reported, "soa.test", 31));
    let max = MAX_NEGATIVE_TTL.as_secs();
    assert!(cached(&reported, "long.test", max - 1) && !cached(&reported, "long.test", max + 1));
    assert!(
        !cached(&reported, "zero.test", 2),
        "at least MIN_TTL, at most a little more"
    );
    let default = DEFAULT_NEGATIVE_TTL.as_secs();
    assert!(cached(&plain, "plain.test", default - 1));
    assert!(!cached(&plain, "plain.test", default + 1));
    assert!(
        resolver
            .cached(&reported, "soa.test", 1, now)
            .unwrap()
            .unwrap_err()
            .contains("soa.test: NXDOMAIN")
    );
    resolver.stop();
}

#[test]
fn requests_for_a_pending_name_join_its_lookup() {
    let gate = Gate::default();
    let resolution = gate.resolution(true);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let mut tickets = Vec::new();
    for i in 0..20 {
        // Each from its own client: joining costs no client its bound either.
        let a = asker("r", [10, 0, 0, i as u8]);
        tickets.push(
            resolver
                .request(&resolution, "one.test", 443, TTL, a, answer_to(i))
                .unwrap(),
        );
    }
    gate.open();
    let mut tags: Vec<u32> = (0..20).map(|_| rx.recv_timeout(WAIT).unwrap().0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..20).collect::<Vec<_>>());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "one lookup for all");
    resolver.stop();
}

#[test]
fn a_hanging_route_neither_delays_nor_starves_another() {
    let hanging = Gate::default();
    let slow = hanging.resolution(true);
    let fast = Gate::default().resolution(false);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let mut tickets = Vec::new();
    for i in 0..40u32 {
        let name = format!("hang{i}.test");
        let a = asker("sni", [10, 0, (i / 8) as u8, 1]);
        tickets.push(resolver.request(&slow, &name, 443, TTL, a, answer_to(i)));
    }
    hanging.wait_running(MAX_RUNNING_LOOKUPS_PER_ROUTE);
    for i in 0..10u32 {
        let name = format!("fixed{i}.test");
        let a = asker("fixed", [10, 1, 0, 1]);
        let ticket = resolver.request(&fast, &name, 443, TTL, a, answer_to(100 + i));
        let (tag, result) = rx.recv_timeout(WAIT).expect("the other route is answered");
        assert_eq!(tag, 100 + i);
        assert!(result.is_ok());
        drop(ticket);
    }
    assert_eq!(
        hanging.most.load(Ordering::SeqCst),
        MAX_RUNNING_LOOKUPS_PER_ROUTE,
        "a route runs at most its share of lookups"
    );
    hanging.open();
    resolver.stop();
}

#[test]
fn threads_are_bounded_however_many_routes_hang() {
    let gate = Gate::default();
    let slow = gate.resolution(true);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let mut tickets = Vec::new();
    let groups: Vec<String> = (0..8).map(|g| format!("route{g}")).collect();
    for (g, group) in groups.iter().enumerate() {
        for i in 0..MAX_RUNNING_LOOKUPS_PER_ROUTE {
            let name = format!("n{i}.test");
            let a = asker(group, [10, 2, g as u8, i as u8]);
            tickets.push(resolver.request(&slow, &name, 1, TTL, a, answer_to(0)));
        }
    }
    gate.wait_running(MAX_LOOKUP_THREADS);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(gate.most.load(Ordering::SeqCst), MAX_LOOKUP_THREADS);
    assert!(resolver.shared.lock_queue().threads <= MAX_LOOKUP_THREADS);
    gate.open();
    for _ in 0..groups.len() * MAX_RUNNING_LOOKUPS_PER_ROUTE {
        let _ = rx
            .recv_timeout(WAIT)
            .expect("every lookup answered in the end");
    }
    resolver.stop();
}

#[test]
fn a_withdrawn_request_is_not_answered_and_its_lookup_not_run() {
    let gate = Gate::default();
    let slow = gate.resolution(true);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let a = asker("r", [10, 3, 0, 1]);
    let running: Vec<Ticket> = (0..MAX_RUNNING_LOOKUPS_PER_ROUTE)
        .map(|i| {
            let a = asker("r", [10, 3, 1, i as u8]);
            let name = format!("running{i}.test");
            resolver
                .request(&slow, &name, 1, TTL, a, answer_to(1))
                .unwrap()
        })
        .collect();
    gate.wait_running(MAX_RUNNING_LOOKUPS_PER_ROUTE);
    let first = resolver.request(&slow, "queued.test", 1, TTL, a, answer_to(2));
    let second = resolver.request(&slow, "queued.test", 1, TTL, a, answer_to(3));
    assert!(
        !first.unwrap().cancel(),
        "another request still waits for it"
    );
    assert!(
        second.unwrap().cancel(),
        "the last waiter left: off the queue"
    );
    // Withdrawing from a running lookup does not stop it (nothing can).
    let mut running = running.into_iter();
    assert!(!running.next().unwrap().cancel());
    gate.open();
    for _ in 1..MAX_RUNNING_LOOKUPS_PER_ROUTE {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 1);
    }
    // The queued name's place is free again: a new lookup runs to the end.
    let last = resolver.request(&slow, "after.test", 1, TTL, a, answer_to(4));
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 4);
    drop(last);
    assert_eq!(
        gate.calls.load(Ordering::SeqCst),
        MAX_RUNNING_LOOKUPS_PER_ROUTE + 1,
        "queued.test never looked up"
    );
    assert!(rx.try_recv().is_err(), "no answer for withdrawn requests");
    resolver.stop();
}

#[test]
fn new_lookups_are_bounded_per_client_and_per_route() {
    let gate = Gate::default();
    let slow = gate.resolution(true);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, _rx) = answers();
    let tickets = std::cell::RefCell::new(Vec::new());
    let ask = |group: &str, client: IpAddr, name: &str| {
        let a = Asker {
            group,
            client,
            peer: client,
        };
        resolver
            .request(&slow, name, 1, TTL, a, answer_to(0))
            .map(|t| tickets.borrow_mut().push(t))
    };
    let one: IpAddr = "10.4.0.1".parse().unwrap();
    for i in 0..MAX_PENDING_LOOKUPS_PER_CLIENT {
        ask("a", one, &format!("c{i}.test")).unwrap();
    }
    assert_eq!(ask("a", one, "more.test"), Err(Refused::Client));
    assert_eq!(
        ask("b", one, "more.test"),
        Err(Refused::Client),
        "over all routes"
    );
    assert_eq!(ask("a", one, "c0.test"), Ok(()), "joining is never refused");
    // The same client written IPv4-mapped is the same client.
    let mapped: IpAddr = "::ffff:10.4.0.1".parse().unwrap();
    assert_eq!(ask("a", mapped, "more.test"), Err(Refused::Client));
    // An IPv6 client counts by its /64.
    for i in 0..MAX_PENDING_LOOKUPS_PER_CLIENT {
        let client = format!("2001:db8:0:1::{:x}", i + 1).parse().unwrap();
        ask("b", client, &format!("v6-{i}.test")).unwrap();
    }
    let same_64 = "2001:db8:0:1:ffff::1".parse().unwrap();
    assert_eq!(ask("b", same_64, "v6-more.test"), Err(Refused::Client));
    let other_64 = "2001:db8:0:2::1".parse().unwrap();
    assert_eq!(ask("b", other_64, "v6-more.test"), Ok(()));
    // Route "c" up to its bound, from many clients.
    for i in 0..MAX_PENDING_LOOKUPS_PER_ROUTE {
        let client = IpAddr::from([10, 5, (i / 8) as u8, (i % 8) as u8]);
        ask("c", client, &format!("r{i}.test")).unwrap();
    }
    let fresh = IpAddr::from([10, 6, 0, 1]);
    assert_eq!(ask("c", fresh, "one-more.test"), Err(Refused::Group));
    assert_eq!(
        ask("c", fresh, "r0.test"),
        Ok(()),
        "joining is never refused"
    );
    assert_eq!(
        ask("d", fresh, "one-more.test"),
        Ok(()),
        "another route has room"
    );
    // Withdrawing a waiting lookup frees its places.
    let ticket = {
        let mut tickets = tickets.borrow_mut();
        let at = tickets
            .iter()
            .position(|t| t.group == "c" && t.key.1 == "r63.test")
            .unwrap();
        tickets.swap_remove(at)
    };
    assert!(ticket.cancel());
    assert_eq!(ask("c", fresh, "one-more.test"), Ok(()));
    gate.open();
    drop(tickets);
    resolver.stop();
}

#[test]
fn clients_count_by_address_and_ipv6_by_its_64() {
    let key = |s: &str| {
        let ip: IpAddr = s.parse().unwrap();
        let (peer, claimed) = client_key(ip, ip);
        assert_eq!(peer, claimed);
        claimed.to_string()
    };
    assert_eq!(key("192.0.2.7"), "192.0.2.7");
    assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:2::ffff"), key("2001:db8:1:2:aaaa::1"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
}

/// Issue 24, finding 1: lookups were bounded by the address a PROXY header *claimed*, so eight
/// connections claiming to be a victim locked the victim's real connections out. They count by
/// TCP peer and claimed address together now.
#[test]
fn a_peer_claiming_another_address_does_not_use_up_that_clients_lookups() {
    let gate = Gate::default();
    let slow = gate.resolution(true);
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, _rx) = answers();
    let tickets = std::cell::RefCell::new(Vec::new());
    let ask = |peer: &str, client: &str, name: &str| {
        let a = Asker {
            group: "r",
            client: client.parse().unwrap(),
            peer: peer.parse().unwrap(),
        };
        resolver
            .request(&slow, name, 1, TTL, a, answer_to(0))
            .map(|t| tickets.borrow_mut().push(t))
    };
    let (balancer, forger, victim) = ("10.0.0.2", "10.66.0.1", "192.0.2.7");
    for i in 0..MAX_PENDING_LOOKUPS_PER_CLIENT {
        ask(forger, victim, &format!("forged{i}.test")).unwrap();
    }
    assert_eq!(
        ask(forger, victim, "forged-more.test"),
        Err(Refused::Client),
        "the forger is bounded"
    );
    assert_eq!(
        ask(balancer, victim, "real.test"),
        Ok(()),
        "the victim's connections through the balancer are not"
    );
    assert_eq!(ask(victim, victim, "direct.test"), Ok(()));
    gate.open();
    drop(tickets);
    resolver.stop();
}

#[test]
fn a_panicking_lookup_is_an_error_and_frees_its_place() {
    let resolution = Resolution::custom("panics", |host: &str, port| {
        if host == "boom.test" {
            panic!("a broken lookup");
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let resolver = Resolver::new();
    resolver.start();
    let (answer_to, rx) = answers();
    let a = asker("r", [10, 7, 0, 1]);
    let _boom = resolver.request(&resolution, "boom.test", 1, TTL, a, answer_to(1));
    assert!(
        rx.recv_timeout(WAIT)
            .unwrap()
            .1
            .unwrap_err()
            .contains("panicked")
    );
    let _ok = resolver.request(&resolution, "ok.test", 1, TTL, a, answer_to(2));
    assert!(rx.recv_timeout(WAIT).unwrap().1.is_ok());
    resolver.stop();
}
