//! `udp_responses` (`UdpOptions::responses`, nginx's `proxy_responses`): a session whose every
//! datagram has had its answers ends at once, not at its idle timeout (a DNS relay's clients
//! ask each question from a new port); with 0, a session ends once its datagrams have left.
//! The idle timeout is 60 s throughout, so a session that ends within the test ended by count.

use std::net::UdpSocket;
use std::time::Duration;

use super::{Echo, TestRelay, ask, client, options, udp_route};

fn relay_with_responses(upstream: std::net::SocketAddr, responses: Option<u32>) -> TestRelay {
    let mut udp = options(Duration::from_secs(60));
    udp.responses = responses;
    TestRelay::start(udp_route("dns", "127.0.0.1:0", upstream, udp))
}

#[test]
fn a_session_ends_once_each_datagram_has_had_its_answer() {
    let echo = Echo::start("127.0.0.1:0");
    let relay = relay_with_responses(echo.addr, Some(1));
    let socket = client("127.0.0.1:0");
    assert_eq!(ask(&socket, relay.addr, b"question 1"), b"question 1");
    relay.wait_for("the answered session ended", |s| {
        s.udp_responses_ends == 1 && s.udp_sessions_ended == 1
    });
    // The same client asks again: a new session, ended the same way.
    assert_eq!(ask(&socket, relay.addr, b"question 2"), b"question 2");
    relay.wait_for("the second session ended", |s| {
        s.udp_sessions_started == 2 && s.udp_responses_ends == 2
    });
    let stats = relay.stats();
    assert_eq!(stats.udp_idle_timeouts, 0);
    assert_eq!(stats.udp_datagrams_upstream_to_client, 2);
}

#[test]
fn a_session_waits_for_every_answer_it_expects() {
    // The echo answers once; two are expected: the session stays open.
    let echo = Echo::start("127.0.0.1:0");
    let relay = relay_with_responses(echo.addr, Some(2));
    let (first, second) = (client("127.0.0.1:0"), client("127.0.0.1:0"));
    // The second client's answer is counted in a later turn of the worker than the first's,
    // after anything the first turn would have ended.
    assert_eq!(ask(&first, relay.addr, b"q"), b"q");
    assert_eq!(ask(&second, relay.addr, b"q"), b"q");
    relay.wait_for("both answers counted", |s| {
        s.udp_datagrams_upstream_to_client == 2
    });
    let stats = relay.stats();
    assert_eq!(stats.udp_sessions_started, 2);
    assert_eq!(stats.udp_sessions_ended, 0, "one answer of two: still open");
    // Without a count, a session stays open as before.
    let relay = relay_with_responses(echo.addr, None);
    assert_eq!(ask(&first, relay.addr, b"q"), b"q");
    assert_eq!(ask(&second, relay.addr, b"q"), b"q");
    relay.wait_for("both answers counted", |s| {
        s.udp_datagrams_upstream_to_client == 2
    });
    assert_eq!(relay.stats().udp_sessions_ended, 0);
}

#[test]
fn with_no_answer_expected_a_session_ends_once_its_datagrams_have_left() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let relay = relay_with_responses(upstream.local_addr().unwrap(), Some(0));
    let socket = client("127.0.0.1:0");
    socket.send_to(b"<13>a syslog line", relay.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = upstream
        .recv_from(&mut buf)
        .expect("the line reached the upstream");
    assert_eq!(&buf[..n], b"<13>a syslog line");
    relay.wait_for("the session ended", |s| {
        s.udp_responses_ends == 1 && s.udp_sessions_ended == 1
    });
}
