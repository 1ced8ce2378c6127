//! The summary `spliceway check` prints: the relay-wide settings, then each route with what it
//! listens on, where it relays to and with which options.

use std::fmt::{self, Write as _};
use std::time::Duration;

use spliceway::{Mode, Probe, Upstream, UpstreamGroup};

use std::path::Path;

use super::settings::{RouteSpec, Settings};

/// The summary of the settings read from `path`.
pub(super) fn render(path: &Path, settings: &Settings) -> String {
    let mut out = String::new();
    let _ = write_summary(path, settings, &mut out);
    out
}

fn write_summary(path: &Path, settings: &Settings, out: &mut String) -> fmt::Result {
    let plural = if settings.routes.len() == 1 { "" } else { "s" };
    writeln!(
        out,
        "{}: OK, {} route{plural}",
        path.display(),
        settings.routes.len()
    )?;
    let threads = settings
        .threads
        .filter(|&n| n > 0)
        .map_or("one per CPU".to_string(), |n| n.to_string());
    writeln!(
        out,
        "relay: threads {threads}; max connections {}; drain delay {}; drain timeout {}; log {} ({})",
        limit(settings.max_connections),
        humantime::format_duration(settings.drain_delay),
        humantime::format_duration(settings.drain_timeout),
        settings.log_level.name(),
        settings.log_format.name(),
    )?;
    let metrics = settings
        .metrics
        .map_or("off".to_string(), |a| format!("http://{a}/metrics"));
    let user = match (&settings.user, &settings.group) {
        (None, None) => "(stays as started)".to_string(),
        (u, g) => format!(
            "user {}, group {}",
            u.as_deref().unwrap_or("-"),
            g.as_deref().unwrap_or("(the user's)")
        ),
    };
    writeln!(out, "metrics: {metrics}; privileges: {user}")?;
    if let Some(path) = &settings.control_socket {
        writeln!(
            out,
            "control socket: {} (spliceway upgrade)",
            path.display()
        )?;
    }
    writeln!(
        out,
        "pipe pool per worker: {} idle pipes kept; budget {}",
        settings.pool_limits.max_idle_pipes,
        bytesize::ByteSize(settings.pool_limits.pipe_budget_bytes as u64)
    )?;
    for spec in &settings.routes {
        write_route(out, spec)?;
    }
    Ok(())
}

/// A rate limit as `check` prints it: `up 600 Mbit/s (burst 1.0 MiB), down 1 Gbit/s (paced by
/// the kernel)`, the default burst shown as what it comes to. `paced`: which directions
/// (up, down) the kernel paces rather than the relay's bucket (no burst then).
fn describe_rate_limit(limit: &spliceway::RateLimit, paced: (bool, bool)) -> String {
    let side = |rate: Option<spliceway::Rate>, paced: bool| match rate {
        None => "unlimited".to_string(),
        Some(rate) if paced => format!("{rate} (paced by the kernel)"),
        Some(rate) => format!(
            "{rate} (burst {})",
            bytesize::ByteSize(limit.burst_of(rate))
        ),
    };
    format!(
        "up {}, down {}",
        side(limit.up, paced.0),
        side(limit.down, paced.1)
    )
}

fn limit(value: Option<usize>) -> String {
    value.map_or("unlimited".to_string(), |n| n.to_string())
}

/// A route's upstreams: each with its weight and role, then how they are balanced and judged
/// (`failure`: what counts against an upstream, a connect failure or, on a UDP route, an ICMP
/// error).
fn write_group(out: &mut String, group: &UpstreamGroup, failure: &str) -> fmt::Result {
    let fmt_d = |d: Duration| humantime::format_duration(d).to_string();
    writeln!(out, "  upstreams ({} balance)", group.balancing())?;
    for server in group.servers() {
        let role = if server.is_backup() {
            "backup"
        } else {
            "primary"
        };
        writeln!(
            out,
            "    {}  weight {}  {role}",
            server.address(),
            server.upstream_weight()
        )?;
    }
    let passive = group.passive();
    if passive.max_fails == 0 {
        writeln!(out, "  passive   off (max_fails = 0)")?;
    } else {
        writeln!(
            out,
            "  passive   down for {} after {} {failure}(s) in a row",
            fmt_d(passive.fail_timeout),
            passive.max_fails
        )?;
    }
    match group.check() {
        None => writeln!(out, "  checks    none")?,
        Some(check) => {
            let probe = match &check.probe {
                Probe::Connect => "TCP connect".to_string(),
                Probe::SendExpect { send, expect } => format!(
                    "send {:?}, expect {:?}",
                    String::from_utf8_lossy(send),
                    String::from_utf8_lossy(expect)
                ),
                Probe::HttpGet { path, status } => format!("HTTP GET {path}, expect {status}"),
                _ => "other".to_string(),
            };
            writeln!(
                out,
                "  checks    {probe} every {} (timeout {}); down after {} failures, up after {} passes",
                fmt_d(check.interval),
                fmt_d(check.timeout),
                check.fall,
                check.rise
            )?;
        }
    }
    Ok(())
}

fn write_route(out: &mut String, spec: &RouteSpec) -> fmt::Result {
    let route = &spec.route;
    let options = route.connection_options();
    writeln!(out, "route {:?}", route.name())?;
    let listen: Vec<String> = route.listen_addrs().iter().map(|a| a.to_string()).collect();
    writeln!(out, "  listen    {}", listen.join(", "))?;
    match route.upstream() {
        Upstream::Fixed(addr) => writeln!(out, "  upstream  {addr}")?,
        Upstream::Sni(table) => {
            writeln!(
                out,
                "  sni       (refused unless the TLS server name matches)"
            )?;
            for entry in table.entries() {
                match &entry.upstream {
                    Some(up) => writeln!(out, "    {} -> {up}", entry.pattern)?,
                    None => writeln!(
                        out,
                        "    {} -> the name itself, on the port connected to",
                        entry.pattern
                    )?,
                }
            }
        }
        Upstream::Group(group) => {
            let failure = if route.transport() == spliceway::Protocol::Udp {
                "ICMP error"
            } else {
                "connect failure"
            };
            write_group(out, group, failure)?;
        }
        Upstream::OriginalDestination => writeln!(
            out,
            "  upstream  the original destination ({}; each connection goes where its client \
             dialled, within upstream_allow)",
            if options.transparent {
                "TPROXY to a transparent listener: the accepted socket's local address"
            } else {
                "REDIRECT/DNAT: SO_ORIGINAL_DST"
            }
        )?,
        Upstream::HttpConnect(table) => {
            writeln!(
                out,
                "  connect   HTTP CONNECT (answered 403 unless the target matches; request \
                 timeout {})",
                humantime::format_duration(table.client_request_timeout())
            )?;
            for pattern in table.allowed() {
                writeln!(out, "    {pattern}")?;
            }
        }
        // An upstream kind newer than this summary: say what it is rather than nothing.
        other => writeln!(out, "  upstream  {other:?}")?,
    }
    writeln!(out, "  resolver  {}", spec.resolver)?;
    let access = route.access_list();
    let nets = |list: &[ipnet::IpNet]| {
        if list.is_empty() {
            "-".to_string()
        } else {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let allow = if access.allow.is_empty() {
        "everyone not denied".to_string()
    } else {
        nets(&access.allow)
    };
    writeln!(out, "  allow     {allow}")?;
    writeln!(out, "  deny      {}", nets(&access.deny))?;
    writeln!(out, "  upstream  {}", route.address_policy())?;
    let fmt_d = |d: Duration| humantime::format_duration(d).to_string();
    if route.transport() == spliceway::Protocol::Udp {
        let udp = route.session_options();
        writeln!(
            out,
            "  protocol  udp (a session per client address, its own upstream socket)"
        )?;
        writeln!(
            out,
            "  limits    max sessions {}; per client address {}; idle timeout {}",
            limit(udp.max_sessions),
            limit(udp.max_sessions_per_client),
            fmt_d(udp.idle_timeout),
        )?;
        match udp.responses {
            None => {}
            Some(0) => writeln!(
                out,
                "  answers   none expected: a session ends once its datagrams have left"
            )?,
            Some(n) => writeln!(
                out,
                "  answers   {n} per datagram: a session ends once each datagram has had them"
            )?,
        }
        for warning in route_warnings(route) {
            writeln!(out, "  warning   {warning}")?;
        }
        return Ok(());
    }
    let hello = match route.upstream() {
        Upstream::Sni(table) => format!("; hello timeout {}", fmt_d(table.client_hello_timeout())),
        // A fixed upstream, or a kind this summary predates: no hello to wait for.
        _ => String::new(),
    };
    writeln!(
        out,
        "  limits    max connections {}; connect timeout {} x{}; idle timeout {}; \
         half-close timeout {}{hello}",
        limit(route.connection_limit()),
        fmt_d(options.connect_timeout),
        options.connect_attempts,
        fmt_d(options.idle_timeout),
        fmt_d(options.half_close_timeout),
    )?;
    let rate = |limit: &Option<spliceway::RateLimit>, paced| {
        limit.map_or_else(|| "none".to_string(), |l| describe_rate_limit(&l, paced))
    };
    if options.rate_limit.is_some()
        || options.client_rate_limit.is_some()
        || options.route_rate_limit.is_some()
        || route.client_connection_limit().is_some()
    {
        writeln!(
            out,
            "  bandwidth per connection {}; per client {}; route {}; max connections per \
             client {}",
            rate(&options.rate_limit, options.kernel_paced()),
            rate(&options.client_rate_limit, (false, false)),
            rate(&options.route_rate_limit, (false, false)),
            limit(route.client_connection_limit()),
        )?;
    }
    let engine = describe_engine(options);
    let keepalive = options
        .keepalive
        .map_or("off".to_string(), |d| fmt_d(d).to_string());
    let congestion = options.congestion.as_deref().unwrap_or("system default");
    writeln!(
        out,
        "  mode      {engine}; nodelay {}; keepalive {keepalive}; congestion {congestion}",
        if options.nodelay { "on" } else { "off" }
    )?;
    let accept = options.accept_proxy.map_or("off".to_string(), |a| {
        format!(
            "{a} from {} (the header's client address is judged by the allow/deny lists), \
             timeout {}",
            nets(route.proxy_peers().unwrap_or_default()),
            fmt_d(options.proxy_timeout)
        )
    });
    let send = options
        .send_proxy
        .map_or("off".to_string(), |v| v.to_string());
    writeln!(out, "  proxy     accept {accept}; send {send}")?;
    if options.source != spliceway::Source::Auto || options.transparent {
        writeln!(
            out,
            "  source    {}{}",
            match options.source {
                spliceway::Source::Client =>
                    "the client's address (IP_TRANSPARENT; CAP_NET_ADMIN)".to_string(),
                other => other.to_string(),
            },
            if options.transparent {
                "; listeners transparent (TPROXY; CAP_NET_ADMIN)"
            } else {
                ""
            }
        )?;
    }
    for warning in route_warnings(route) {
        writeln!(out, "  warning   {warning}")?;
    }
    Ok(())
}

/// What a route allows that is valid but most likely not meant, in words for `check` and for
/// the log of `run`.
pub(crate) fn route_warnings(route: &spliceway::Route) -> Vec<String> {
    let mut warnings = Vec::new();
    let anyone = route
        .proxy_peers()
        .unwrap_or_default()
        .iter()
        .any(|net| net.prefix_len() == 0);
    if route.connection_options().accept_proxy.is_some() && anyone {
        warnings.push(format!(
            "route {:?}: accept_proxy_from admits every address: any client can send a PROXY \
             header and choose the address the allow/deny lists, the log and the upstream see \
             (name the load balancers' addresses instead)",
            route.name()
        ));
    }
    warnings
}

/// How a route moves bytes, in words: `splice, 512.0 KiB pipes` (with `, no fallback to copy`
/// when splice is required) or `copy, 64.0 KiB buffers`. Shared by `spliceway check` and the
/// start-up line of `spliceway relay`, so both say it the same way.
pub fn describe_engine(options: &spliceway::ConnectionOptions) -> String {
    match options.mode {
        Mode::Splice => format!(
            "splice, {} pipes{}",
            bytesize::ByteSize(options.pipe_size as u64),
            if options.require_splice {
                ", no fallback to copy"
            } else {
                ""
            }
        ),
        Mode::Copy => format!(
            "copy, {} buffers",
            bytesize::ByteSize(options.copy_buffer_size as u64)
        ),
    }
}
