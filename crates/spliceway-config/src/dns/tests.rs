//! The DNS client against a hand-rolled DNS server on 127.0.0.1 (UDP) that answers every A
//! query with one fixed address and TTL, and AAAA queries with no record; names starting with
//! `missing` get NXDOMAIN with an SOA record in the authority section.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use super::*;

const ANSWER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);
/// What names starting with `metadata` resolve to: EC2's instance metadata service.
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const TTL_SECONDS: u32 = 42;
/// The SOA record's own TTL and its minimum: the negative TTL is the smaller (RFC 2308).
const SOA_TTL_SECONDS: u32 = 300;
const SOA_MINIMUM_SECONDS: u32 = 30;

struct FakeDns {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    names: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The question's name (dotted) and the offset just past the question section.
fn parse_question(packet: &[u8]) -> Option<(String, usize, u16)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), at + 4, qtype))
}

fn answer(query: &[u8]) -> Option<(Vec<u8>, String)> {
    let (name, end, qtype) = parse_question(query)?;
    if name.starts_with("missing") {
        return Some((nxdomain(query, end), name));
    }
    let is_a = qtype == 1;
    let mut reply = Vec::with_capacity(end + 16);
    reply.extend_from_slice(&query[0..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired + available, NOERROR
    reply.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..end]); // the question
    if is_a {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // name pointer, A, IN
        reply.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        reply.extend_from_slice(&[0, 4]);
        let address = if name.starts_with("metadata") {
            METADATA
        } else {
            ANSWER
        };
        reply.extend_from_slice(&address.octets());
    }
    Some((reply, name))
}

/// NXDOMAIN for the question, with the zone's SOA (root names, fixed timers) as authority.
fn nxdomain(query: &[u8], end: usize) -> Vec<u8> {
    let mut reply = Vec::with_capacity(end + 40);
    reply.extend_from_slice(&query[0..2]); // id
    reply.extend_from_slice(&[0x81, 0x83]); // response, recursion desired + available, NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]); // 1 question, 1 authority record
    reply.extend_from_slice(&query[12..end]);
    reply.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]); // name pointer, SOA, IN
    reply.extend_from_slice(&SOA_TTL_SECONDS.to_be_bytes());
    reply.extend_from_slice(&[0, 22, 0, 0]); // rdata length; mname and rname: the root
    for field in [1u32, 3600, 600, 86_400, SOA_MINIMUM_SECONDS] {
        reply.extend_from_slice(&field.to_be_bytes()); // serial, refresh, retry, expire, minimum
    }
    reply
}

fn fake_dns() -> FakeDns {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let (queries, names, stop) = (queries.clone(), names.clone(), stop.clone());
        move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                queries.fetch_add(1, Ordering::SeqCst);
                if let Some((reply, name)) = answer(&buf[..n]) {
                    names.lock().unwrap().push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        }
    });
    FakeDns {
        addr,
        queries,
        names,
        stop,
        thread: Some(thread),
    }
}

/// A name that `/etc/hosts` maps (to a loopback address), other than `localhost`, which
/// hickory answers by itself (RFC 6761).
fn name_in_etc_hosts() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip: std::net::IpAddr = fields.next()?.parse().ok()?;
            let name =
                fields.find(|n| !n.starts_with("localhost") && !n.contains("localdomain"))?;
            (ip != std::net::IpAddr::V4(ANSWER)).then(|| name.to_string())
        })
        .next()
}

#[test]
fn asks_the_given_server_and_reports_the_record_ttl() {
    let server = fake_dns();
    let resolution = resolution(&[server.addr]).unwrap();
    let (addrs, ttl) = resolution.lookup("bucket.s3.test", 443).unwrap();
    assert_eq!(addrs, vec![SocketAddr::new(ANSWER.into(), 443)]);
    let ttl = ttl.expect("a TTL");
    assert!(
        ttl <= Duration::from_secs(u64::from(TTL_SECONDS)) && ttl >= Duration::from_secs(40),
        "ttl {ttl:?}"
    );
    assert!(server.queries.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        server.names.lock().unwrap()[0],
        "bucket.s3.test",
        "asked as a fully qualified name, without search domains"
    );
    assert!(resolution.label().contains(&server.addr.to_string()));
}

#[test]
fn ignores_etc_hosts() {
    let Some(name) = name_in_etc_hosts() else {
        eprintln!("skipped: /etc/hosts maps no name but localhost");
        return;
    };
    let (system, _) = Resolution::system().lookup(&name, 80).unwrap();
    assert!(
        !system.contains(&SocketAddr::new(ANSWER.into(), 80)),
        "{name} should resolve through /etc/hosts to something else: {system:?}"
    );
    let server = fake_dns();
    let resolution = resolution(&[server.addr]).unwrap();
    let (addrs, _) = resolution.lookup(&name, 80).unwrap();
    assert_eq!(
        addrs,
        vec![SocketAddr::new(ANSWER.into(), 80)],
        "{name} must come from the DNS server, not /etc/hosts ({system:?})"
    );
    assert!(server.queries.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_dead_server_is_an_error_not_a_hang() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(200);
    let resolution = resolution_with(&[silent.local_addr().unwrap()], timeout, 1).unwrap();
    let started = Instant::now();
    let error = resolution.lookup("a.test", 80).unwrap_err();
    assert!(error.to_string().contains("a.test"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_name_reports_its_negative_ttl() {
    let server = fake_dns();
    let resolution = resolution(&[server.addr]).unwrap();
    let error = resolution.lookup("missing.s3.test", 443).unwrap_err();
    assert!(error.to_string().contains("missing.s3.test"), "{error}");
    let answer = NegativeAnswer::of(&error).unwrap_or_else(|| panic!("no negative TTL: {error}"));
    assert_eq!(
        answer.ttl(),
        Duration::from_secs(u64::from(SOA_MINIMUM_SECONDS)),
        "the SOA minimum, below the SOA record's own TTL"
    );
    // A server that does not answer gives no negative answer (the relay's default applies).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolution = resolution_with(
        &[silent.local_addr().unwrap()],
        Duration::from_millis(200),
        1,
    )
    .unwrap();
    let error = resolution.lookup("a.test", 80).unwrap_err();
    assert!(NegativeAnswer::of(&error).is_none(), "{error}");
}

#[test]
fn no_server_is_refused() {
    assert!(resolution(&[]).is_err());
}

/// A route whose upstream name the DNS server answers with the metadata address never
/// connects there: the address policy refuses it, and the client is reset. It runs in a
/// network namespace that has only `lo` (the DNS server, the relay and the client with it), so
/// a missing check could not send a packet anywhere.
#[test]
fn a_name_answering_the_metadata_address_through_dns_is_refused() {
    use std::io::Read;
    use std::net::TcpStream;

    if !spliceway_test_kit::require_root("a network namespace with only lo") {
        return;
    }
    // Deleted when dropped, also if the test panics.
    let netns = spliceway_test_kit::Netns::create("dns");
    // Everything below runs on a thread inside the namespace; threads it starts stay there.
    let outcome = netns.run(|| {
        let dns = fake_dns();
        let resolution = resolution(&[dns.addr]).unwrap();
        let route = spliceway::Route::new(
            "r",
            spliceway::UpstreamAddr::parse("metadata.test:80").unwrap(),
        )
        .listen("127.0.0.1:0".parse().unwrap())
        .resolution(resolution);
        let relay = spliceway::Relay::builder().route(route).build().unwrap();
        let handle = relay.handle();
        let addr = relay.local_addrs()[0].1;
        let running = std::thread::spawn(move || relay.run());
        // The refusal can come before connect returns: then connect reports the reset.
        let ending = TcpStream::connect(addr).and_then(|mut client| {
            client.set_read_timeout(Some(Duration::from_secs(10)))?;
            client.read(&mut [0u8; 16])
        });
        let ending = ending.map_err(|e| e.kind());
        // Bounded; the assertions below say what is missing if it never closes.
        let _closed = spliceway_test_kit::wait_until(Duration::from_secs(10), || {
            handle.snapshot().stats.closed >= 1
        });
        let stats = handle.snapshot().stats;
        handle.shutdown_now();
        running.join().unwrap().unwrap();
        (ending, stats)
    });
    let (ending, stats) = outcome;
    assert_eq!(
        ending,
        Err(std::io::ErrorKind::ConnectionReset),
        "{stats:?}"
    );
    assert_eq!(stats.upstream_refused_address_policy, 1, "{stats:?}");
    assert_eq!(
        stats.upstream_connect_failures, 0,
        "never attempted: {stats:?}"
    );
}
