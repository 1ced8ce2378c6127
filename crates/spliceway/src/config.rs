//! The configuration file of `spliceway run` (TOML), read into routes and relay settings.
//!
//! ```toml
//! metrics = "127.0.0.1:9898"
//!
//! [[route]]
//! name = "s3"
//! listen = ["0.0.0.0:443", "[::]:443"]
//! upstream = "s3-ap-northeast-1.amazonaws.com:443"
//! allow = ["10.0.0.0/8"]
//! ```
//!
//! Reading is strict: an unknown key, a value of the wrong type, an address, network, server
//! name pattern, size or duration that does not parse, a route with both or neither of
//! `upstream` and `[[route.sni]]` — each is a [`ConfigError`] naming the file, the line and
//! column, the route and the key, for example
//! `spliceway.toml:7:10: route "s3": allow: invalid CIDR "10.0.0.0/33": invalid IP address syntax`.
//!
//! `packaging/spliceway.toml` in the repository documents every key.

mod location;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::PoolLimits;
use crate::relay::{Relay, RelayBuilder};
use crate::route::{Resolution, Route, Upstream};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// Something in the file is wrong; `line` and `column` (1-based) point at it.
    #[error("{}:{line}:{column}: {}{message}", path.display(), context_prefix(context))]
    Invalid {
        /// The file, as given.
        path: PathBuf,
        /// Line of the offending key or value.
        line: usize,
        /// Column (in characters) of the offending key or value.
        column: usize,
        /// Which route and key, e.g. `route "s3": allow` (empty for syntax errors).
        context: String,
        /// What is wrong, in words meant for the user.
        message: String,
    },
}

fn context_prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

impl ConfigError {
    /// Line and column (1-based) of the error, if it has a place in the file.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            ConfigError::Read { .. } => None,
        }
    }
}

/// How much the relay logs. The names are those of the `-v`/`-q` ladder of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, reload and shutdown messages and warnings; no line per connection.
    Notice,
    /// Also one line per closed connection (target `spliceway::conn`), as `stone -d` did.
    Info,
    /// Also each accepted connection, with its peer and the chosen upstream address.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Every level, least detail first, with its name in the file.
    pub const ALL: [(&'static str, LogLevel); 6] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("notice", LogLevel::Notice),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];

    /// The name used in the file.
    pub fn name(self) -> &'static str {
        LogLevel::ALL
            .iter()
            .find(|(_, l)| *l == self)
            .map_or("info", |(n, _)| n)
    }
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How a route resolves upstream host names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ResolverChoice {
    /// `getaddrinfo`: `/etc/hosts`, then DNS as nsswitch says (the default).
    #[default]
    System,
    /// Ask DNS servers directly, bypassing `/etc/hosts`, honouring record TTLs: the given
    /// servers, or those of `/etc/resolv.conf` when the list is empty (`resolver = "dns"`).
    Dns {
        /// `ip:port` of each server; empty for `/etc/resolv.conf`.
        servers: Vec<SocketAddr>,
    },
}

impl fmt::Display for ResolverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverChoice::System => f.write_str("system"),
            ResolverChoice::Dns { servers } if servers.is_empty() => {
                f.write_str("dns (servers of /etc/resolv.conf, /etc/hosts ignored)")
            }
            ResolverChoice::Dns { servers } => {
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                write!(f, "dns ({}, /etc/hosts ignored)", list.join(", "))
            }
        }
    }
}

/// A place in the file, kept for errors found after reading (building a DNS resolver).
#[derive(Debug, Clone, PartialEq, Eq)]
struct At {
    line: usize,
    column: usize,
    context: String,
}

/// One route as read, before its resolver is built.
#[derive(Debug, Clone)]
struct RouteSpec {
    route: Route,
    resolver: ResolverChoice,
    resolver_at: Option<At>,
}

/// DNS resolvers built for routes, kept across reloads so that an unchanged route keeps its
/// resolver (and its cached answers) and counts as unchanged.
#[derive(Debug, Default)]
pub struct ResolverCache {
    #[cfg_attr(not(feature = "dns"), allow(dead_code))] // only DNS resolvers are cached
    resolvers: HashMap<Vec<SocketAddr>, Resolution>,
}

/// A configuration file, read and checked.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    /// The text it was read from, kept for [`Config::recheck`].
    text: Arc<str>,
    threads: Option<usize>,
    user: Option<String>,
    group: Option<String>,
    log_level: LogLevel,
    log_format: LogFormat,
    metrics: Option<SocketAddr>,
    max_connections: Option<usize>,
    drain_timeout: Duration,
    pool_limits: PoolLimits,
    routes: Vec<RouteSpec>,
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if it cannot be read, [`ConfigError::Invalid`] for anything wrong
    /// inside it.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_str(&text, path)
    }

    /// Reads and checks `text`; `path` is only used in messages.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for anything wrong in it.
    #[allow(clippy::should_implement_trait)] // it takes a path for messages, unlike FromStr
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::read(text, path)
    }

    /// Checks the same text again with the process's current privileges, and returns the
    /// first located error. Some checks depend on who runs them: after dropping root, a
    /// `congestion` outside `net.ipv4.tcp_allowed_congestion_control` can no longer be set,
    /// and a relay that went on would quietly run every connection on the system default.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`], located as at the first reading.
    pub fn recheck(&self) -> Result<(), ConfigError> {
        validate::read(&self.text, &self.path).map(drop)
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Worker threads; `None` means one per CPU.
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }

    /// The user to switch to after binding the listening sockets.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The group to switch to after binding the listening sockets.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The log level (default [`LogLevel::Info`]: one line per closed connection).
    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }

    /// The log format.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The relay-wide connection limit.
    pub fn max_connections(&self) -> Option<usize> {
        self.max_connections
    }

    /// How long a graceful shutdown waits for open connections.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Each worker's pipe pool: idle pipes kept (`pool_idle_pipes`) and the pipe budget
    /// (`pipe_budget`).
    pub fn pool_limits(&self) -> PoolLimits {
        self.pool_limits
    }

    /// The sum of the routes' connection limits, or the global one if lower; `None` if some
    /// route is unlimited and there is no global limit.
    pub fn connection_capacity(&self) -> Option<usize> {
        let per_route: Option<usize> = self.routes.iter().map(|r| r.route.connection_limit()).sum();
        match (per_route, self.max_connections) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The routes, with their resolvers built.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if a DNS resolver cannot be set up (for example
    /// `resolver = "dns"` and `/etc/resolv.conf` lists no server).
    pub fn routes(&self) -> Result<Vec<Route>, ConfigError> {
        self.routes_with(&mut ResolverCache::default())
    }

    /// As [`Config::routes`], reusing (and adding to) resolvers built before.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn routes_with(&self, cache: &mut ResolverCache) -> Result<Vec<Route>, ConfigError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        for spec in &self.routes {
            let route = match &spec.resolver {
                ResolverChoice::System => spec.route.clone(),
                ResolverChoice::Dns { servers } => {
                    let resolution = self.dns_resolution(servers, cache).map_err(|message| {
                        let at = spec.resolver_at.clone().unwrap_or(At {
                            line: 1,
                            column: 1,
                            context: String::new(),
                        });
                        ConfigError::Invalid {
                            path: self.path.clone(),
                            line: at.line,
                            column: at.column,
                            context: at.context,
                            message,
                        }
                    })?;
                    spec.route.clone().resolution(resolution)
                }
            };
            routes.push(route);
        }
        Ok(routes)
    }

    #[cfg(feature = "dns")]
    fn dns_resolution(
        &self,
        servers: &[SocketAddr],
        cache: &mut ResolverCache,
    ) -> Result<Resolution, String> {
        let servers = if servers.is_empty() {
            crate::dns::system_servers().map_err(|e| format!("cannot use /etc/resolv.conf: {e}"))?
        } else {
            servers.to_vec()
        };
        if let Some(resolution) = cache.resolvers.get(&servers) {
            return Ok(resolution.clone());
        }
        let resolution = crate::dns::resolution(&servers)
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
        cache.resolvers.insert(servers, resolution.clone());
        Ok(resolution)
    }

    #[cfg(not(feature = "dns"))]
    fn dns_resolution(
        &self,
        _servers: &[SocketAddr],
        _cache: &mut ResolverCache,
    ) -> Result<Resolution, String> {
        Err("this build of spliceway has no DNS client (cargo feature `dns`)".into())
    }

    /// A relay builder with the routes and relay-wide settings of this file.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn relay_builder(&self) -> Result<RelayBuilder, ConfigError> {
        self.relay_builder_with(&mut ResolverCache::default())
    }

    /// As [`Config::relay_builder`], reusing resolvers built before.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn relay_builder_with(
        &self,
        cache: &mut ResolverCache,
    ) -> Result<RelayBuilder, ConfigError> {
        let mut builder = Relay::builder()
            .threads(self.threads.unwrap_or(0))
            .drain_timeout(self.drain_timeout)
            .pool_limits(self.pool_limits);
        if let Some(limit) = self.max_connections {
            builder = builder.max_connections(limit);
        }
        for route in self.routes_with(cache)? {
            builder = builder.route(route);
        }
        Ok(builder)
    }

    /// A short description of the relay-wide settings and of every route, for
    /// `spliceway check`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> fmt::Result {
        let plural = if self.routes.len() == 1 { "" } else { "s" };
        writeln!(
            out,
            "{}: OK, {} route{plural}",
            self.path.display(),
            self.routes.len()
        )?;
        let threads = self
            .threads
            .filter(|&n| n > 0)
            .map_or("one per CPU".to_string(), |n| n.to_string());
        writeln!(
            out,
            "relay: threads {threads}; max connections {}; drain timeout {}; log {} ({})",
            limit(self.max_connections),
            humantime::format_duration(self.drain_timeout),
            self.log_level.name(),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        )?;
        let metrics = self
            .metrics
            .map_or("off".to_string(), |a| format!("http://{a}/metrics"));
        let user = match (&self.user, &self.group) {
            (None, None) => "(stays as started)".to_string(),
            (u, g) => format!(
                "user {}, group {}",
                u.as_deref().unwrap_or("-"),
                g.as_deref().unwrap_or("(the user's)")
            ),
        };
        writeln!(out, "metrics: {metrics}; privileges: {user}")?;
        writeln!(
            out,
            "pipe pool per worker: {} idle pipes kept; budget {}",
            self.pool_limits.max_idle_pipes,
            bytesize::ByteSize(self.pool_limits.pipe_budget_bytes as u64)
        )?;
        for spec in &self.routes {
            write_route(out, spec)?;
        }
        Ok(())
    }
}

fn limit(value: Option<usize>) -> String {
    value.map_or("unlimited".to_string(), |n| n.to_string())
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
    let fmt_d = |d: Duration| humantime::format_duration(d).to_string();
    writeln!(
        out,
        "  limits    max connections {}; connect timeout {} x{}; idle timeout {}; \
         half-close timeout {}",
        limit(route.connection_limit()),
        fmt_d(options.connect_timeout),
        options.connect_attempts,
        fmt_d(options.idle_timeout),
        fmt_d(options.half_close_timeout),
    )?;
    let engine = match options.mode {
        crate::Mode::Splice => format!(
            "splice, {} pipes{}",
            bytesize::ByteSize(options.pipe_size as u64),
            if options.require_splice {
                ", no fallback to copy"
            } else {
                ""
            }
        ),
        crate::Mode::Copy => format!(
            "copy, {} buffers",
            bytesize::ByteSize(options.copy_buffer_size as u64)
        ),
    };
    let keepalive = options
        .keepalive
        .map_or("off".to_string(), |d| fmt_d(d).to_string());
    let congestion = options.congestion.as_deref().unwrap_or("system default");
    writeln!(
        out,
        "  mode      {engine}; nodelay {}; keepalive {keepalive}; congestion {congestion}",
        if options.nodelay { "on" } else { "off" }
    )
}
