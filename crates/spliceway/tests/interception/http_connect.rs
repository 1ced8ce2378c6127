//! `upstream = "http-connect"`: curl over TLS, hashed exchanges with early data, each answer
//! for its case, the request timeout.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spliceway::http_connect::ConnectPattern;
use spliceway::{ConnectTable, ConnectionOptions, Resolution, Route};

use crate::topology::addr::{self, at};
use crate::topology::{
    HashServer, RunningRelay, TlsServer, Topology, WAIT, connect_from, curl_sha256, have_curl, hex,
    reply_pattern,
};

const PROXY_V4: &str = "10.88.1.2:3128";
const PROXY_V6: &str = "[fd88:1::2]:3128";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The names the test resolver knows (no DNS in the namespaces).
fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let ip = match host {
        "v6.s3.test" => addr::A_V6,
        h if h.ends_with(".s3.test") => addr::A_V4,
        "outside.test" => addr::B_OUTSIDE_V4,
        "closed.test" => addr::B_V4,
        "hole.test" => addr::BLACK_HOLE_V4,
        "meta.test" => "169.254.169.254",
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such name",
            ));
        }
    };
    Ok(vec![at(ip, port)])
}

fn route() -> Route {
    let allow = [
        "*.s3.test:7001",
        "*.s3.test:7002",
        "outside.test:7001",
        "closed.test:7002",
        "hole.test:7001",
        "meta.test:80",
        "nx.test:7001",
    ]
    .map(|p| ConnectPattern::parse(p).unwrap())
    .to_vec();
    let mut options = ConnectionOptions::default();
    options.connect_timeout = Duration::from_secs(1);
    options.connect_attempts = 1;
    Route::http_connect(
        "connect",
        ConnectTable::new(allow).request_timeout(REQUEST_TIMEOUT),
        addr::upstream_allow(),
    )
    .options(options)
    .resolution(Resolution::custom("test", lookup))
    .listen(PROXY_V4.parse().unwrap())
    .listen(PROXY_V6.parse().unwrap())
}

/// Reads a response head (up to its empty line) byte by byte, so nothing after it is taken.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "response head cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 4096, "response head too long");
    }
    String::from_utf8(head).unwrap()
}

/// Sends `request` (and nothing else), returns the status line's code and whether the relay
/// then closed the connection.
fn answer_to(topology: &Topology, proxy: &str, request: &[u8]) -> (u16, bool) {
    let mut stream = connect_from(&topology.client, proxy.parse().unwrap()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let head = read_head(&mut stream);
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut rest = [0u8; 16];
    let closed = matches!(stream.read(&mut rest), Ok(0) | Err(_));
    (code, closed)
}

#[test]
fn curl_reaches_a_bucket_through_the_connect_route_over_tls() {
    let Some(topology) = Topology::create() else {
        return;
    };
    if !have_curl() {
        return;
    }
    let Some(tls) = TlsServer::start(&topology.server_a, 7002) else {
        return;
    };
    let relay = RunningRelay::start(&topology, vec![route()]);
    let cert = tls.cert.to_str().unwrap();
    for proxy in [PROXY_V4, PROXY_V6] {
        let fetched = curl_sha256(
            &topology,
            &[
                "--cacert",
                cert,
                "--proxy",
                &format!("http://{proxy}"),
                "https://my-bucket.s3.test:7002/object",
            ],
        )
        .unwrap();
        assert_eq!(fetched, tls.object_sha256, "through {proxy}");
    }
    let stats = relay.wait_for("connect", "both closed", |s| s.closed == 2);
    assert_eq!(stats.http_connect_answers(), [2, 0, 0, 0, 0]);
}

#[test]
fn bytes_sent_with_the_request_are_relayed_first_and_both_ways_hashed() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let _a = HashServer::start(&topology.server_a, "a", &[7001], 256 << 10);
    let relay = RunningRelay::start(&topology, vec![route()]);
    for (proxy, target, server_ip) in [
        (PROXY_V4, "bucket.s3.test:7001", addr::A_V4),
        (PROXY_V6, "v6.s3.test:7001", addr::A_V6),
    ] {
        let upload: Vec<u8> = (0..(1usize << 20))
            .map(|i| (i * 13 + i / 101) as u8)
            .collect();
        let mut stream = connect_from(&topology.client, proxy.parse().unwrap()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        // The request and the first 1000 bytes of payload in one write: early data.
        let mut first = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes();
        first.extend_from_slice(&upload[..1000]);
        stream.write_all(&first).unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        stream.write_all(&upload[1000..]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).unwrap();
        let newline = back.iter().position(|&b| b == b'\n').unwrap();
        let line = String::from_utf8_lossy(&back[..newline]).into_owned();
        assert!(
            line.contains(&format!("sha256={}", hex(&Sha256::digest(&upload)))),
            "{line}"
        );
        assert!(
            line.contains(&format!("local={}", at(server_ip, 7001))),
            "{line}"
        );
        assert!(
            back[newline + 1..] == reply_pattern(256 << 10),
            "reply altered"
        );
    }
    let stats = relay.wait_for("connect", "both completed", |s| s.completed == 2);
    assert_eq!(stats.http_connect_200, 2);
    assert_eq!(
        stats.bytes_client_to_upstream,
        2 << 20,
        "the request is not payload"
    );
}

#[test]
fn each_refusal_gets_its_status_and_is_counted() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let relay = RunningRelay::start(&topology, vec![route()]);
    let connect = |target: &str| format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let mut oversized = b"CONNECT bucket.s3.test:7001 HTTP/1.1\r\nX-Pad: ".to_vec();
    oversized.resize(9 * 1024, b'a');
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET http://bucket.s3.test/ HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"CONNECT bucket.s3.test HTTP/1.1\r\n\r\n".to_vec(), 400),
        (oversized, 400),
        (connect("evil.test:443").into_bytes(), 403),
        (connect("bucket.s3.test:22").into_bytes(), 403),
        (connect("10.88.2.2:7001").into_bytes(), 403),
        (connect("outside.test:7001").into_bytes(), 403),
        (connect("meta.test:80").into_bytes(), 403),
        (connect("closed.test:7002").into_bytes(), 502),
        (connect("nx.test:7001").into_bytes(), 502),
        (connect("hole.test:7001").into_bytes(), 504),
    ];
    let mut expected = [0u64; 5];
    for (request, status) in &cases {
        let (code, closed) = answer_to(&topology, PROXY_V4, request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(code, *status, "{shown}");
        assert!(closed, "{shown}: not closed after {code}");
        let index = [200, 400, 403, 502, 504]
            .iter()
            .position(|s| s == status)
            .unwrap();
        expected[index] += 1;
    }
    let n = cases.len() as u64;
    let stats = relay.wait_for("connect", "every refusal closed", |s| s.closed == n);
    assert_eq!(stats.http_connect_answers(), expected);
    assert_eq!(stats.upstream_connects, 0);
    assert_eq!(
        topology.metadata_packets(),
        0,
        "a packet left for the metadata service"
    );
}

#[test]
fn a_client_that_never_finishes_its_request_is_answered_400_at_the_timeout() {
    let Some(topology) = Topology::create() else {
        return;
    };
    let relay = RunningRelay::start(&topology, vec![route()]);
    let started = Instant::now();
    let (code, closed) = answer_to(
        &topology,
        PROXY_V4,
        b"CONNECT bucket.s3.test:7001 HTTP/1.1\r\n",
    );
    let waited = started.elapsed();
    assert_eq!(code, 400);
    assert!(closed);
    assert!(waited >= REQUEST_TIMEOUT, "answered after {waited:?}");
    assert!(waited < WAIT, "answered after {waited:?}");
    let stats = relay.wait_for("connect", "closed", |s| s.closed == 1);
    assert_eq!(stats.http_connect_400, 1);
    // A silent client too.
    let mut silent = connect_from(&topology.client, PROXY_V4.parse().unwrap()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let head = read_head(&mut silent);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
}
