//! A DNS client for upstream names that bypasses `/etc/hosts` and honours record TTLs
//! (cargo feature `dns`, on by default).
//!
//! Why: the S3 trick puts `s3-ap-northeast-1.amazonaws.com` in the *client's* `/etc/hosts`,
//! pointing at the relay. If the relay host carries the same entry (a shared image, a
//! configuration tool), the system resolver sends the relay to itself. A route with
//! `resolver = "dns"` asks the DNS servers of `/etc/resolv.conf` directly (or the servers
//! given with `resolver = { servers = [...] }`), so `/etc/hosts` plays no part, and it caches
//! each answer for as long as its records say rather than for a fixed time.
//!
//! The lookup is [hickory-resolver](https://docs.rs/hickory-resolver). It is asynchronous;
//! each [`Resolution`] made here owns a small current-thread tokio runtime and blocks on it.
//! That is right where it runs: on the relay's resolver threads, never on an event loop.
//!
//! A name that does not exist (NXDOMAIN, or no address record) whose answer carries the zone's
//! SOA record fails with a [`NegativeAnswer`] holding the negative-caching time of RFC 2308
//! (the smaller of the SOA's TTL and its minimum), so the relay remembers the failure that long
//! (within its bounds) rather than for its default few seconds.
//!
//! Names are looked up as fully qualified (a trailing dot is added): upstream names in a
//! configuration are complete names, and `search` domains of `/etc/resolv.conf` must not
//! turn `s3.amazonaws.com` into `s3.amazonaws.com.corp.example`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};

use spliceway::{NegativeAnswer, Resolution};

/// Time allowed for one query to one server before trying again or the next server.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Queries sent per server before giving up on it.
pub const QUERY_ATTEMPTS: usize = 2;

/// The name servers of `/etc/resolv.conf`, port 53.
///
/// # Errors
///
/// If the file cannot be read or lists no server.
pub fn system_servers() -> io::Result<Vec<SocketAddr>> {
    let (config, _) =
        hickory_resolver::system_conf::read_system_conf().map_err(io::Error::other)?;
    let servers: Vec<SocketAddr> = config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect();
    if servers.is_empty() {
        return Err(io::Error::other("/etc/resolv.conf lists no nameserver"));
    }
    Ok(servers)
}

/// A [`Resolution`] that asks `servers` (UDP, then TCP for truncated answers), ignoring
/// `/etc/hosts`, and reports each answer's remaining TTL so the relay caches it that long.
///
/// # Errors
///
/// If `servers` is empty or the runtime cannot be created.
pub fn resolution(servers: &[SocketAddr]) -> io::Result<Resolution> {
    resolution_with(servers, QUERY_TIMEOUT, QUERY_ATTEMPTS)
}

fn resolution_with(
    servers: &[SocketAddr],
    timeout: Duration,
    attempts: usize,
) -> io::Result<Resolution> {
    if servers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no DNS server given",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("spliceway-dns")
        .build()?;
    let mut config = ResolverConfig::from_name_servers(Vec::new());
    for server in servers {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
    }
    let resolver = {
        // Building spawns nothing yet, but the provider wants a runtime context.
        let _context = runtime.enter();
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.timeout = timeout;
        options.attempts = attempts;
        options.ndots = 0;
        builder.build().map_err(io::Error::other)?
    };
    let label = {
        let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
        format!("dns {}", list.join(","))
    };
    let runtime = Arc::new(runtime);
    Ok(Resolution::with_ttl(label, move |host: &str, port| {
        let name = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        let lookup = runtime
            .block_on(resolver.lookup_ip(name.as_str()))
            .map_err(|e| lookup_error(host, &e))?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let addrs = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        Ok((addrs, Some(ttl)))
    }))
}

/// A failed lookup as the relay takes it: a [`NegativeAnswer`] when the server said the name
/// has no address and gave its SOA (how long that holds), else a plain error.
fn lookup_error(host: &str, error: &NetError) -> io::Error {
    let detail = format!("{host}: {error}");
    match error {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            negative_ttl: Some(seconds),
            ..
        })) => NegativeAnswer::new(detail, Duration::from_secs(u64::from(*seconds))).into(),
        _ => io::Error::new(io::ErrorKind::NotFound, detail),
    }
}

#[cfg(test)]
mod tests;
