use std::io::Write;
use std::net::Shutdown;

use crate::util::{
    Daemon, WAIT, connect, echo_round_trip, echo_server, expected_hash, hash_server, metric,
    pattern, read_answer, scrape, wait_until,
};

#[test]
fn counters_match_the_traffic_sent() {
    let hashes = hash_server();
    let echo = echo_server();
    let daemon = Daemon::start(&format!(
        r#"
metrics = "127.0.0.1:0"
[[route]]
name = "up"
listen = ["127.0.0.1:0"]
upstream = "{hashes}"

[[route]]
name = "echo"
listen = ["127.0.0.1:0"]
upstream = "{echo}"
mode = "copy"
"#
    ));
    let data = pattern(3 << 20, 3);
    let mut client = connect(daemon.listen_addr("up"));
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let answer = read_answer(&mut client);
    assert_eq!(answer, expected_hash(&data));
    let echoed = pattern(100_000, 5);
    echo_round_trip(daemon.listen_addr("echo"), &echoed);
    echo_round_trip(daemon.listen_addr("echo"), &echoed);

    let addr = daemon.metrics_addr();
    let closed = |text: &str, route: &str| {
        metric(
            text,
            "spliceway_connections_closed_total",
            &[("route", route)],
        )
    };
    assert!(
        wait_until(WAIT, || {
            let text = scrape(addr);
            closed(&text, "up") == Some(1.0) && closed(&text, "echo") == Some(2.0)
        }),
        "{}",
        scrape(addr)
    );
    let text = scrape(addr);
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let bytes = "spliceway_bytes_total";
    let moved = "spliceway_bytes_moved_total";
    let up_sent = data.len() as f64;
    let up_answer = (answer.len() + 1) as f64; // with its newline
    assert_eq!(
        value(
            bytes,
            &[("route", "up"), ("direction", "client_to_upstream")]
        ),
        up_sent
    );
    assert_eq!(
        value(
            bytes,
            &[("route", "up"), ("direction", "upstream_to_client")]
        ),
        up_answer
    );
    assert_eq!(
        value(moved, &[("route", "up"), ("engine", "splice")]),
        up_sent + up_answer
    );
    assert_eq!(value(moved, &[("route", "up"), ("engine", "copy")]), 0.0);
    let echo_each_way = 2.0 * echoed.len() as f64;
    assert_eq!(
        value(
            bytes,
            &[("route", "echo"), ("direction", "client_to_upstream")]
        ),
        echo_each_way
    );
    assert_eq!(
        value(
            bytes,
            &[("route", "echo"), ("direction", "upstream_to_client")]
        ),
        echo_each_way
    );
    assert_eq!(
        value(moved, &[("route", "echo"), ("engine", "copy")]),
        2.0 * echo_each_way
    );
    assert_eq!(
        value("spliceway_connections_accepted_total", &[("route", "echo")]),
        2.0
    );
    assert_eq!(
        value("spliceway_connections_completed_total", &[("route", "up")]),
        1.0
    );
    assert_eq!(
        value("spliceway_connections_active", &[("route", "up")]),
        0.0
    );
    assert_eq!(
        value(
            "spliceway_resets_total",
            &[("route", "up"), ("side", "client")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "spliceway_upstream_connect_seconds_count",
            &[("route", "echo")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "spliceway_upstream_connect_seconds_bucket",
            &[("route", "echo"), ("le", "+Inf")]
        ),
        2.0
    );
    assert!(
        value(
            "spliceway_upstream_connect_seconds_sum",
            &[("route", "echo")]
        ) > 0.0
    );
    assert!(text.contains("# TYPE spliceway_upstream_connect_seconds histogram"));
    for name in [
        "spliceway_connections_denied_total",
        "spliceway_connections_sni_refused_total",
        "spliceway_connections_upstream_unavailable_total",
        "spliceway_connections_resolve_refused_total",
        "spliceway_resolve_cancelled_total",
        "spliceway_upstream_connect_failures_total",
        "spliceway_timeouts_total",
        "spliceway_pipes_open",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}
