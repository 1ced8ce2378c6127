//! From the raw file to a checked [`Config`]: every value that serde cannot check by its type
//! (addresses, networks, name patterns, sizes, durations, choices, users and groups) is checked
//! here, then what only the whole file shows (listeners the kernel cannot bind together,
//! `metrics` on a listener's port, routes that relay back into the relay), so that `check`
//! refuses what `run` would refuse at start-up. Every error points at the value's span.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use spliceway::check::{check_congestion, check_keepalive};
use spliceway::defaults::DEFAULT_DRAIN_TIMEOUT;
use spliceway::http_connect::ConnectPattern;
use spliceway::proxy_protocol::{Accept, Version as ProxyVersion};
use spliceway::sni::NamePattern;
use spliceway::{
    AccessList, ConnectTable, ConnectionOptions, Mode, PoolLimits, Protocol, RateLimit, Route,
    SniEntry, SniTable, Source, UdpOptions, UpstreamAddr, parse_listen_addr,
};

use super::across_routes::{
    Listener, LiteralUpstream, Seen, listeners_overlap, metrics_overlap, ring,
};
use super::hints;
use super::location::{line_column, place_of};
use super::raw::{RawConfig, RawOptions, RawResolver, RawRoute, RawUpstream, Scalar};
use super::settings::{At, RouteSpec, Settings};
use crate::{ConfigError, LogFormat, LogLevel, ResolverChoice};

mod rate_limits;

/// The most answers `udp_responses` may expect per client datagram.
const MAX_UDP_RESPONSES: u32 = 1000;
/// Largest pipe or buffer size accepted (the engine's own bound).
const MAX_SIZE_BYTES: u64 = 1 << 30;
/// Most worker threads accepted (`threads`, and `spliceway relay --threads`). Each worker has
/// its own epoll instance, waker and listening sockets: past a thousand, start-up fails on
/// descriptors or threads rather than serving any faster.
pub const MAX_THREADS: usize = 1024;
/// The longest duration accepted for any time in the file (`connect_timeout`, `idle_timeout`,
/// `half_close_timeout`, `hello_timeout`, `keepalive`, `resolve_cache_ttl`, `drain_timeout`)
/// and for the duration flags of `spliceway relay`: 7 days. See docs/operations.md,
/// "Limits on values": longer than anything a relay should wait for (Linux's connection
/// tracking forgets an idle established flow after 5 days), and short enough that a value
/// past it is a mistake (a unit mixed up), which is refused rather than taken as "never".
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `upstream = "original-destination"`: relay to the address the client dialled.
const ORIGINAL_DESTINATION: &str = "original-destination";
/// `upstream = "http-connect"`: relay to the target of the client's CONNECT request.
const HTTP_CONNECT: &str = "http-connect";

/// Reads `text` (from `path`) into a [`Config`].
pub(super) fn read(text: &str, path: &Path) -> Result<Settings> {
    let checker = Checker { text, path };
    let document = toml::de::DeTable::parse(text).map_err(|e| checker.toml_error(&e, None))?;
    let raw = RawConfig::deserialize(toml::Deserializer::from(document.clone()))
        .map_err(|e| checker.toml_error(&e, Some(document.get_ref())))?;
    checker.config(raw)
}

/// Options read from one table; `None` where the table does not set the key.
#[derive(Debug, Default, Clone)]
struct PartialOptions {
    allow: Option<Vec<IpNet>>,
    deny: Option<Vec<IpNet>>,
    upstream_allow: Option<Vec<IpNet>>,
    max_connections: Option<usize>,
    connect_timeout: Option<Duration>,
    connect_attempts: Option<usize>,
    idle_timeout: Option<Duration>,
    half_close_timeout: Option<Duration>,
    hello_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    source: Option<Source>,
    transparent: Option<bool>,
    mode: Option<Mode>,
    pipe_size: Option<usize>,
    buffer_size: Option<usize>,
    bulk_low_water: Option<usize>,
    /// With where it was written, for the error of a route that lacks `accept_proxy_from`.
    accept_proxy: Option<(Accept, Range<usize>)>,
    accept_proxy_from: Option<Vec<IpNet>>,
    proxy_timeout: Option<Duration>,
    send_proxy: Option<ProxyVersion>,
    require_splice: Option<bool>,
    nodelay: Option<bool>,
    keepalive: Option<Option<Duration>>,
    congestion: Option<String>,
    resolve_cache_ttl: Option<Duration>,
    resolver: Option<(ResolverChoice, At)>,
    rate_limit: Option<RateLimit>,
    client_rate_limit: Option<RateLimit>,
    route_rate_limit: Option<RateLimit>,
    max_connections_per_client: Option<usize>,
    udp_idle_timeout: Option<Duration>,
    max_sessions: Option<usize>,
    max_sessions_per_client: Option<usize>,
    udp_responses: Option<u32>,
}

impl PartialOptions {
    /// These options, with `defaults` filling the keys not set.
    fn or(self, defaults: &PartialOptions) -> PartialOptions {
        let d = defaults.clone();
        PartialOptions {
            allow: self.allow.or(d.allow),
            deny: self.deny.or(d.deny),
            upstream_allow: self.upstream_allow.or(d.upstream_allow),
            max_connections: self.max_connections.or(d.max_connections),
            connect_timeout: self.connect_timeout.or(d.connect_timeout),
            connect_attempts: self.connect_attempts.or(d.connect_attempts),
            idle_timeout: self.idle_timeout.or(d.idle_timeout),
            half_close_timeout: self.half_close_timeout.or(d.half_close_timeout),
            hello_timeout: self.hello_timeout.or(d.hello_timeout),
            request_timeout: self.request_timeout.or(d.request_timeout),
            source: self.source.or(d.source),
            transparent: self.transparent.or(d.transparent),
            mode: self.mode.or(d.mode),
            pipe_size: self.pipe_size.or(d.pipe_size),
            buffer_size: self.buffer_size.or(d.buffer_size),
            bulk_low_water: self.bulk_low_water.or(d.bulk_low_water),
            accept_proxy: self.accept_proxy.or(d.accept_proxy),
            accept_proxy_from: self.accept_proxy_from.or(d.accept_proxy_from),
            proxy_timeout: self.proxy_timeout.or(d.proxy_timeout),
            send_proxy: self.send_proxy.or(d.send_proxy),
            require_splice: self.require_splice.or(d.require_splice),
            nodelay: self.nodelay.or(d.nodelay),
            keepalive: self.keepalive.or(d.keepalive),
            congestion: self.congestion.or(d.congestion),
            resolve_cache_ttl: self.resolve_cache_ttl.or(d.resolve_cache_ttl),
            resolver: self.resolver.or(d.resolver),
            rate_limit: self.rate_limit.or(d.rate_limit),
            client_rate_limit: self.client_rate_limit.or(d.client_rate_limit),
            route_rate_limit: self.route_rate_limit.or(d.route_rate_limit),
            max_connections_per_client: self
                .max_connections_per_client
                .or(d.max_connections_per_client),
            udp_idle_timeout: self.udp_idle_timeout.or(d.udp_idle_timeout),
            max_sessions: self.max_sessions.or(d.max_sessions),
            max_sessions_per_client: self.max_sessions_per_client.or(d.max_sessions_per_client),
            udp_responses: self.udp_responses.or(d.udp_responses),
        }
    }

    /// The engine's UDP session options, with its defaults for keys set nowhere.
    fn udp_options(&self) -> UdpOptions {
        let mut o = UdpOptions::default();
        o.idle_timeout = self.udp_idle_timeout.unwrap_or(o.idle_timeout);
        o.max_sessions = self.max_sessions.or(o.max_sessions);
        o.max_sessions_per_client = self.max_sessions_per_client.or(o.max_sessions_per_client);
        o.responses = self.udp_responses.or(o.responses);
        o
    }

    /// The engine's connection options, with its defaults for keys set nowhere.
    fn connection_options(&self) -> ConnectionOptions {
        let mut o = ConnectionOptions::default();
        o.mode = self.mode.unwrap_or(o.mode);
        o.pipe_size = self.pipe_size.unwrap_or(o.pipe_size);
        o.copy_buffer_size = self.buffer_size.unwrap_or(o.copy_buffer_size);
        o.bulk_low_water = self.bulk_low_water.unwrap_or(o.bulk_low_water);
        o.require_splice = self.require_splice.unwrap_or(o.require_splice);
        o.connect_timeout = self.connect_timeout.unwrap_or(o.connect_timeout);
        o.connect_attempts = self.connect_attempts.unwrap_or(o.connect_attempts);
        o.idle_timeout = self.idle_timeout.unwrap_or(o.idle_timeout);
        o.half_close_timeout = self.half_close_timeout.unwrap_or(o.half_close_timeout);
        o.nodelay = self.nodelay.unwrap_or(o.nodelay);
        o.keepalive = self.keepalive.unwrap_or(o.keepalive);
        o.congestion = self.congestion.clone().or(o.congestion);
        o.resolve_cache_ttl = self.resolve_cache_ttl.unwrap_or(o.resolve_cache_ttl);
        o.accept_proxy = self
            .accept_proxy
            .as_ref()
            .map(|(a, _)| *a)
            .or(o.accept_proxy);
        o.proxy_timeout = self.proxy_timeout.unwrap_or(o.proxy_timeout);
        o.send_proxy = self.send_proxy.or(o.send_proxy);
        o.source = self.source.unwrap_or(o.source);
        o.transparent = self.transparent.unwrap_or(o.transparent);
        o.rate_limit = self.rate_limit.or(o.rate_limit);
        o.client_rate_limit = self.client_rate_limit.or(o.client_rate_limit);
        o.route_rate_limit = self.route_rate_limit.or(o.route_rate_limit);
        o
    }
}

/// Names the key being checked: `metrics`, `defaults.idle_timeout`, `route "s3": allow`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope<'a> {
    Global,
    Defaults,
    Route(&'a str),
}

impl Scope<'_> {
    pub(super) fn key(self, key: &str) -> String {
        match self {
            Scope::Global => key.to_string(),
            Scope::Defaults => format!("defaults.{key}"),
            Scope::Route(name) => format!("route {name:?}: {key}"),
        }
    }
}

pub(super) struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Checker<'_> {
    fn at(&self, span: Range<usize>, context: String) -> At {
        let (line, column) = line_column(self.text, span.start);
        At {
            line,
            column,
            context,
        }
    }

    pub(super) fn error(
        &self,
        span: Range<usize>,
        context: String,
        message: impl Into<String>,
    ) -> ConfigError {
        let at = self.at(span, context);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: at.line,
            column: at.column,
            context: at.context,
            message: message.into(),
        }
    }

    /// An error of toml itself (syntax, unknown key, wrong type), with the key found from the
    /// parsed document when there is one.
    fn toml_error(
        &self,
        error: &toml::de::Error,
        document: Option<&toml::de::DeTable<'_>>,
    ) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        let place = document
            .map(|d| place_of(d, span.start))
            .unwrap_or_default();
        let context = match (&place.route, &place.key) {
            (Some(route), Some(key)) => format!("route {route}: {key}"),
            (Some(route), None) => format!("route {route}"),
            (None, Some(key)) => key.clone(),
            (None, None) => String::new(),
        };
        let message = error.message().trim_end();
        let message = hints::explain(message, &place).unwrap_or_else(|| message.to_string());
        self.error(span, context, message)
    }

    fn config(&self, raw: RawConfig) -> Result<Settings> {
        let scope = Scope::Global;
        let threads = match raw.threads {
            Some(t) if *t.get_ref() > MAX_THREADS => {
                return Err(self.error(
                    t.span(),
                    scope.key("threads"),
                    format!(
                        "{} threads is too many (at most {MAX_THREADS})",
                        t.get_ref()
                    ),
                ));
            }
            Some(t) if *t.get_ref() > 0 => Some(*t.get_ref()),
            _ => None,
        };
        let user = self.account(raw.user, Account::User)?;
        let group = self.account(raw.group, Account::Group)?;
        let log_level = match raw.log_level {
            None => LogLevel::Info,
            Some(level) => LogLevel::ALL
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(level.get_ref()))
                .map(|(_, l)| *l)
                .ok_or_else(|| {
                    self.error(
                        level.span(),
                        scope.key("log_level"),
                        format!(
                            "unknown log level {:?} (expected error, warn, notice, info, debug \
                             or trace)",
                            level.get_ref()
                        ),
                    )
                })?,
        };
        let log_format = match raw.log_format {
            None => LogFormat::Text,
            Some(f) => LogFormat::from_name(f.get_ref()).ok_or_else(|| {
                self.error(
                    f.span(),
                    scope.key("log_format"),
                    format!(
                        "unknown log format {:?} (expected \"text\" or \"json\")",
                        f.get_ref()
                    ),
                )
            })?,
        };
        let metrics = match &raw.metrics {
            None => None,
            Some(m) => Some(
                parse_listen_addr(m.get_ref())
                    .map_err(|e| self.error(m.span(), scope.key("metrics"), e.to_string()))?,
            ),
        };
        let control_socket = match &raw.control_socket {
            None => None,
            Some(c) => Some(
                control_socket_path(c.get_ref())
                    .map_err(|e| self.error(c.span(), scope.key("control_socket"), e))?,
            ),
        };
        let max_connections = self.limit(raw.max_connections.as_ref(), scope, "max_connections")?;
        let drain_timeout = match &raw.drain_timeout {
            None => DEFAULT_DRAIN_TIMEOUT,
            Some(d) => self.duration(d, scope.key("drain_timeout"), true)?,
        };
        let drain_delay = match &raw.drain_delay {
            None => Duration::ZERO,
            Some(d) => self.duration(d, scope.key("drain_delay"), true)?,
        };
        let mut pool_limits = PoolLimits::default();
        if let Some(n) = &raw.pool_idle_pipes {
            pool_limits.max_idle_pipes = *n.get_ref();
        }
        if let Some(budget) = &raw.pipe_budget {
            pool_limits.pipe_budget_bytes = self.size(budget, scope.key("pipe_budget"))?;
        }
        let defaults = match &raw.defaults {
            None => PartialOptions::default(),
            Some(d) => self.options(&d.options(), Scope::Defaults)?,
        };
        if raw.route.is_empty() {
            return Err(self.error(
                0..0,
                "route".into(),
                "no [[route]] table: give at least one route",
            ));
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut seen = Seen::default();
        for raw_route in &raw.route {
            let spec = self.route(raw_route, &defaults, &mut seen)?;
            let name = raw_route.get_ref().name.clone();
            if names.insert(name.get_ref().clone(), ()).is_some() {
                return Err(self.error(
                    name.span(),
                    format!("route {:?}: name", name.get_ref()),
                    "another route has this name already",
                ));
            }
            routes.push(spec);
        }
        if let (Some(addr), Some(raw_metrics)) = (metrics, &raw.metrics)
            && let Some(listener) = seen
                .listeners
                .iter()
                .find(|l| !l.udp && metrics_overlap(addr, l.addr))
        {
            return Err(self.error(
                raw_metrics.span(),
                scope.key("metrics"),
                format!(
                    "{addr} cannot be bound next to {} where route {:?} listens: give the \
                     metrics endpoint a port of its own",
                    listener.addr, seen.names[listener.route]
                ),
            ));
        }
        self.loops(&seen)?;
        Ok(Settings {
            threads,
            user,
            group,
            log_level,
            log_format,
            metrics,
            control_socket,
            max_connections,
            drain_timeout,
            drain_delay,
            pool_limits,
            routes,
        })
    }

    /// `user` or `group`: a name or a numeric id, looked up as `run` will look it up when it
    /// drops privileges, so that one that does not exist fails here, with its place.
    fn account(&self, value: Option<Spanned<String>>, kind: Account) -> Result<Option<String>> {
        let Some(v) = value else { return Ok(None) };
        let key = kind.key();
        let name = v.get_ref();
        if name.trim().is_empty() {
            return Err(self.error(v.span(), key.to_string(), "must not be empty"));
        }
        let found = match (kind, name.parse::<u32>()) {
            (Account::User, Ok(id)) => nix::unistd::User::from_uid(id.into()).map(|u| u.is_some()),
            (Account::User, Err(_)) => nix::unistd::User::from_name(name).map(|u| u.is_some()),
            (Account::Group, Ok(id)) => {
                nix::unistd::Group::from_gid(id.into()).map(|g| g.is_some())
            }
            (Account::Group, Err(_)) => nix::unistd::Group::from_name(name).map(|g| g.is_some()),
        };
        match found {
            Ok(true) => Ok(Some(v.into_inner())),
            Ok(false) => Err(self.error(
                v.span(),
                key.to_string(),
                format!("{key} {name:?} does not exist on this host"),
            )),
            Err(e) => Err(self.error(
                v.span(),
                key.to_string(),
                format!("cannot look up {key} {name:?}: {e}"),
            )),
        }
    }

    /// Refuses routes that relay (by IP literal) in a ring, or to their own listener: see
    /// `across_routes::ring`.
    fn loops(&self, seen: &Seen) -> Result<()> {
        match ring(seen) {
            None => Ok(()),
            Some(problem) => Err(self.error(
                problem.span,
                Scope::Route(problem.route).key(problem.key),
                problem.message,
            )),
        }
    }

    fn limit(
        &self,
        value: Option<&Spanned<usize>>,
        scope: Scope<'_>,
        key: &str,
    ) -> Result<Option<usize>> {
        match value {
            Some(v) if *v.get_ref() == 0 => Err(self.error(
                v.span(),
                scope.key(key),
                "must be at least 1 (leave it out for no limit)",
            )),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    }

    fn route(
        &self,
        raw: &Spanned<RawRoute>,
        defaults: &PartialOptions,
        seen: &mut Seen,
    ) -> Result<RouteSpec> {
        let header = raw.span();
        let raw = raw.get_ref();
        let name = raw.name.get_ref();
        if name.trim().is_empty() {
            return Err(self.error(raw.name.span(), "route: name".into(), "must not be empty"));
        }
        let scope = Scope::Route(name);
        if raw.listen.get_ref().is_empty() {
            return Err(self.error(
                raw.listen.span(),
                scope.key("listen"),
                "give at least one address, e.g. [\"0.0.0.0:443\"]",
            ));
        }
        let protocol = match &raw.protocol {
            None => Protocol::Tcp,
            Some(p) => match p.get_ref().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    return Err(self.error(
                        p.span(),
                        scope.key("protocol"),
                        format!("{other:?} is not a protocol: write \"tcp\" or \"udp\""),
                    ));
                }
            },
        };
        let udp = protocol == Protocol::Udp;
        if udp {
            self.tcp_only_keys(raw, scope)?;
        }
        let index = seen.names.len();
        seen.names.push(name.clone());
        let mut listen = Vec::new();
        for addr in raw.listen.get_ref() {
            let parsed = parse_listen_addr(addr.get_ref())
                .map_err(|e| self.error(addr.span(), scope.key("listen"), e.to_string()))?;
            if let Some(other) = seen
                .listeners
                .iter()
                .find(|l| l.udp == udp && listeners_overlap(l.addr, parsed))
            {
                let owner = if other.route == index {
                    "this route".to_string()
                } else {
                    format!("route {:?}", seen.names[other.route])
                };
                let message = match (other.addr == parsed, other.route == index) {
                    (true, true) => format!("{parsed} is listed twice"),
                    (true, false) => format!("{parsed} is already a listen address of {owner}"),
                    (false, _) => format!(
                        "{parsed} overlaps {} of {owner}: on one port the kernel cannot bind \
                         a wildcard address and another address of the same family (listen \
                         on the wildcard alone, or on specific addresses only)",
                        other.addr
                    ),
                };
                return Err(self.error(addr.span(), scope.key("listen"), message));
            }
            seen.listeners.push(Listener {
                addr: parsed,
                route: index,
                udp,
            });
            listen.push(parsed);
        }

        let own = self.options(&raw.options(), scope)?;
        let options = own.clone().or(defaults);
        let targets = raw
            .upstream
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.upstreams.as_ref().map(Spanned::span));
        // The two values of `upstream` that are not addresses: the client chooses.
        let chosen_by_client = raw.upstream.as_ref().and_then(|u| match u.get_ref() {
            RawUpstream::One(text) if text == ORIGINAL_DESTINATION || text == HTTP_CONNECT => {
                Some(Spanned::new(u.span(), text.clone()))
            }
            _ => None,
        });
        let mut route = match (targets, &raw.sni, &chosen_by_client) {
            (Some(span), Some(_), _) => {
                return Err(self.error(
                    span,
                    scope.key(if raw.upstream.is_some() { "upstream" } else { "upstreams" }),
                    "give either upstream (or [[route.upstreams]]) or [[route.sni]] entries, not both",
                ));
            }
            (None, None, _) => {
                return Err(self.error(
                    header,
                    format!("route {name:?}"),
                    "needs either upstream = \"host:port\" (or a list, or [[route.upstreams]]) \
                     or [[route.sni]] entries",
                ));
            }
            (Some(_), None, Some(upstream)) if upstream.get_ref() == ORIGINAL_DESTINATION => {
                self.not_a_group(raw, scope)?;
                self.only_for_sni(&own, raw, scope)?;
                self.only_for_connect(&own, raw, scope)?;
                Route::with_upstream(name.clone(), spliceway::Upstream::OriginalDestination)
            }
            (Some(_), None, Some(upstream)) => {
                self.not_a_group(raw, scope)?;
                self.only_for_sni(&own, raw, scope)?;
                let Some(list) = &raw.connect_allow else {
                    return Err(self.error(
                        upstream.span(),
                        scope.key("upstream"),
                        "an http-connect route needs connect_allow: the names (with a port) it \
                         may relay to, e.g. connect_allow = [\"*.amazonaws.com:443\"]; without \
                         it every CONNECT would be refused",
                    ));
                };
                if list.get_ref().is_empty() {
                    return Err(self.error(
                        list.span(),
                        scope.key("connect_allow"),
                        "give at least one name with a port, e.g. [\"*.amazonaws.com:443\"]",
                    ));
                }
                let mut patterns = Vec::new();
                for entry in list.get_ref() {
                    patterns.push(ConnectPattern::parse(entry.get_ref().trim()).map_err(|e| {
                        self.error(entry.span(), scope.key("connect_allow"), e.to_string())
                    })?);
                }
                let mut table = ConnectTable::new(patterns);
                if let Some(timeout) = options.request_timeout {
                    table = table.request_timeout(timeout);
                }
                Route::with_upstream(name.clone(), spliceway::Upstream::HttpConnect(table))
            }
            (Some(_), None, None) => {
                self.only_for_connect(&own, raw, scope)?;
                if let (Some(_), Some(raw_timeout)) = (own.hello_timeout, &raw.hello_timeout) {
                    return Err(self.error(
                        raw_timeout.span(),
                        scope.key("hello_timeout"),
                        "only routes with [[route.sni]] entries wait for a TLS ClientHello",
                    ));
                }
                if udp {
                    self.udp_upstream(raw, scope, index)?
                } else {
                    self.upstreams(raw, scope, index, seen)?
                }
            }
            (None, Some(sni), _) => {
                self.only_for_connect(&own, raw, scope)?;
                self.no_group_keys(raw, scope)?;
                if sni.get_ref().is_empty() {
                    return Err(self.error(
                        sni.span(),
                        scope.key("sni"),
                        "give at least one [[route.sni]] entry",
                    ));
                }
                let mut entries = Vec::new();
                for entry in sni.get_ref() {
                    let entry = entry.get_ref();
                    let pattern = NamePattern::parse(entry.pattern.get_ref()).map_err(|e| {
                        self.error(entry.pattern.span(), scope.key("sni.match"), e.to_string())
                    })?;
                    let upstream = match &entry.upstream {
                        None => None,
                        Some(u) => Some(UpstreamAddr::parse(u.get_ref()).map_err(|e| {
                            self.error(u.span(), scope.key("sni.upstream"), e.to_string())
                        })?),
                    };
                    if let (Some(UpstreamAddr::Ip(ip)), Some(u)) = (&upstream, &entry.upstream) {
                        seen.upstreams.push(LiteralUpstream {
                            addr: *ip,
                            route: index,
                            key: "sni.upstream",
                            span: u.span(),
                        });
                    }
                    entries.push(SniEntry::new(pattern, upstream));
                }
                let mut table = SniTable::new(entries);
                if let Some(timeout) = options.hello_timeout {
                    table = table.hello_timeout(timeout);
                }
                Route::sni(name.clone(), table)
            }
        };
        for addr in listen {
            route = route.listen(addr);
        }
        let mut connection_options = options.connection_options();
        if udp {
            // PROXY headers set in [defaults] are for the TCP routes.
            connection_options.accept_proxy = None;
            connection_options.send_proxy = None;
            route = route
                .protocol(Protocol::Udp)
                .udp_options(options.udp_options());
        }
        connection_options
            .validate(name)
            .map_err(|e| self.error(header.clone(), format!("route {name:?}"), e.to_string()))?;
        route = route.options(connection_options).access(AccessList {
            allow: options.allow.clone().unwrap_or_default(),
            deny: options.deny.clone().unwrap_or_default(),
        });
        if let Some(ranges) = &options.upstream_allow {
            route = route.upstream_allow(ranges.clone());
        }
        if udp && route.upstream().client_chooses() {
            let upstream = raw.upstream.as_ref().map_or(header.clone(), Spanned::span);
            return Err(self.error(
                upstream,
                scope.key("upstream"),
                format!(
                    "a route with protocol = \"udp\" relays to one fixed upstream, not to {}",
                    route.upstream()
                ),
            ));
        }
        if route.upstream().client_chooses() && options.upstream_allow.is_none() {
            let upstream = raw.upstream.as_ref().map_or(header.clone(), Spanned::span);
            return Err(self.error(
                upstream,
                scope.key("upstream"),
                format!(
                    "a route relaying to {} needs upstream_allow: the ranges it may reach (e.g. \
                     the S3 prefix list's, [\"52.219.0.0/16\", \"3.5.0.0/16\"]); without it the \
                     relay would be an open relay",
                    route.upstream()
                ),
            ));
        }
        if options.transparent == Some(true)
            && !matches!(route.upstream(), spliceway::Upstream::OriginalDestination)
        {
            let span = raw
                .transparent
                .as_ref()
                .map_or(header.clone(), Spanned::span);
            return Err(self.error(
                span,
                scope.key("transparent"),
                "transparent listeners (TPROXY) are for routes with upstream = \
                 \"original-destination\"",
            ));
        }
        if !udp {
            route = self.proxy_peers(route, raw, &own, &options, scope)?;
        }
        if let Some(limit) = options.max_connections {
            route = route.max_connections(limit);
        }
        if let Some(limit) = options.max_connections_per_client {
            route = route.max_connections_per_client(limit);
        }
        let (resolver, resolver_at) = match options.resolver {
            Some((choice, at)) => (choice, Some(at)),
            None => (ResolverChoice::System, None),
        };
        Ok(RouteSpec {
            route,
            resolver,
            resolver_at,
        })
    }

    /// `hello_timeout` on a route without SNI entries: a mistake.
    fn only_for_sni(&self, own: &PartialOptions, raw: &RawRoute, scope: Scope<'_>) -> Result<()> {
        if let (Some(_), Some(raw_timeout)) = (own.hello_timeout, &raw.hello_timeout) {
            return Err(self.error(
                raw_timeout.span(),
                scope.key("hello_timeout"),
                "only routes with [[route.sni]] entries wait for a TLS ClientHello",
            ));
        }
        Ok(())
    }

    /// `connect_allow` or `request_timeout` on a route that is not `http-connect`: a mistake.
    fn only_for_connect(
        &self,
        own: &PartialOptions,
        raw: &RawRoute,
        scope: Scope<'_>,
    ) -> Result<()> {
        if let Some(list) = &raw.connect_allow {
            return Err(self.error(
                list.span(),
                scope.key("connect_allow"),
                "only routes with upstream = \"http-connect\" answer CONNECT requests",
            ));
        }
        if let (Some(_), Some(raw_timeout)) = (own.request_timeout, &raw.request_timeout) {
            return Err(self.error(
                raw_timeout.span(),
                scope.key("request_timeout"),
                "only routes with upstream = \"http-connect\" wait for a CONNECT request",
            ));
        }
        Ok(())
    }

    /// Keys of a route's own table that mean nothing to a UDP route: an error at the key.
    fn tcp_only_keys(&self, raw: &RawRoute, scope: Scope<'_>) -> Result<()> {
        let span = |v: Option<std::ops::Range<usize>>, key: &'static str| v.map(|s| (s, key));
        macro_rules! first_set {
            ($($key:ident),* $(,)?) => {
                None$(.or(span(raw.$key.as_ref().map(|v| v.span()), stringify!($key))))*
            };
        }
        // Written on a UDP route itself (in [defaults] they are for the TCP routes), these
        // would be silently without effect: refused, with what to write instead.
        let found: Option<(std::ops::Range<usize>, &str)> = first_set!(
            sni,
            accept_proxy,
            accept_proxy_from,
            send_proxy,
            proxy_timeout,
            hello_timeout,
            request_timeout,
            max_connections,
            max_connections_per_client,
            connect_timeout,
            connect_attempts,
            idle_timeout,
            half_close_timeout,
            source,
            transparent,
            mode,
            pipe_size,
            buffer_size,
            bulk_low_water,
            require_splice,
            nodelay,
            keepalive,
            congestion,
            rate_limit,
            client_rate_limit,
            route_rate_limit,
        );
        let Some((at, key)) = found else {
            return Ok(());
        };
        let instead = match key {
            "idle_timeout" => " (a UDP session's is udp_idle_timeout)",
            "max_connections" => " (a UDP route's sessions are bounded by max_sessions)",
            "max_connections_per_client" => {
                " (a UDP route's sessions per client address: max_sessions_per_client)"
            }
            "rate_limit" | "client_rate_limit" | "route_rate_limit" => {
                " (UDP routes have no rate limits: max_sessions_per_client bounds a client)"
            }
            "sni" | "accept_proxy" | "accept_proxy_from" | "send_proxy" | "proxy_timeout"
            | "hello_timeout" => {
                ": a route with protocol = \"udp\" relays datagrams, without TLS server names \
                 or PROXY protocol headers"
            }
            _ => "",
        };
        Err(self.error(at, scope.key(key), format!("is for TCP routes{instead}")))
    }

    /// `accept_proxy_from` on `route`: required with `accept_proxy` (a header believed from
    /// anyone lets every client choose its address), pointless without it.
    fn proxy_peers(
        &self,
        route: Route,
        raw: &RawRoute,
        own: &PartialOptions,
        options: &PartialOptions,
        scope: Scope<'_>,
    ) -> Result<Route> {
        match (&options.accept_proxy, &options.accept_proxy_from) {
            (Some((_, span)), None) => Err(self.error(
                span.clone(),
                match own.accept_proxy {
                    Some(_) => scope.key("accept_proxy"),
                    None => format!("{} (from [defaults])", scope.key("accept_proxy")),
                },
                "accept_proxy needs accept_proxy_from: the addresses of the load balancers \
                 allowed to send PROXY headers (e.g. accept_proxy_from = [\"10.0.0.0/8\"]); \
                 without it any client could claim any address. To believe anyone, write \
                 accept_proxy_from = [\"0.0.0.0/0\", \"::/0\"]",
            )),
            (Some(_), Some(peers)) => Ok(route.accept_proxy_from(peers.clone())),
            (None, Some(_)) => match (&own.accept_proxy_from, &raw.accept_proxy_from) {
                // Set on the route itself: a mistake. Inherited from [defaults]: for the
                // routes that accept PROXY headers only.
                (Some(_), Some(list)) => Err(self.error(
                    list.span(),
                    scope.key("accept_proxy_from"),
                    "has no effect without accept_proxy (\"v1\", \"v2\" or \"any\")",
                )),
                _ => Ok(route),
            },
            (None, None) => Ok(route),
        }
    }

    fn options(&self, raw: &RawOptions, scope: Scope<'_>) -> Result<PartialOptions> {
        let duration = |v: &Option<Spanned<Scalar>>, key: &str| -> Result<Option<Duration>> {
            v.as_ref()
                .map(|v| self.duration(v, scope.key(key), false))
                .transpose()
        };
        let size = |v: &Option<Spanned<Scalar>>, key: &str| -> Result<Option<usize>> {
            v.as_ref().map(|v| self.size(v, scope.key(key))).transpose()
        };
        let nets =
            |v: &Option<Spanned<Vec<Spanned<String>>>>, key: &str| -> Result<Option<Vec<IpNet>>> {
                v.as_ref().map(|v| self.nets(v, scope.key(key))).transpose()
            };
        let connect_attempts = match &raw.connect_attempts {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.error(
                    n.span(),
                    scope.key("connect_attempts"),
                    "must be at least 1",
                ));
            }
            other => other.as_ref().map(|n| *n.get_ref()),
        };
        let mode = match &raw.mode {
            None => None,
            Some(m) => Some(
                m.get_ref()
                    .parse::<Mode>()
                    .map_err(|e| self.error(m.span(), scope.key("mode"), e.to_string()))?,
            ),
        };
        let keepalive = match &raw.keepalive {
            None => None,
            Some(k) => Some(match k.get_ref() {
                Scalar::Bool(false) => None,
                Scalar::Bool(true) => {
                    return Err(self.error(
                        k.span(),
                        scope.key("keepalive"),
                        "keepalive = true needs a time: write e.g. keepalive = \"60s\" (or false)",
                    ));
                }
                _ => {
                    let idle = self.duration(k, scope.key("keepalive"), false)?;
                    check_keepalive(idle)
                        .map_err(|e| self.error(k.span(), scope.key("keepalive"), e.to_string()))?;
                    Some(idle)
                }
            }),
        };
        let congestion = match &raw.congestion {
            None => None,
            Some(c) => {
                check_congestion(c.get_ref())
                    .map_err(|e| self.error(c.span(), scope.key("congestion"), e.to_string()))?;
                Some(c.get_ref().clone())
            }
        };
        let resolve_cache_ttl = raw
            .resolve_cache_ttl
            .as_ref()
            .map(|v| self.duration(v, scope.key("resolve_cache_ttl"), true))
            .transpose()?;
        let resolver = match &raw.resolver {
            None => None,
            Some(r) => Some((
                self.resolver(r, scope.key("resolver"))?,
                self.at(r.span(), scope.key("resolver")),
            )),
        };
        Ok(PartialOptions {
            allow: nets(&raw.allow, "allow")?,
            deny: nets(&raw.deny, "deny")?,
            upstream_allow: nets(&raw.upstream_allow, "upstream_allow")?,
            max_connections: self.limit(raw.max_connections.as_ref(), scope, "max_connections")?,
            connect_timeout: duration(&raw.connect_timeout, "connect_timeout")?,
            connect_attempts,
            idle_timeout: duration(&raw.idle_timeout, "idle_timeout")?,
            half_close_timeout: duration(&raw.half_close_timeout, "half_close_timeout")?,
            hello_timeout: duration(&raw.hello_timeout, "hello_timeout")?,
            request_timeout: duration(&raw.request_timeout, "request_timeout")?,
            source: match &raw.source {
                None => None,
                Some(v) => Some(
                    v.get_ref()
                        .parse::<Source>()
                        .map_err(|e| self.error(v.span(), scope.key("source"), e.to_string()))?,
                ),
            },
            transparent: raw.transparent.as_ref().map(|b| *b.get_ref()),
            mode,
            pipe_size: size(&raw.pipe_size, "pipe_size")?,
            buffer_size: size(&raw.buffer_size, "buffer_size")?,
            bulk_low_water: match &raw.bulk_low_water {
                None => None,
                // `false` or 0: off.
                Some(v) if matches!(v.get_ref(), Scalar::Bool(false) | Scalar::Int(0)) => Some(0),
                Some(v) => Some(self.size(v, scope.key("bulk_low_water"))?),
            },
            accept_proxy: match &raw.accept_proxy {
                None => None,
                Some(v) => Some((
                    v.get_ref()
                        .parse::<Accept>()
                        .map_err(|e| self.error(v.span(), scope.key("accept_proxy"), e))?,
                    v.span(),
                )),
            },
            accept_proxy_from: match &raw.accept_proxy_from {
                Some(list) if list.get_ref().is_empty() => {
                    return Err(self.error(
                        list.span(),
                        scope.key("accept_proxy_from"),
                        "give at least one CIDR: the load balancers allowed to send PROXY \
                         headers (e.g. [\"10.0.0.0/8\"])",
                    ));
                }
                other => nets(other, "accept_proxy_from")?,
            },
            proxy_timeout: duration(&raw.proxy_timeout, "proxy_timeout")?,
            send_proxy: match &raw.send_proxy {
                None => None,
                Some(v) => Some(
                    v.get_ref()
                        .parse::<ProxyVersion>()
                        .map_err(|e| self.error(v.span(), scope.key("send_proxy"), e))?,
                ),
            },
            require_splice: raw.require_splice.as_ref().map(|b| *b.get_ref()),
            nodelay: raw.nodelay.as_ref().map(|b| *b.get_ref()),
            keepalive,
            congestion,
            resolve_cache_ttl,
            resolver,
            rate_limit: self.rate_limit(raw.rate_limit.as_ref(), scope.key("rate_limit"))?,
            client_rate_limit: self.rate_limit(
                raw.client_rate_limit.as_ref(),
                scope.key("client_rate_limit"),
            )?,
            route_rate_limit: self
                .rate_limit(raw.route_rate_limit.as_ref(), scope.key("route_rate_limit"))?,
            max_connections_per_client: self.limit(
                raw.max_connections_per_client.as_ref(),
                scope,
                "max_connections_per_client",
            )?,
            udp_idle_timeout: duration(&raw.udp_idle_timeout, "udp_idle_timeout")?,
            max_sessions: self.limit(raw.max_sessions.as_ref(), scope, "max_sessions")?,
            max_sessions_per_client: self.limit(
                raw.max_sessions_per_client.as_ref(),
                scope,
                "max_sessions_per_client",
            )?,
            udp_responses: match &raw.udp_responses {
                Some(v) if !(0..=i64::from(MAX_UDP_RESPONSES)).contains(v.get_ref()) => {
                    return Err(self.error(
                        v.span(),
                        scope.key("udp_responses"),
                        format!(
                            "must be from 0 (no answer expected) to {MAX_UDP_RESPONSES}, not {}",
                            v.get_ref()
                        ),
                    ));
                }
                Some(v) => Some(*v.get_ref() as u32),
                None => None,
            },
        })
    }

    pub(super) fn duration(
        &self,
        value: &Spanned<Scalar>,
        context: String,
        zero_ok: bool,
    ) -> Result<Duration> {
        let fail = |message: String| Err(self.error(value.span(), context.clone(), message));
        match value.get_ref() {
            Scalar::Str(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if d.is_zero() && !zero_ok => fail("must be more than zero".into()),
                Ok(d) if d > MAX_TIMEOUT => fail(format!(
                    "{text:?} is longer than the longest time accepted, {}",
                    humantime::format_duration(MAX_TIMEOUT)
                )),
                Ok(d) => Ok(d),
                Err(e) => fail(format!(
                    "invalid duration {text:?}: {e} (write e.g. \"500ms\", \"10s\", \"5m\")"
                )),
            },
            Scalar::Int(n) => fail(format!("{n} has no unit: write e.g. \"{n}s\"")),
            Scalar::Bool(b) => fail(format!("expected a duration such as \"10s\", not {b}")),
        }
    }

    fn size(&self, value: &Spanned<Scalar>, context: String) -> Result<usize> {
        let fail = |message: String| Err(self.error(value.span(), context.clone(), message));
        let bytes = match value.get_ref() {
            Scalar::Int(n) => u64::try_from(*n).unwrap_or(0),
            Scalar::Str(text) => match crate::parse_size(text) {
                Ok(bytes) => bytes,
                Err(e) => return fail(format!("invalid size {text:?}: {e}")),
            },
            Scalar::Bool(b) => return fail(format!("expected a size such as \"256KiB\", not {b}")),
        };
        if bytes == 0 || bytes > MAX_SIZE_BYTES {
            return fail(format!(
                "{value} is out of range (1 byte to 1 GiB)",
                value = value.get_ref()
            ));
        }
        Ok(bytes as usize)
    }

    fn nets(&self, list: &Spanned<Vec<Spanned<String>>>, context: String) -> Result<Vec<IpNet>> {
        list.get_ref()
            .iter()
            .map(|item| {
                let text = item.get_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|e| text.parse::<IpAddr>().map(IpNet::from).map_err(|_| e))
                    .map_err(|e| {
                        self.error(
                            item.span(),
                            context.clone(),
                            format!("invalid CIDR {text:?}: {e}"),
                        )
                    })
            })
            .collect()
    }

    fn resolver(&self, value: &Spanned<RawResolver>, context: String) -> Result<ResolverChoice> {
        let choice = match value.get_ref() {
            RawResolver::Named(name) if name == "system" => return Ok(ResolverChoice::System),
            RawResolver::Named(name) if name == "dns" => ResolverChoice::Dns {
                servers: Vec::new(),
            },
            RawResolver::Named(other) => {
                return Err(self.error(
                    value.span(),
                    context,
                    format!(
                        "unknown resolver {other:?} (expected \"system\", \"dns\" or \
                         {{ servers = [\"10.0.0.2:53\"] }})"
                    ),
                ));
            }
            RawResolver::Servers(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.error(
                        list.span(),
                        format!("{context}.servers"),
                        "give at least one server, e.g. [\"10.0.0.2:53\"]",
                    ));
                }
                let mut servers = Vec::new();
                for server in list.get_ref() {
                    let text = server.get_ref().trim();
                    let addr = text
                        .parse::<SocketAddr>()
                        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| {
                            self.error(
                                server.span(),
                                format!("{context}.servers"),
                                format!(
                                    "invalid DNS server {text:?}: expected an IP address with an \
                                     optional port, e.g. \"10.0.0.2\" or \"[fd00::2]:53\""
                                ),
                            )
                        })?;
                    servers.push(addr);
                }
                ResolverChoice::Dns { servers }
            }
        };
        if cfg!(feature = "dns") {
            Ok(choice)
        } else {
            Err(self.error(
                value.span(),
                context,
                "this build of spliceway has no DNS client (cargo feature `dns`)",
            ))
        }
    }
}

/// `user` or `group`.
#[derive(Debug, Clone, Copy)]
enum Account {
    User,
    Group,
}

impl Account {
    fn key(self) -> &'static str {
        match self {
            Account::User => "user",
            Account::Group => "group",
        }
    }
}

/// Longest path a unix socket address holds (`sun_path` is 108 bytes, one for the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `control_socket`: an absolute path that fits in a unix socket address. A relative one
/// would depend on the directory `run` is started from, and the process an upgrade starts
/// must find the same file.
pub fn control_socket_path(text: &str) -> std::result::Result<std::path::PathBuf, String> {
    if text.is_empty() {
        return Err("empty path (leave the key out for no control socket)".into());
    }
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} is not an absolute path (e.g. \"/run/spliceway/control.sock\")"
        ));
    }
    if text.ends_with('/') {
        return Err(format!("{text:?} names a directory, not a socket file"));
    }
    if text.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    if text.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{text:?} is {} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH}",
            text.len()
        ));
    }
    Ok(std::path::PathBuf::from(text))
}
