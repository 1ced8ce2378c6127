//! `rate_limit`, `client_rate_limit`, `route_rate_limit` and `max_connections_per_client`:
//! read into the route, inherited from `[defaults]`, printed by `check`, and every bad value
//! refused at its place.

use std::path::Path;

use spliceway::{Rate, RateLimit};

use super::*;

const ROUTE: &str =
    "[[route]]\nname = \"s3\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"127.0.0.1:9\"\n";

fn read(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("spliceway.toml"))
}

#[track_caller]
fn refused_at(text: &str, line: usize, column: usize, needles: &[&str]) {
    let error = read(text).expect_err("the configuration should be refused");
    let message = error.to_string();
    assert_eq!(error.line_column(), Some((line, column)), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

/// A direction limited only per connection, with no burst named, is paced by the kernel:
/// `check` says so, and shows no burst for it.
#[test]
fn check_says_which_directions_the_kernel_paces() {
    let text = format!(
        "{ROUTE}rate_limit = {{ up = \"600mbit\", down = \"1gbit\" }}\n\
         route_rate_limit = {{ down = \"2gbit\" }}\n"
    );
    let config = read(&text).unwrap();
    assert_eq!(
        config.routes().unwrap()[0]
            .connection_options()
            .kernel_paced(),
        (true, false)
    );
    let summary = config.summary();
    assert!(
        summary.contains(
            "bandwidth per connection up 600 Mbit/s (paced by the kernel), down 1 Gbit/s \
             (burst 1.2 MiB); per client none; route up unlimited, down 2 Gbit/s (burst 2.4 MiB)"
        ),
        "{summary}"
    );
    let burst = format!("{ROUTE}rate_limit = {{ up = \"600mbit\", burst = \"4MiB\" }}\n");
    let config = read(&burst).unwrap();
    assert_eq!(
        config.routes().unwrap()[0]
            .connection_options()
            .kernel_paced(),
        (false, false),
        "a named burst is the bucket's"
    );
}

#[test]
fn limits_are_read_into_the_route_and_defaults_fill_them() {
    let text = format!(
        "[defaults]\nclient_rate_limit = {{ up = \"100mbit\" }}\nmax_connections_per_client = 8\n\
         {ROUTE}rate_limit = {{ up = \"600mbit\", down = \"1gbit\" }}\n\
         route_rate_limit = {{ down = \"75MB\", burst = \"1MiB\" }}\n"
    );
    let config = read(&text).unwrap();
    let route = &config.routes().unwrap()[0];
    let options = route.connection_options();
    assert_eq!(
        options.rate_limit,
        Some(RateLimit::new(
            Rate::bits_per_second(600_000_000),
            Rate::bits_per_second(1_000_000_000)
        ))
    );
    assert_eq!(
        options.client_rate_limit,
        Some(RateLimit::new(Rate::bits_per_second(100_000_000), None))
    );
    assert_eq!(
        options.route_rate_limit,
        Some(RateLimit::new(None, Rate::bytes_per_second(75_000_000)).with_burst(1 << 20))
    );
    assert_eq!(route.client_connection_limit(), Some(8));
    let summary = config.summary();
    assert!(
        summary.contains(
            "bandwidth per connection up 600 Mbit/s (burst 732.4 KiB), down 1 Gbit/s (burst \
             1.2 MiB); per client up 100 Mbit/s (burst 122.1 KiB), down unlimited; route up \
             unlimited, down 600 Mbit/s (burst 1.0 MiB); max connections per client 8"
        ),
        "{summary}"
    );
}

#[test]
fn a_route_without_limits_prints_none() {
    let config = read(ROUTE).unwrap();
    assert!(!config.summary().contains("bandwidth"));
    assert_eq!(config.routes().unwrap()[0].client_connection_limit(), None);
}

#[test]
fn bad_rates_are_refused_where_they_are_written() {
    let at = |value: &str| format!("{ROUTE}rate_limit = {{ up = {value} }}\n");
    refused_at(
        &at("\"0mbit\""),
        5,
        21,
        &["route \"s3\": rate_limit.up", "is zero"],
    );
    refused_at(
        &at("\"5tbit\""),
        5,
        21,
        &["rate_limit.up", "more than 1 Tbit/s"],
    );
    refused_at(&at("\"600mbps\""), 5, 21, &["rate_limit.up", "ambiguous"]);
    refused_at(&at("\"600 furlongs\""), 5, 21, &["unknown unit"]);
    refused_at(&at("600"), 5, 21, &["has no unit", "600mbit"]);
    refused_at(
        &format!("[defaults]\nroute_rate_limit = {{ down = \"1gbit\", burst = 0 }}\n{ROUTE}"),
        2,
        46,
        &["defaults.route_rate_limit.burst", "out of range"],
    );
    refused_at(
        &format!("{ROUTE}client_rate_limit = {{ burst = \"1MiB\" }}\n"),
        5,
        21,
        &["client_rate_limit", "give up (client to upstream), down"],
    );
    refused_at(
        &format!("{ROUTE}rate_limit = {{ upp = \"1gbit\" }}\n"),
        5,
        16,
        &["rate_limit.upp: unknown key `upp`: did you mean `up`?"],
    );
    refused_at(
        &format!("{ROUTE}max_connections_per_client = 0\n"),
        5,
        30,
        &["max_connections_per_client: must be at least 1"],
    );
}
