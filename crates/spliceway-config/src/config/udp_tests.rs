//! `protocol = "udp"` routes in the file: their keys, their located errors, and a TCP and a
//! UDP route sharing an address.

use std::path::Path;
use std::time::Duration;

use spliceway::Protocol;

use super::*;

fn read(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("spliceway.toml"))
}

#[track_caller]
fn refused_at(text: &str, line: usize, needles: &[&str]) {
    let error = read(text).expect_err("refused");
    let message = error.to_string();
    assert_eq!(error.line_column().map(|(l, _)| l), Some(line), "{message}");
    assert!(message.starts_with("spliceway.toml:"), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn a_udp_route_takes_its_session_keys_and_defaults() {
    let text = r#"
[defaults]
max_sessions_per_client = 4

[[route]]
name = "dns"
protocol = "udp"
listen = ["127.0.0.1:5353"]
upstream = "127.0.0.1:53"
udp_idle_timeout = "30s"
max_sessions = 1000

[[route]]
name = "web"
listen = ["127.0.0.1:5353"]
upstream = "127.0.0.1:80"
"#;
    let config = read(text).unwrap();
    let routes = config.routes().unwrap();
    assert_eq!(routes[0].transport(), Protocol::Udp);
    let udp = routes[0].session_options();
    assert_eq!(udp.idle_timeout, Duration::from_secs(30));
    assert_eq!(udp.max_sessions, Some(1000));
    assert_eq!(udp.max_sessions_per_client, Some(4), "from [defaults]");
    assert_eq!(routes[1].transport(), Protocol::Tcp, "the default");
    let summary = config.summary();
    assert!(summary.contains("protocol  udp"), "{summary}");
    assert!(summary.contains("max sessions 1000; per client address 4; idle timeout 30s"));
}

#[test]
fn udp_keys_are_refused_where_they_are_wrong() {
    let route =
        "[[route]]\nname = \"dns\"\nlisten = [\"127.0.0.1:5353\"]\nupstream = \"127.0.0.1:53\"\n";
    refused_at(
        &format!("{route}protocol = \"sctp\"\n"),
        5,
        &["route \"dns\": protocol", "\"tcp\" or \"udp\""],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nmax_sessions = 0\n"),
        6,
        &["max_sessions", "at least 1"],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nudp_idle_timeout = \"0s\"\n"),
        6,
        &["udp_idle_timeout", "more than zero"],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nsend_proxy = \"v2\"\n"),
        6,
        &["send_proxy", "for TCP routes"],
    );
    // TCP keys on a UDP route would be without effect: refused, saying what to write.
    refused_at(
        &format!("{route}protocol = \"udp\"\nidle_timeout = \"10s\"\n"),
        6,
        &["idle_timeout", "for TCP routes", "udp_idle_timeout"],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nclient_rate_limit = {{ up = \"1MB/s\" }}\n"),
        6,
        &["client_rate_limit", "no rate limits"],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nmax_connections = 5\n"),
        6,
        &["max_connections", "max_sessions"],
    );
    refused_at(
        &format!("{route}protocol = \"udp\"\nconnect_timeout = \"3s\"\n"),
        6,
        &["connect_timeout", "for TCP routes"],
    );
    // In [defaults] they are for the TCP routes, and a UDP route beside them is fine.
    let with_defaults = format!(
        "[defaults]\nidle_timeout = \"10s\"\nclient_rate_limit = {{ up = \"1MB/s\" }}\n{route}protocol = \"udp\"\n"
    );
    assert!(
        read(&with_defaults).is_ok(),
        "{:?}",
        read(&with_defaults).err()
    );
    // Two UDP routes on one address clash as two TCP routes do.
    let second = "[[route]]\nname = \"b\"\nprotocol = \"udp\"\nlisten = [\"127.0.0.1:5353\"]\nupstream = \"127.0.0.1:54\"\n";
    refused_at(
        &format!("{route}protocol = \"udp\"\n{second}"),
        9,
        &["already a listen address"],
    );
}

#[test]
fn a_udp_route_cannot_relay_where_the_client_chooses() {
    for (upstream, extra) in [
        ("original-destination", ""),
        ("http-connect", "connect_allow = [\"dns.test:53\"]"),
    ] {
        let text = format!(
            r#"
[[route]]
name = "dns"
protocol = "udp"
listen = ["127.0.0.1:5353"]
upstream = "{upstream}"
upstream_allow = ["10.0.0.0/8"]
{extra}
"#
        );
        refused_at(
            &text,
            6,
            &["route \"dns\": upstream:", "one fixed upstream"],
        );
    }
}

#[test]
fn a_udp_route_balances_over_several_upstreams_without_an_active_check() {
    let text = r#"
[[route]]
name = "dns"
protocol = "udp"
listen = ["127.0.0.1:5353"]
balance = "client-hash"
max_fails = 2
fail_timeout = "20s"

[[route.upstreams]]
address = "10.0.0.1:53"
weight = 3

[[route.upstreams]]
address = "10.0.0.2:53"
backup = true
"#;
    let config = read(text).unwrap();
    let routes = config.routes().unwrap();
    let spliceway::Upstream::Group(group) = routes[0].upstream() else {
        panic!("a group: {:?}", routes[0].upstream());
    };
    assert_eq!(group.servers().len(), 2);
    assert_eq!(group.servers()[0].upstream_weight(), 3);
    assert!(group.servers()[1].is_backup());
    assert_eq!(group.balancing(), spliceway::Balance::ClientHash);
    assert_eq!(group.passive().max_fails, 2);
    assert_eq!(group.passive().fail_timeout, Duration::from_secs(20));
    let summary = config.summary();
    assert!(
        summary.contains("passive   down for 20s after 2 ICMP error(s) in a row"),
        "{summary}"
    );

    let list = "[[route]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = [\"127.0.0.1:5353\"]\nupstream = [\"10.0.0.1:53\", \"10.0.0.2:53\"]\n";
    let config = read(list).unwrap();
    assert!(matches!(
        config.routes().unwrap()[0].upstream(),
        spliceway::Upstream::Group(_)
    ));
    refused_at(
        &format!("{list}health_check = {{ interval = \"2s\" }}\n"),
        6,
        &[
            "route \"dns\": health_check",
            "for TCP routes",
            "ICMP",
            "max_fails",
        ],
    );
    refused_at(
        "[[route]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = [\"127.0.0.1:5353\"]\nupstream = [\"10.0.0.1:53\", \"10.0.0.1:53\"]\n",
        5,
        &["listed twice"],
    );
}

#[test]
fn udp_responses_ends_sessions_by_count_and_is_checked() {
    let route = "[[route]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = [\"127.0.0.1:5353\"]\nupstream = \"127.0.0.1:53\"\n";
    let config = read(&format!("[defaults]\nudp_responses = 1\n{route}")).unwrap();
    assert_eq!(
        config.routes().unwrap()[0].session_options().responses,
        Some(1)
    );
    let summary = config.summary();
    assert!(
        summary
            .contains("answers   1 per datagram: a session ends once each datagram has had them"),
        "{summary}"
    );
    let none = read(&format!("{route}udp_responses = 0\n")).unwrap();
    assert_eq!(
        none.routes().unwrap()[0].session_options().responses,
        Some(0)
    );
    assert!(none.summary().contains("answers   none expected"));
    let unset = read(route).unwrap();
    assert_eq!(unset.routes().unwrap()[0].session_options().responses, None);
    refused_at(
        &format!("{route}udp_responses = -1\n"),
        6,
        &["route \"dns\": udp_responses", "from 0", "1000"],
    );
}
