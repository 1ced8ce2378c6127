use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::util::{Daemon, WAIT, echo_round_trip, echo_server, metric, scrape, wait_until};

#[test]
fn denied_clients_get_no_data_and_allowed_ones_pass() {
    let upstream = echo_server();
    let daemon = Daemon::start(&format!(
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
    ));

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
