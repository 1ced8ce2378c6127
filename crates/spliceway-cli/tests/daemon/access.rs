use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::util::{
    Daemon, SPLICEWAY, WAIT, echo_round_trip, echo_server, metric, scrape, wait_until,
};

#[test]
fn denied_clients_get_no_data_and_allowed_ones_pass() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "denied"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
deny = ["127.0.0.0/8"]

[[route]]
name = "allowed"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
allow = ["127.0.0.0/8", "::1/128"]
deny = ["10.0.0.0/8"]
"#
        ),
    );

    // Denied: the relay closes the connection without relaying a byte. The close can come
    // before this side's connect has finished, so a reset may already be waiting then.
    match TcpStream::connect_timeout(&daemon.listen_addr("denied"), WAIT) {
        Ok(mut client) => {
            let _ = client.set_read_timeout(Some(WAIT));
            let _ = client.write_all(b"hello?");
            let mut buf = [0u8; 16];
            match client.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("a denied client received {n} bytes"),
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                    "{e}"
                ),
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }

    // Allowed: bytes pass.
    echo_round_trip(daemon.listen_addr("allowed"), b"through the relay");

    let metrics = daemon.metrics_addr();
    assert!(
        wait_until(WAIT, || {
            let text = scrape(metrics);
            metric(
                &text,
                "spliceway_connections_denied_total",
                &[("route", "denied")],
            ) == Some(1.0)
                && metric(
                    &text,
                    "spliceway_connections_completed_total",
                    &[("route", "allowed")],
                ) == Some(1.0)
        }),
        "{}",
        scrape(metrics)
    );
    let text = scrape(metrics);
    assert_eq!(
        metric(
            &text,
            "spliceway_connections_denied_total",
            &[("route", "allowed")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "spliceway_upstream_connects_total",
            &[("route", "denied")]
        ),
        Some(0.0),
        "a denied client must not cause an upstream connection"
    );
}

/// The summary of refusals held back in a period comes when the period ends, not at the next
/// refusal, which may be minutes later (hostile testing saw "504 more connections refused in
/// the last 10s" about 13 minutes after those refusals).
#[test]
fn the_summary_of_refusals_comes_when_its_period_ends() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
threads = 1
[[route]]
name = "denied"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
deny = ["127.0.0.0/8"]
"#
        ),
    );
    let addr = daemon.listen_addr("denied");
    for _ in 0..5 {
        if let Ok(mut client) = TcpStream::connect_timeout(&addr, WAIT) {
            let _ = client.set_read_timeout(Some(WAIT));
            let _ = client.read(&mut [0u8; 1]);
        }
    }
    // The period is 10 s; nothing else happens after the five refusals.
    assert!(
        daemon.wait_for_log(
            "4 more connections refused in the last 10s",
            std::time::Duration::from_secs(20)
        ),
        "no summary once the period ended; log:\n{}",
        daemon.log_text()
    );
}
