use std::path::Path;

use super::*;

fn read(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("spliceway.toml"))
}

/// Asserts that `text` is refused at `line:column` with a message containing each needle, and
/// returns the message.
#[track_caller]
fn refused(text: &str, line: usize, column: usize, needles: &[&str]) -> String {
    let error = read(text).expect_err("the configuration should be refused");
    let message = error.to_string();
    assert_eq!(
        error.line_column(),
        Some((line, column)),
        "wrong place in: {message}"
    );
    assert!(
        message.starts_with(&format!("spliceway.toml:{line}:{column}: ")),
        "{message}"
    );
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    message
}

const ROUTE: &str = "[[route]]\nname = \"s3\"\nlisten = [\"127.0.0.1:0\"]\n";

#[test]
#[cfg(feature = "dns")] // it uses `resolver = "dns"`
fn full_configuration() {
    use spliceway::{Mode, Upstream, UpstreamAddr};
    use std::time::Duration;
    let text = r#"
threads = 2
user = "root"
group = "0"
log_level = "debug"
log_format = "json"
metrics = "127.0.0.1:9898"
max_connections = 10000
drain_timeout = "45s"

[defaults]
idle_timeout = "10m"
connect_timeout = "3s"
deny = ["192.0.2.0/24"]

[[route]]
name = "s3"
listen = ["0.0.0.0:443", "[::]:443"]
upstream = "s3-ap-northeast-1.amazonaws.com:443"
allow = ["10.0.0.0/8", "2001:db8::/32", "172.16.0.1"]
max_connections = 500
half_close_timeout = "30s"
mode = "copy"
buffer_size = "128KiB"
bulk_low_water = "64KiB"
pipe_size = 65536
require_splice = true
nodelay = false
keepalive = "60s"
congestion = "reno"
resolve_cache_ttl = "5s"
connect_attempts = 2
resolver = { servers = ["10.0.0.2:5353", "10.0.0.3"] }

[[route]]
name = "s3-sni"
listen = ["0.0.0.0:8443"]
hello_timeout = "2s"
keepalive = false
idle_timeout = "1m"
resolver = "dns"
[[route.sni]]
match = "*.s3.ap-northeast-1.amazonaws.com"
upstream = "s3-ap-northeast-1.amazonaws.com:443"
[[route.sni]]
match = "example.com"
"#;
    let config = read(text).unwrap();
    assert_eq!(config.threads(), Some(2));
    assert_eq!(config.user(), Some("root"));
    assert_eq!(config.group(), Some("0"));
    assert_eq!(config.log_level(), LogLevel::Debug);
    assert_eq!(config.log_format(), LogFormat::Json);
    assert_eq!(
        config.metrics(),
        Some("127.0.0.1:9898".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(config.max_connections(), Some(10000));
    assert_eq!(config.drain_timeout(), Duration::from_secs(45));

    let s3 = &config.settings.routes[0];
    assert_eq!(s3.route.name(), "s3");
    assert_eq!(s3.route.listen_addrs().len(), 2);
    assert_eq!(
        s3.route.upstream(),
        &Upstream::Fixed(UpstreamAddr::parse("s3-ap-northeast-1.amazonaws.com:443").unwrap())
    );
    let acl = s3.route.access_list();
    assert_eq!(acl.allow.len(), 3);
    assert_eq!(acl.allow[2].to_string(), "172.16.0.1/32");
    assert_eq!(acl.deny[0].to_string(), "192.0.2.0/24", "from [defaults]");
    assert_eq!(s3.route.connection_limit(), Some(500));
    let o = s3.route.connection_options();
    assert_eq!(o.mode, Mode::Copy);
    assert_eq!(o.copy_buffer_size, 128 * 1024);
    assert_eq!(o.bulk_low_water, 64 * 1024);
    assert_eq!(o.pipe_size, 65536);
    assert!(o.require_splice);
    assert!(!o.nodelay);
    assert_eq!(o.keepalive, Some(Duration::from_secs(60)));
    assert_eq!(o.congestion.as_deref(), Some("reno"));
    assert_eq!(o.resolve_cache_ttl, Duration::from_secs(5));
    assert_eq!(o.connect_attempts, 2);
    assert_eq!(o.idle_timeout, Duration::from_secs(600), "from [defaults]");
    assert_eq!(o.connect_timeout, Duration::from_secs(3), "from [defaults]");
    assert_eq!(o.half_close_timeout, Duration::from_secs(30));
    assert_eq!(
        s3.resolver,
        ResolverChoice::Dns {
            servers: vec![
                "10.0.0.2:5353".parse().unwrap(),
                "10.0.0.3:53".parse().unwrap()
            ]
        }
    );

    let sni = &config.settings.routes[1];
    let Upstream::Sni(table) = sni.route.upstream() else {
        panic!("an SNI route")
    };
    assert_eq!(table.entries().len(), 2);
    assert_eq!(table.client_hello_timeout(), Duration::from_secs(2));
    assert_eq!(
        table
            .choose("bucket.s3.ap-northeast-1.amazonaws.com", 8443)
            .unwrap()
            .to_string(),
        "s3-ap-northeast-1.amazonaws.com:443"
    );
    assert_eq!(
        table.choose("example.com", 8443).unwrap().to_string(),
        "example.com:8443"
    );
    let o = sni.route.connection_options();
    assert_eq!(o.keepalive, None);
    assert_eq!(o.congestion, None, "system default unless set");
    assert_eq!(
        o.idle_timeout,
        Duration::from_secs(60),
        "route beats defaults"
    );
    assert_eq!(sni.resolver, ResolverChoice::Dns { servers: vec![] });

    let summary = config.summary();
    for needle in [
        "2 routes",
        "route \"s3\"",
        "0.0.0.0:443, [::]:443",
        "s3-ap-northeast-1.amazonaws.com:443",
        "10.0.0.0/8",
        "192.0.2.0/24",
        "max connections 500",
        "copy, 128.0 KiB buffers",
        "*.s3.ap-northeast-1.amazonaws.com -> s3-ap-northeast-1.amazonaws.com:443",
        "example.com -> the name itself",
        "http://127.0.0.1:9898/metrics",
    ] {
        assert!(summary.contains(needle), "{needle:?} not in:\n{summary}");
    }
}

#[test]
fn minimal_configuration_takes_the_defaults() {
    let config = read(&format!("{ROUTE}upstream = \"127.0.0.1:9\"\n")).unwrap();
    assert_eq!(config.threads(), None);
    assert_eq!(config.log_level(), LogLevel::Info);
    assert_eq!(config.metrics(), None);
    assert_eq!(
        config.drain_timeout(),
        spliceway::defaults::DEFAULT_DRAIN_TIMEOUT
    );
    assert_eq!(config.pool_limits(), spliceway::PoolLimits::default());
    let routes = config.routes().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].connection_options(),
        &ConnectionOptions::default()
    );
    assert!(routes[0].access_list().is_empty());
    assert_eq!(config.connection_capacity(), None);
}

use spliceway::ConnectionOptions;

#[test]
fn syntax_error() {
    refused("threads = 2\nmetrics = \n", 2, 11, &["quoted"]);
}

#[test]
fn unknown_global_key() {
    refused(
        "threads = 2\nthread = 3\n",
        2,
        1,
        &["thread: unknown key `thread`: did you mean `threads`?"],
    );
}

#[test]
fn unknown_route_key() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nidle = \"5s\"\n"),
        5,
        1,
        &["route \"s3\": idle: unknown key `idle`: did you mean `idle_timeout`?"],
    );
}

#[test]
fn unknown_sni_key() {
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.test\"\nport = 1\n"),
        6,
        1,
        &["route \"s3\": sni.port: unknown key `port` (`man 5 spliceway.toml`"],
    );
}

#[test]
fn wrong_type() {
    refused(
        "max_connections = \"many\"\n",
        1,
        19,
        &["max_connections", "invalid type"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nnodelay = \"yes\"\n"),
        5,
        11,
        &["route \"s3\": nodelay", "expected a boolean"],
    );
}

#[test]
fn missing_name() {
    refused(
        "[[route]]\nlisten = [\"127.0.0.1:0\"]\nupstream = \"a.test:1\"\n",
        1,
        1,
        &["route #1", "missing field `name`"],
    );
}

#[test]
fn invalid_cidr() {
    let message = refused(
        "[[route]]\nname = \"s3\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"a.test:1\"\n\n\
         allow = [\"10.0.0.0/8\",\n         \"10.0.0.0/33\"]\n",
        7,
        10,
        &["invalid CIDR \"10.0.0.0/33\""],
    );
    assert!(
        message.starts_with(
            "spliceway.toml:7:10: route \"s3\": allow: invalid CIDR \"10.0.0.0/33\": "
        ),
        "{message}"
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\ndeny = [\"2001:db8::/129\"]\n"),
        5,
        9,
        &["route \"s3\": deny: invalid CIDR \"2001:db8::/129\""],
    );
}

#[test]
fn invalid_listen_address() {
    refused(
        "[[route]]\nname = \"s3\"\nlisten = [\"0.0.0.0:443\", \"localhost:443\"]\n",
        3,
        26,
        &[
            "route \"s3\": listen",
            "\"localhost:443\"",
            "not an IP address",
        ],
    );
    refused(
        "[[route]]\nname = \"s3\"\nlisten = []\nupstream = \"a.test:1\"\n",
        3,
        10,
        &["listen: give at least one address"],
    );
}

#[test]
fn listen_address_twice() {
    refused(
        "[[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:8443\"]\nupstream = \"a.test:1\"\n\
         [[route]]\nname = \"b\"\nlisten = [\"127.0.0.1:8443\"]\nupstream = \"a.test:1\"\n",
        7,
        11,
        &["route \"b\": listen: 127.0.0.1:8443 is already a listen address of route \"a\""],
    );
}

#[test]
fn duplicate_route_name() {
    refused(
        "[[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"a.test:1\"\n\
         [[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:2\"]\nupstream = \"a.test:1\"\n",
        6,
        8,
        &["route \"a\": name: another route has this name"],
    );
}

#[test]
fn invalid_upstream() {
    refused(
        &format!("{ROUTE}upstream = \"s3.amazonaws.com\"\n"),
        4,
        12,
        &[
            "route \"s3\": upstream: invalid upstream address",
            "port is missing",
        ],
    );
}

#[test]
fn upstream_and_sni_both_or_neither() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\n[[route.sni]]\nmatch = \"a.test\"\n"),
        4,
        12,
        &["not both"],
    );
    refused(ROUTE, 1, 1, &["route \"s3\": needs either upstream"]);
}

#[test]
fn invalid_name_pattern() {
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.*.test\"\n"),
        5,
        9,
        &["route \"s3\": sni.match", "\"a.*.test\""],
    );
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.test\"\nupstream = \"a.test\"\n"),
        6,
        12,
        &["route \"s3\": sni.upstream", "port is missing"],
    );
}

#[test]
fn invalid_sizes() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\npipe_size = \"lots\"\n"),
        5,
        13,
        &["route \"s3\": pipe_size: invalid size \"lots\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nbuffer_size = 0\n"),
        5,
        15,
        &["buffer_size: 0 is out of range"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\npipe_size = \"2GiB\"\n"),
        5,
        13,
        &["out of range"],
    );
    // Issue 25: "512K" was read as 512,000 bytes. KiB and KB are taken as written; a bare K
    // is refused, saying how to write either.
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\npipe_size = \"512K\"\n"),
        5,
        13,
        &[
            "route \"s3\": pipe_size: invalid size \"512K\"",
            "ambiguous: write 512KiB (1 KiB = 1024 bytes) or 512KB (1 KB = 1000 bytes)",
        ],
    );
    refused(
        &format!("pipe_budget = \"1G\"\n{ROUTE}upstream = \"a.test:1\"\n"),
        1,
        15,
        &["pipe_budget: invalid size \"1G\"", "write 1GiB"],
    );
    let o = |size: &str| {
        read(&format!(
            "{ROUTE}upstream = \"127.0.0.1:9\"\npipe_size = \"{size}\"\n"
        ))
        .unwrap()
        .routes()
        .unwrap()[0]
            .connection_options()
            .pipe_size
    };
    assert_eq!(o("512KiB"), 512 * 1024);
    assert_eq!(o("512KB"), 512_000);
}

#[test]
fn pipe_pool_settings() {
    let config = read(&format!(
        "pool_idle_pipes = 4\npipe_budget = \"64MiB\"\n{ROUTE}upstream = \"127.0.0.1:9\"\n"
    ))
    .unwrap();
    assert_eq!(config.pool_limits().max_idle_pipes, 4);
    assert_eq!(config.pool_limits().pipe_budget_bytes, 64 << 20);
    assert!(
        config
            .summary()
            .contains("pipe pool per worker: 4 idle pipes kept; budget 64.0 MiB"),
        "{}",
        config.summary()
    );
    refused(
        &format!("pipe_budget = \"lots\"\n{ROUTE}upstream = \"a.test:1\"\n"),
        1,
        15,
        &["pipe_budget: invalid size \"lots\""],
    );
    refused(
        &format!("pool_idle_pipes = -1\n{ROUTE}upstream = \"a.test:1\"\n"),
        1,
        19,
        &["pool_idle_pipes"],
    );
}

#[test]
fn invalid_durations() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nidle_timeout = \"soon\"\n"),
        5,
        16,
        &["route \"s3\": idle_timeout: invalid duration \"soon\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nconnect_timeout = 10\n"),
        5,
        19,
        &["connect_timeout: 10 has no unit: write e.g. \"10s\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nidle_timeout = \"0s\"\n"),
        5,
        16,
        &["more than zero"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nkeepalive = true\n"),
        5,
        13,
        &["keepalive = true needs a time"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\ncongestion = \"no-such-cc\"\n"),
        5,
        14,
        &[
            "route \"s3\": congestion",
            "\"no-such-cc\" is not available",
        ],
    );
    refused(
        "drain_timeout = \"forever\"\n",
        1,
        17,
        &["drain_timeout: invalid duration"],
    );
    refused(
        &format!("[defaults]\nidle_timeout = \"1x\"\n{ROUTE}upstream = \"a.test:1\"\n"),
        2,
        16,
        &["defaults.idle_timeout: invalid duration \"1x\""],
    );
}

#[test]
fn hello_timeout_without_sni() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nhello_timeout = \"5s\"\n"),
        5,
        17,
        &["hello_timeout: only routes with [[route.sni]]"],
    );
}

#[test]
fn invalid_choices() {
    refused(
        "log_level = \"loud\"\n",
        1,
        13,
        &["log_level: unknown log level \"loud\""],
    );
    refused(
        "log_format = \"xml\"\n",
        1,
        14,
        &["log_format: unknown log format"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nmode = \"zero-copy\"\n"),
        5,
        8,
        &["route \"s3\": mode: unknown mode \"zero-copy\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nresolver = \"google\"\n"),
        5,
        12,
        &["resolver: unknown resolver \"google\""],
    );
    refused(
        &format!(
            "{ROUTE}upstream = \"a.test:1\"\nresolver = {{ servers = [\"10.0.0.2:53\", \"dns.test\"] }}\n"
        ),
        5,
        40,
        &["resolver.servers: invalid DNS server \"dns.test\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nresolver = {{ server = [\"10.0.0.2\"] }}\n"),
        5,
        14,
        &["unknown key `server`: did you mean `servers`?"],
    );
}

#[test]
fn invalid_globals() {
    refused(
        "metrics = \"9898\"\n",
        1,
        11,
        &["metrics: invalid listen address \"9898\""],
    );
    refused(
        "max_connections = 0\n",
        1,
        19,
        &["max_connections: must be at least 1"],
    );
    refused(
        "threads = 100000\n",
        1,
        11,
        &["threads: 100000 threads is too many"],
    );
    refused("user = \"\"\n", 1, 8, &["user: must not be empty"]);
    refused("threads = -1\n", 1, 11, &["threads", "invalid value"]);
}

#[test]
fn no_route() {
    refused("threads = 1\n", 1, 1, &["no [[route]]"]);
}

#[test]
fn columns_count_characters() {
    // A multi-byte character before the bad value must count as one column.
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\n# é\nallow = [\"é\"]\n"),
        6,
        10,
        &["invalid CIDR \"é\""],
    );
}

#[test]
fn reading_a_missing_file_names_it() {
    let error = Config::from_file(Path::new("/nonexistent/spliceway.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("/nonexistent/spliceway.toml"));
}

#[test]
fn capacity_sums_route_limits() {
    let text = "max_connections = 100\n\
                [[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"a.test:1\"\nmax_connections = 30\n\
                [[route]]\nname = \"b\"\nlisten = [\"127.0.0.1:2\"]\nupstream = \"a.test:1\"\nmax_connections = 40\n";
    assert_eq!(read(text).unwrap().connection_capacity(), Some(70));
}

#[test]
#[cfg(not(feature = "dns"))]
fn dns_resolver_needs_the_feature() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nresolver = \"dns\"\n"),
        5,
        12,
        &["no DNS client"],
    );
}

/// A route `name` listening on `listen`, relaying to `upstream`.
fn route(name: &str, listen: &str, upstream: &str) -> String {
    format!("[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nupstream = \"{upstream}\"\n")
}

/// Hostile input 4: durations far beyond reason were accepted, and the first connection, a
/// drain or start-up panicked. Each key refuses a time past MAX_TIMEOUT, at its value.
#[test]
fn durations_past_the_maximum_are_refused_at_their_key() {
    let absurd = "\"400000000000years\"";
    for key in [
        "connect_timeout",
        "idle_timeout",
        "half_close_timeout",
        "resolve_cache_ttl",
        "keepalive",
    ] {
        let text = format!("{ROUTE}upstream = \"a.test:1\"\n{key} = {absurd}\n");
        refused(
            &text,
            5,
            key.len() + 4,
            &[
                &format!("route \"s3\": {key}: "),
                "longer than the longest time accepted, 7days",
            ],
        );
        let text = format!("[defaults]\n{key} = \"8days\"\n{ROUTE}upstream = \"a.test:1\"\n");
        refused(
            &text,
            2,
            key.len() + 4,
            &[&format!("defaults.{key}: "), "7days"],
        );
    }
    refused(
        &format!("{ROUTE}hello_timeout = {absurd}\n[[route.sni]]\nmatch = \"a.test\"\n"),
        4,
        17,
        &["route \"s3\": hello_timeout: ", "7days"],
    );
    refused(
        &format!("drain_timeout = {absurd}\n{ROUTE}upstream = \"a.test:1\"\n"),
        1,
        17,
        &["drain_timeout: ", "7days"],
    );
    // The maximum itself is accepted.
    let config = read(&format!(
        "drain_timeout = \"7days\"\n{ROUTE}upstream = \"a.test:1\"\nidle_timeout = \"7days\"\n"
    ))
    .unwrap();
    assert_eq!(config.drain_timeout(), MAX_TIMEOUT);
}

/// Hostile input 5: `keepalive` above 32,767 s was accepted, then every connection failed with
/// "Invalid argument" (the kernel refuses TCP_KEEPIDLE past it).
#[test]
fn keepalive_outside_the_kernels_range_is_refused_at_its_key() {
    for value in ["32768s", "10h", "500ms"] {
        refused(
            &format!("{ROUTE}upstream = \"a.test:1\"\nkeepalive = \"{value}\"\n"),
            5,
            13,
            &["route \"s3\": keepalive: ", "TCP_KEEPIDLE: 1s to 32767s"],
        );
    }
    refused(
        &format!("[defaults]\nkeepalive = \"32768s\"\n{ROUTE}upstream = \"a.test:1\"\n"),
        2,
        13,
        &["defaults.keepalive: ", "TCP_KEEPIDLE"],
    );
    let config = read(&format!(
        "{ROUTE}upstream = \"a.test:1\"\nkeepalive = \"32767s\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.settings.routes[0]
            .route
            .connection_options()
            .keepalive,
        Some(std::time::Duration::from_secs(32767))
    );
}

/// Hostile input 11: a `user` or `group` that does not exist passed `check`; `run` exited 78
/// without a place in the file.
#[test]
fn a_user_or_group_that_does_not_exist_is_refused_at_its_key() {
    let up = format!("{ROUTE}upstream = \"a.test:1\"\n");
    refused(
        &format!("user = \"no-such-user-17\"\n{up}"),
        1,
        8,
        &["user: user \"no-such-user-17\" does not exist"],
    );
    refused(
        &format!("user = \"root\"\ngroup = \"no-such-group-17\"\n{up}"),
        2,
        9,
        &["group: group \"no-such-group-17\" does not exist"],
    );
    refused(
        &format!("user = \"4000000000\"\n{up}"),
        1,
        8,
        &["user \"4000000000\" does not exist"],
    );
    let config = read(&format!("user = \"0\"\ngroup = \"root\"\n{up}")).unwrap();
    assert_eq!((config.user(), config.group()), (Some("0"), Some("root")));
}

/// Hostile input 11: an upstream that is the route's own listen address passed `check`, and
/// `run` exited 2 ("is the relay's own listening address").
#[test]
fn a_literal_self_loop_is_refused_at_the_upstream() {
    refused(
        &route("a", "127.0.0.1:7001", "127.0.0.1:7001"),
        4,
        12,
        &[
            "route \"a\": upstream: 127.0.0.1:7001 reaches this route's own listener \
             127.0.0.1:7001: every connection would loop back",
        ],
    );
    // The same port on a wildcard listener and an address of this host.
    refused(
        &route("a", "0.0.0.0:7001", "127.0.0.1:7001"),
        4,
        12,
        &["own listener 0.0.0.0:7001"],
    );
    refused(
        &format!(
            "{}[[route.sni]]\nmatch = \"a.test\"\nupstream = \"127.0.0.1:7002\"\n",
            "[[route]]\nname = \"a\"\nlisten = [\"0.0.0.0:7002\"]\n"
        ),
        6,
        12,
        &["route \"a\": sni.upstream: 127.0.0.1:7002 reaches this route's own listener"],
    );
    // Another port, another family, an address that is not this host's: no loop.
    read(&route("a", "0.0.0.0:7001", "127.0.0.1:7002")).unwrap();
    read(&route("a", "[::]:7001", "127.0.0.1:7001")).unwrap();
    read(&route("a", "0.0.0.0:7001", "192.0.2.1:7001")).unwrap();
}

/// Hostile input 3: route r relaying to route r2's listener and r2 back to r passed `check`,
/// and one client connection grew into more than a hundred chained ones.
#[test]
fn routes_relaying_in_a_ring_are_refused() {
    let ring = format!(
        "{}{}",
        route("a", "127.0.0.1:7001", "127.0.0.1:7002"),
        route("b", "127.0.0.1:7002", "127.0.0.1:7001"),
    );
    refused(
        &ring,
        4,
        12,
        &[
            "route \"a\": upstream: 127.0.0.1:7002 reaches the listener 127.0.0.1:7002 of \
             route \"b\"",
            "(\"a\" -> \"b\" -> \"a\")",
        ],
    );
    // Three routes, one of them by a wildcard listener and an SNI entry.
    let ring = format!(
        "{}{}[[route]]\nname = \"c\"\nlisten = [\"127.0.0.1:7003\"]\n\
         [[route.sni]]\nmatch = \"a.test\"\nupstream = \"127.0.0.1:7001\"\n",
        route("a", "0.0.0.0:7001", "127.0.0.1:7002"),
        route("b", "127.0.0.1:7002", "127.0.0.1:7003"),
    );
    refused(&ring, 4, 12, &["(\"a\" -> \"b\" -> \"c\" -> \"a\")"]);
    // A chain that ends outside the relay is no loop.
    read(&format!(
        "{}{}",
        route("a", "127.0.0.1:7001", "127.0.0.1:7002"),
        route("b", "127.0.0.1:7002", "192.0.2.1:443"),
    ))
    .unwrap();
}

/// Hostile input 11: `0.0.0.0:P` and `127.0.0.1:P` in two routes passed `check`, and `run`
/// exited 2: the kernel refuses the second bind.
#[test]
fn a_wildcard_and_a_specific_listener_on_one_port_are_refused() {
    refused(
        &format!(
            "{}{}",
            route("a", "0.0.0.0:7001", "a.test:1"),
            route("b", "127.0.0.1:7001", "a.test:1"),
        ),
        7,
        11,
        &["route \"b\": listen: 127.0.0.1:7001 overlaps 0.0.0.0:7001 of route \"a\""],
    );
    refused(
        "[[route]]\nname = \"a\"\nlisten = [\"[::1]:7001\", \"[::]:7001\"]\nupstream = \"a.test:1\"\n",
        3,
        25,
        &["[::]:7001 overlaps [::1]:7001 of this route"],
    );
    // IPv6 listeners are IPv6-only: [::]:P and 0.0.0.0:P coexist, as do two specific addresses.
    read(&format!(
        "{}{}{}",
        route("a", "0.0.0.0:7001", "a.test:1"),
        route("b", "[::]:7001", "a.test:1"),
        route("c", "127.0.0.2:7002", "a.test:1"),
    ))
    .unwrap();
    read(&format!(
        "{}{}",
        route("a", "127.0.0.1:7002", "a.test:1"),
        route("b", "127.0.0.2:7002", "a.test:1"),
    ))
    .unwrap();
}

/// Hostile input 11: listening on `[::ffff:127.0.0.1]:P` passed `check`, and `run` exited 2
/// (EINVAL from the IPv6-only socket).
#[test]
fn an_ipv4_mapped_listen_address_is_refused() {
    refused(
        &route("a", "[::ffff:127.0.0.1]:7001", "a.test:1"),
        3,
        11,
        &["route \"a\": listen: ", "listen on 127.0.0.1:7001"],
    );
}

/// Hostile input 11: `metrics` on a route's listen address passed `check`, and `run` exited 2.
#[test]
fn metrics_on_a_routes_port_is_refused() {
    for (metrics, listen) in [
        ("127.0.0.1:7001", "127.0.0.1:7001"),
        ("127.0.0.1:7001", "0.0.0.0:7001"),
        ("0.0.0.0:7001", "127.0.0.1:7001"),
        // The metrics socket is dual-stack.
        ("[::]:7001", "127.0.0.1:7001"),
    ] {
        refused(
            &format!(
                "metrics = \"{metrics}\"\n{}",
                route("a", listen, "a.test:1")
            ),
            1,
            11,
            &[&format!(
                "metrics: {metrics} cannot be bound next to {listen} where route \"a\" listens"
            )],
        );
    }
    read(&format!(
        "metrics = \"127.0.0.1:7001\"\n{}",
        route("a", "[::]:7001", "a.test:1")
    ))
    .unwrap();
    read(&format!(
        "metrics = \"127.0.0.1:0\"\n{}",
        route("a", "127.0.0.1:0", "a.test:1")
    ))
    .unwrap();
}

/// Hostile input 11: upstream `127.0.0.1:0` passed `check`; `run` started and every
/// connection failed.
#[test]
fn an_upstream_on_port_0_is_refused() {
    refused(
        &route("a", "127.0.0.1:7001", "127.0.0.1:0"),
        4,
        12,
        &["route \"a\": upstream: invalid upstream address \"127.0.0.1:0\": port 0"],
    );
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.test\"\nupstream = \"[::1]:0\"\n"),
        6,
        12,
        &["route \"s3\": sni.upstream: ", "port 0"],
    );
}

/// Hostile input 12: `[fe80::1%lo]:P` was refused with "IPv6 addresses go in brackets". A
/// zone names an interface (or gives its index).
#[test]
fn ipv6_zones_name_an_interface() {
    let config = read(&route("a", "[fe80::1%lo]:7001", "[fe80::2%lo]:7002")).unwrap();
    let std::net::SocketAddr::V6(listen) = config.settings.routes[0].route.listen_addrs()[0] else {
        panic!("an IPv6 listener")
    };
    assert_ne!(listen.scope_id(), 0);
    refused(
        &route("a", "[fe80::1%no-such-if0]:7001", "a.test:1"),
        3,
        11,
        &["route \"a\": listen: ", "no network interface of that name"],
    );
    refused(
        &route("a", "[fe80::1]:7001", "a.test:1"),
        3,
        11,
        &["link-local address: give the interface it is on"],
    );
}

/// Hostile input 12: the `check` summary left out `hello_timeout`.
#[test]
fn the_summary_shows_the_hello_timeout_of_sni_routes() {
    let config = read(&format!(
        "{ROUTE}hello_timeout = \"3s\"\n[[route.sni]]\nmatch = \"a.test\"\n{}",
        route("fixed", "127.0.0.1:0", "a.test:1")
    ))
    .unwrap();
    let summary = config.summary();
    let (sni, fixed) = summary.split_once("route \"fixed\"").unwrap();
    assert!(
        sni.contains("half-close timeout 1m; hello timeout 3s"),
        "{summary}"
    );
    assert!(!fixed.contains("hello timeout"), "{summary}");
}

#[test]
fn upstream_allow_admits_ranges_and_check_prints_the_policy() {
    let text = format!(
        "[defaults]\nupstream_allow = [\"169.254.0.0/16\"]\n\n{ROUTE}upstream = \"metadata.test:80\"\n\n\
         [[route]]\nname = \"plain\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"a.test:1\"\n\
         upstream_allow = []\n"
    );
    let config = read(&text).unwrap();
    let routes = &config.settings.routes;
    assert_eq!(
        routes[0].route.address_policy().allowed(),
        ["169.254.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(routes[1].route.address_policy().allowed().is_empty());
    let summary = config.summary();
    assert!(
        summary.contains("upstream  names never reach link-local")
            && summary.contains("allowed anyway: 169.254.0.0/16"),
        "{summary}"
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nupstream_allow = [\"169.254.0.0/33\"]\n"),
        5,
        19,
        &["route \"s3\": upstream_allow", "169.254.0.0/33"],
    );
}

#[test]
fn control_socket_is_an_absolute_socket_path() {
    let ok = format!(
        "control_socket = \"/run/spliceway/control.sock\"\n{ROUTE}upstream = \"127.0.0.1:9\"\n"
    );
    let config = read(&ok).unwrap();
    assert_eq!(
        config.control_socket(),
        Some(std::path::Path::new("/run/spliceway/control.sock"))
    );
    assert!(
        config
            .summary()
            .contains("control socket: /run/spliceway/control.sock"),
        "{}",
        config.summary()
    );
    let none = format!("{ROUTE}upstream = \"127.0.0.1:9\"\n");
    assert_eq!(read(&none).unwrap().control_socket(), None);
    for (value, needle) in [
        ("control.sock", "not an absolute path"),
        ("", "empty path"),
        ("/run/spliceway/", "directory"),
    ] {
        refused(
            &format!(
                "threads = 1\ncontrol_socket = \"{value}\"\n{ROUTE}upstream = \"127.0.0.1:9\"\n"
            ),
            2,
            18,
            &["control_socket", needle],
        );
    }
    let long = format!("/{}", "x".repeat(120));
    refused(
        &format!("control_socket = \"{long}\"\n{ROUTE}upstream = \"127.0.0.1:9\"\n"),
        1,
        18,
        &["control_socket", "at most 107"],
    );
}

#[test]
fn proxy_protocol_keys_and_the_drain_delay() {
    use spliceway::proxy_protocol::{Accept, Version};
    use std::time::Duration;
    let text = format!(
        "drain_delay = \"3s\"\n[defaults]\nproxy_timeout = \"2s\"\n{ROUTE}upstream = \
         \"127.0.0.1:9\"\naccept_proxy = \"v2\"\naccept_proxy_from = [\"10.0.0.0/16\"]\nsend_proxy = \"v1\"\n\
         [[route]]\nname = \"plain\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"127.0.0.1:9\"\n"
    );
    let config = read(&text).unwrap();
    assert_eq!(config.drain_delay(), Duration::from_secs(3));
    let routes = config.routes().unwrap();
    let o = routes[0].connection_options();
    assert_eq!(o.accept_proxy, Some(Accept::V2));
    assert_eq!(o.send_proxy, Some(Version::V1));
    assert_eq!(o.proxy_timeout, Duration::from_secs(2));
    let o = routes[1].connection_options();
    assert_eq!((o.accept_proxy, o.send_proxy), (None, None));
    assert_eq!(o.proxy_timeout, Duration::from_secs(2), "from [defaults]");
    assert_eq!(
        read("[[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"127.0.0.1:9\"\n")
            .unwrap()
            .drain_delay(),
        Duration::ZERO,
        "off by default"
    );
    let summary = config.summary();
    assert!(summary.contains("drain delay 3s"), "{summary}");
    assert!(
        summary.contains("proxy     accept v2 from 10.0.0.0/16"),
        "{summary}"
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

/// Issue 24, finding 1: a PROXY header was believed from any peer. A route that reads one must
/// name the peers allowed to send it, or the file is refused at `accept_proxy`.
#[test]
fn accept_proxy_needs_the_peers_allowed_to_send_it() {
    let base = format!("{ROUTE}upstream = \"127.0.0.1:9\"\n");
    let message = refused(
        &format!("{base}accept_proxy = \"v2\"\n"),
        5,
        16,
        &[
            "route \"s3\": accept_proxy",
            "needs accept_proxy_from",
            "[\"0.0.0.0/0\", \"::/0\"]",
        ],
    );
    assert!(
        message.contains("any client could claim any address"),
        "{message}"
    );
    // Set in [defaults], the error points there.
    refused(
        &format!("[defaults]\naccept_proxy = \"any\"\n{base}"),
        2,
        16,
        &[
            "route \"s3\": accept_proxy (from [defaults])",
            "needs accept_proxy_from",
        ],
    );
    refused(
        &format!("{base}accept_proxy = \"v2\"\naccept_proxy_from = []\n"),
        6,
        21,
        &["route \"s3\": accept_proxy_from", "at least one CIDR"],
    );
    refused(
        &format!("{base}accept_proxy = \"v2\"\naccept_proxy_from = [\"10.0.0.0/33\"]\n"),
        6,
        22,
        &["route \"s3\": accept_proxy_from", "invalid CIDR"],
    );
    refused(
        &format!("{base}accept_proxy_from = [\"10.0.0.0/8\"]\n"),
        5,
        21,
        &[
            "route \"s3\": accept_proxy_from",
            "no effect without accept_proxy",
        ],
    );
    // From [defaults], for the routes that read headers; the others ignore it.
    let config = read(&format!(
        "[defaults]\naccept_proxy_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n{base}accept_proxy = \"v1\"\n\
         [[route]]\nname = \"plain\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"127.0.0.1:9\"\n"
    ))
    .unwrap();
    let routes = config.routes().unwrap();
    let peers: Vec<String> = routes[0]
        .proxy_peers()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(peers, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(routes[1].proxy_peers(), None);
}

/// "Anyone" is allowed, written out, and `check` warns about it.
#[test]
fn believing_proxy_headers_from_everyone_is_a_warning() {
    let config = read(&format!(
        "{ROUTE}upstream = \"127.0.0.1:9\"\naccept_proxy = \"v2\"\n\
         accept_proxy_from = [\"0.0.0.0/0\", \"::/0\"]\n"
    ))
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("route \"s3\": accept_proxy_from admits every address"),
        "{warnings:?}"
    );
    assert!(config.summary().contains("warning   route \"s3\""));
}

#[test]
fn bad_proxy_protocol_values_name_their_line_and_key() {
    let base = format!("{ROUTE}upstream = \"127.0.0.1:9\"\n");
    refused(
        &format!("{base}accept_proxy = \"v3\"\n"),
        5,
        16,
        &["route \"s3\": accept_proxy", "v1, v2 or any"],
    );
    refused(
        &format!("{base}send_proxy = \"any\"\n"),
        5,
        14,
        &["route \"s3\": send_proxy", "v1 or v2"],
    );
    refused(
        &format!("{base}proxy_timeout = \"0s\"\n"),
        5,
        17,
        &["route \"s3\": proxy_timeout", "more than zero"],
    );
    refused(
        &format!("drain_delay = \"soon\"\n{base}"),
        1,
        15,
        &["drain_delay", "invalid duration"],
    );
}

/// Issue 25: `[route]` said "invalid type: map, expected a sequence"; an unknown key listed the
/// 26 keys of its table. Each now says what to write, at the same place.
#[test]
fn toml_errors_say_what_to_write() {
    let message = refused(
        "[route]\nname = \"s3\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"a.test:1\"\n",
        1,
        1,
        &["route: write [[route]], with two brackets"],
    );
    assert!(!message.contains("invalid type"), "{message}");
    refused(
        &format!("{ROUTE}[route.sni]\nmatch = \"a.test\"\n"),
        4,
        1,
        &["route \"s3\": sni: write [[route.sni]], with two brackets"],
    );
    refused(
        "[[route]]\nname = \"s3\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a.test:1\"\n",
        3,
        10,
        &["listen: expected a list: write listen = [\"127.0.0.1:0\"]"],
    );
    let message = refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nidle_timout = \"5s\"\n"),
        5,
        1,
        &["route \"s3\": idle_timout: unknown key `idle_timout`: did you mean `idle_timeout`?"],
    );
    assert!(
        !message.contains("half_close_timeout"),
        "no list: {message}"
    );
    refused(
        &format!("treads = 2\n{ROUTE}upstream = \"a.test:1\"\n"),
        1,
        1,
        &["treads: unknown key `treads`: did you mean `threads`?"],
    );
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.test\"\nupstrem = \"b.test:1\"\n"),
        6,
        1,
        &["sni.upstrem: unknown key `upstrem`: did you mean `upstream`?"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nmetrics = \"127.0.0.1:9898\"\n"),
        5,
        1,
        &["unknown key `metrics` here: it goes at the top of the file"],
    );
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\ncolour = \"blue\"\n"),
        5,
        1,
        &["unknown key `colour` (`man 5 spliceway.toml` lists the keys"],
    );
}

#[test]
fn interception_routes_read_and_summarised() {
    use spliceway::{Source, Upstream};
    let text = format!(
        "{ROUTE}upstream = \"original-destination\"\nupstream_allow = [\"10.0.2.0/24\"]\n\
         transparent = true\nsource = \"client\"\n\
         [[route]]\nname = \"connect\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"http-connect\"\n\
         connect_allow = [\"*.amazonaws.com:443\", \"s3.test:8443\"]\n\
         upstream_allow = [\"52.219.0.0/16\"]\nrequest_timeout = \"3s\"\nsource = \"10.0.1.1\"\n"
    );
    let config = read(&text).unwrap();
    let routes = config.routes().unwrap();
    assert_eq!(routes[0].upstream(), &Upstream::OriginalDestination);
    assert!(routes[0].address_policy().is_strict());
    assert_eq!(routes[0].connection_options().source, Source::Client);
    assert!(routes[0].connection_options().transparent);
    let Upstream::HttpConnect(table) = routes[1].upstream() else {
        panic!("{:?}", routes[1].upstream())
    };
    assert!(table.allows("bucket.s3.amazonaws.com", 443));
    assert!(!table.allows("bucket.s3.amazonaws.com", 80));
    assert_eq!(
        table.client_request_timeout(),
        std::time::Duration::from_secs(3)
    );
    assert_eq!(
        routes[1].connection_options().source,
        Source::Address("10.0.1.1".parse().unwrap())
    );
    let summary = config.summary();
    for needle in [
        "the original destination (TPROXY",
        "only 10.0.2.0/24",
        "source    the client's address",
        "HTTP CONNECT",
        "    *.amazonaws.com:443",
        "request timeout 3s",
    ] {
        assert!(summary.contains(needle), "{needle:?} not in:\n{summary}");
    }
}

#[test]
fn interception_routes_without_their_lists_are_refused_where_written() {
    refused(
        &format!("{ROUTE}upstream = \"original-destination\"\n"),
        4,
        12,
        &[
            "route \"s3\": upstream",
            "needs upstream_allow",
            "open relay",
        ],
    );
    refused(
        &format!("{ROUTE}upstream = \"http-connect\"\nupstream_allow = [\"10.0.0.0/8\"]\n"),
        4,
        12,
        &["needs connect_allow", "*.amazonaws.com:443"],
    );
    refused(
        &format!("{ROUTE}upstream = \"http-connect\"\nconnect_allow = [\"*.amazonaws.com:443\"]\n"),
        4,
        12,
        &["needs upstream_allow"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = \"http-connect\"\nconnect_allow = [\"*.amazonaws.com\"]\n\
             upstream_allow = [\"10.0.0.0/8\"]\n"
        ),
        5,
        18,
        &["route \"s3\": connect_allow", "no port"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = \"http-connect\"\nconnect_allow = []\nupstream_allow = [\"10.0.0.0/8\"]\n"
        ),
        5,
        17,
        &["at least one"],
    );
    refused(
        &format!("{ROUTE}upstream = \"10.0.0.1:443\"\nconnect_allow = [\"a.test:443\"]\n"),
        5,
        17,
        &["only routes with upstream = \"http-connect\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"10.0.0.1:443\"\nrequest_timeout = \"5s\"\n"),
        5,
        19,
        &["only routes with upstream = \"http-connect\""],
    );
    refused(
        &format!("{ROUTE}upstream = \"10.0.0.1:443\"\ntransparent = true\n"),
        5,
        15,
        &["original-destination"],
    );
    refused(
        &format!("{ROUTE}upstream = \"10.0.0.1:443\"\nsource = \"nowhere\"\n"),
        5,
        10,
        &["route \"s3\": source", "invalid source"],
    );
}

#[test]
fn a_route_where_the_client_chooses_takes_no_upstream_group() {
    refused(
        &format!(
            "{ROUTE}upstream = \"original-destination\"\nupstream_allow = [\"10.0.2.0/24\"]\n\
             balance = \"least-connections\"\n"
        ),
        6,
        11,
        &["balance", "not to a route where the client chooses"],
    );
    refused(
        &format!(
            "{ROUTE}upstream = \"original-destination\"\nupstream_allow = [\"10.0.2.0/24\"]\n\
             [[route.upstreams]]\naddress = \"10.0.2.5:443\"\n"
        ),
        6,
        1,
        &["upstreams", "not both"],
    );
    // A list naming the keyword is a list of addresses, and the keyword is not one.
    refused(
        &format!("{ROUTE}upstream = [\"original-destination\", \"10.0.2.5:443\"]\n"),
        4,
        13,
        &["upstream"],
    );
}
