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
user = "spliceway"
group = "spliceway"
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
    assert_eq!(config.user(), Some("spliceway"));
    assert_eq!(config.group(), Some("spliceway"));
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
    assert_eq!(config.drain_timeout(), spliceway::DEFAULT_DRAIN_TIMEOUT);
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
        &["thread: unknown field `thread`"],
    );
}

#[test]
fn unknown_route_key() {
    refused(
        &format!("{ROUTE}upstream = \"a.test:1\"\nidle = \"5s\"\n"),
        5,
        1,
        &["route \"s3\": idle: unknown field `idle`"],
    );
}

#[test]
fn unknown_sni_key() {
    refused(
        &format!("{ROUTE}[[route.sni]]\nmatch = \"a.test\"\nport = 1\n"),
        6,
        1,
        &["route \"s3\": sni.port: unknown field `port`"],
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
        &["unknown field `server`"],
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
