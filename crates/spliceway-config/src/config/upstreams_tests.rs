//! A route's upstreams in the file (issue 29): the forms that work, and each error located at
//! its line, column and key.

use std::path::Path;
use std::time::Duration;

use spliceway::{Balance, Probe, Upstream};

use super::Config;
use crate::ConfigError;

const ROUTE: &str = "[[route]]\nname = \"db\"\nlisten = [\"127.0.0.1:0\"]\n";

fn read(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("spliceway.toml"))
}

#[track_caller]
fn refused(text: &str, line: usize, column: usize, needles: &[&str]) {
    let error = read(text).expect_err("the configuration should be refused");
    let message = error.to_string();
    assert_eq!(
        error.line_column(),
        Some((line, column)),
        "wrong place in: {message}"
    );
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

fn group(text: &str) -> spliceway::UpstreamGroup {
    let config = read(text).unwrap_or_else(|e| panic!("{e}"));
    let routes = config.routes().unwrap();
    match routes[0].upstream() {
        Upstream::Group(g) => g.clone(),
        other => panic!("not a group: {other:?}"),
    }
}

#[test]
fn a_list_and_tables_make_groups() {
    let g = group(&format!(
        "{ROUTE}upstream = [\"10.0.0.5:5432\", \"db-2.internal:5432\"]\nbalance = \"client-hash\"\n"
    ));
    assert_eq!(g.servers().len(), 2);
    assert_eq!(g.balancing(), Balance::ClientHash);
    assert!(g.check().is_none());
    let g = group(&format!(
        "{ROUTE}balance = \"least-connections\"\nmax_fails = 3\nfail_timeout = \"30s\"\n\
         health_check = {{ interval = \"1s\", rise = 1, fall = 2, send = \"PING\\r\\n\", expect = \"+PONG\" }}\n\
         [[route.upstreams]]\naddress = \"10.0.0.5:5432\"\nweight = 3\n\
         [[route.upstreams]]\naddress = \"standby:5432\"\nbackup = true\n"
    ));
    assert_eq!(g.servers()[0].upstream_weight(), 3);
    assert!(g.servers()[1].is_backup());
    assert_eq!(g.passive().max_fails, 3);
    assert_eq!(g.passive().fail_timeout, Duration::from_secs(30));
    let check = g.check().unwrap();
    assert_eq!(
        (check.interval, check.rise, check.fall),
        (Duration::from_secs(1), 1, 2)
    );
    assert_eq!(
        check.probe,
        Probe::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec()
        }
    );
    let g = group(&format!(
        "{ROUTE}upstream = [\"10.0.0.5:80\", \"10.0.0.6:80\"]\n[route.health_check]\nhttp_get = \"/health\"\n"
    ));
    assert_eq!(
        g.check().unwrap().probe,
        Probe::HttpGet {
            path: "/health".into(),
            status: 200
        }
    );
    // The health check's own defaults.
    assert_eq!(g.check().unwrap().interval, Duration::from_secs(2));
    assert_eq!((g.check().unwrap().rise, g.check().unwrap().fall), (2, 3));
}

#[test]
fn one_upstream_without_a_check_is_a_plain_route() {
    for text in [
        format!("{ROUTE}upstream = \"10.0.0.5:5432\"\n"),
        format!("{ROUTE}upstream = [\"10.0.0.5:5432\"]\nbalance = \"least-connections\"\n"),
        format!("{ROUTE}[[route.upstreams]]\naddress = \"10.0.0.5:5432\"\nweight = 7\n"),
    ] {
        let routes = read(&text).unwrap().routes().unwrap();
        assert!(matches!(routes[0].upstream(), Upstream::Fixed(_)), "{text}");
    }
    // With a check it is a group of one (so it is checked and shown).
    group(&format!(
        "{ROUTE}upstream = [\"10.0.0.5:5432\"]\nhealth_check = {{ interval = \"1s\" }}\n"
    ));
}

#[test]
fn errors_are_located_at_the_value() {
    refused(
        &format!("{ROUTE}upstream = []\n"),
        4,
        12,
        &["route \"db\": upstream", "empty"],
    );
    refused(
        &format!("{ROUTE}upstream = [\"10.0.0.5:1\", \"nope\"]\n"),
        4,
        27,
        &["route \"db\": upstream", "nope"],
    );
    refused(
        &format!("{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.5:1\"]\n"),
        4,
        27,
        &["listed twice"],
    );
    refused(
        &format!("{ROUTE}[[route.upstreams]]\naddress = \"10.0.0.5:1\"\nweight = 0\n"),
        6,
        10,
        &["route \"db\": upstreams.weight", "from 1 to 1000, not 0"],
    );
    refused(
        &format!("{ROUTE}[[route.upstreams]]\naddress = \"10.0.0.5:1\"\nweight = 1000000\n"),
        6,
        10,
        &["upstreams.weight", "not 1000000"],
    );
    refused(
        &format!(
            "{ROUTE}[[route.upstreams]]\naddress = \"10.0.0.5:1\"\nbackup = true\n\
             [[route.upstreams]]\naddress = \"10.0.0.6:1\"\nbackup = true\n"
        ),
        4,
        1,
        &["route \"db\": upstreams", "every upstream is a backup"],
    );
    refused(
        &format!("{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nbalance = \"random\"\n"),
        5,
        11,
        &["route \"db\": balance", "unknown balance \"random\""],
    );
    refused(
        &format!("{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nmax_fails = -1\n"),
        5,
        13,
        &["max_fails"],
    );
    refused(
        &format!("{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nfail_timeout = \"0s\"\n"),
        5,
        16,
        &["fail_timeout", "more than zero"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ interval = \"0s\" }}\n"
        ),
        5,
        29,
        &["health_check.interval", "more than zero"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ rise = 0 }}\n"
        ),
        5,
        25,
        &["health_check.rise", "from 1 to 100, not 0"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ send = \"PING\" }}\n"
        ),
        5,
        25,
        &["health_check.send", "needs expect"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ http_get = \"health\" }}\n"
        ),
        5,
        29,
        &["health_check.http_get", "starting with /"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ http_get = \"/\", status = 700 }}\n"
        ),
        5,
        43,
        &["health_check.status", "not 700"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ http_get = \"/\", expect = \"x\" }}\n"
        ),
        5,
        16,
        &["health_check", "not both"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = [\"10.0.0.5:1\", \"10.0.0.6:1\"]\nhealth_check = {{ intervall = \"1s\" }}\n"
        ),
        5,
        18,
        &["intervall"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = \"10.0.0.5:1\"\n[[route.upstreams]]\naddress = \"10.0.0.6:1\"\n"
        ),
        4,
        12,
        &["not both"],
    );
    refused(
        &format!(
            "{ROUTE}balance = \"client-hash\"\n[[route.sni]]\nmatch = \"a.test\"\nupstream = \"10.0.0.5:443\"\n"
        ),
        4,
        11,
        &["route \"db\": balance", "not to [[route.sni]]"],
    );
}
