//! [`Config`]: a configuration file, read and checked, with the routes and the relay builder it
//! makes. Reading is in `validate` (through `raw` and `location`); what `spliceway check` prints
//! is in `summary`.

mod across_routes;
mod hints;
mod location;
mod raw;
mod settings;
pub(crate) mod summary;
mod upstreams;
mod validate;

pub use validate::{MAX_THREADS, MAX_TIMEOUT, control_socket_path};

#[cfg(test)]
mod key_table_tests;
#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod udp_tests;
#[cfg(test)]
mod upstreams_tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spliceway::{PoolLimits, Relay, RelayBuilder, Route};

use crate::{ConfigError, LogFormat, LogLevel, ResolverChoice, Resolvers};
use settings::{At, Settings};

/// A configuration file, read and checked.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    /// The text it was read from, kept for [`Config::recheck`].
    text: Arc<str>,
    settings: Settings,
}

impl Config {
    /// A short description of the relay-wide settings and of every route, for
    /// `spliceway check`.
    pub fn summary(&self) -> String {
        summary::render(&self.path, &self.settings)
    }

    /// What the file allows that is valid but most likely not meant (a route believing PROXY
    /// headers from every address), one sentence each: `spliceway check` prints them, `run`
    /// logs them as warnings.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        self.settings
            .routes
            .iter()
            .flat_map(|spec| summary::route_warnings(&spec.route))
            .collect()
    }

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
        let settings = validate::read(text, path)?;
        Ok(Config {
            path: path.to_path_buf(),
            text: text.into(),
            settings,
        })
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
        self.settings.threads
    }

    /// The user to switch to after binding the listening sockets.
    pub fn user(&self) -> Option<&str> {
        self.settings.user.as_deref()
    }

    /// The group to switch to after binding the listening sockets.
    pub fn group(&self) -> Option<&str> {
        self.settings.group.as_deref()
    }

    /// The log level (default [`LogLevel::Info`]: one line per closed connection).
    pub fn log_level(&self) -> LogLevel {
        self.settings.log_level
    }

    /// The log format.
    pub fn log_format(&self) -> LogFormat {
        self.settings.log_format
    }

    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.settings.metrics
    }

    /// The unix socket the relay listens on for `spliceway upgrade`, if any (`control_socket`).
    pub fn control_socket(&self) -> Option<&Path> {
        self.settings.control_socket.as_deref()
    }

    /// The relay-wide connection limit.
    pub fn max_connections(&self) -> Option<usize> {
        self.settings.max_connections
    }

    /// The `control_socket` of the file at `path`, read leniently: from a file that is
    /// otherwise invalid too, so that `spliceway upgrade` can still reach the running relay
    /// (whose new process then fails on the file and reports why).
    ///
    /// # Errors
    ///
    /// The file's own error when even its `control_socket` cannot be read.
    pub fn control_socket_in(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let error = match Config::from_file(path) {
            Ok(config) => return Ok(config.control_socket().map(Path::to_path_buf)),
            Err(e) => e,
        };
        let lenient = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| {
                table
                    .get("control_socket")
                    .and_then(|v| v.as_str())
                    .and_then(|s| control_socket_path(s).ok())
            });
        match lenient {
            Some(found) => Ok(Some(found)),
            None => Err(error),
        }
    }

    /// How long a graceful shutdown waits for open connections.
    pub fn drain_timeout(&self) -> Duration {
        self.settings.drain_timeout
    }

    /// How long a graceful shutdown keeps accepting after readiness turns 503 (`drain_delay`,
    /// default zero).
    pub fn drain_delay(&self) -> Duration {
        self.settings.drain_delay
    }

    /// Each worker's pipe pool: idle pipes kept (`pool_idle_pipes`) and the pipe budget
    /// (`pipe_budget`).
    pub fn pool_limits(&self) -> PoolLimits {
        self.settings.pool_limits
    }

    /// The sum of the routes' connection limits, or the global one if lower; `None` if some
    /// route is unlimited and there is no global limit.
    pub fn connection_capacity(&self) -> Option<usize> {
        let per_route: Option<usize> = self
            .settings
            .routes
            .iter()
            .map(|r| r.route.connection_limit())
            .sum();
        match (per_route, self.settings.max_connections) {
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
        self.routes_with(&mut Resolvers::default())
    }

    /// As [`Config::routes`], reusing (and adding to) resolvers built before.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn routes_with(&self, resolvers: &mut Resolvers) -> Result<Vec<Route>, ConfigError> {
        let mut routes = Vec::with_capacity(self.settings.routes.len());
        for spec in &self.settings.routes {
            let route = match &spec.resolver {
                ResolverChoice::System => spec.route.clone(),
                ResolverChoice::Dns { servers } => {
                    let resolution = resolvers.dns(servers).map_err(|message| {
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

    /// A relay builder with the routes and relay-wide settings of this file.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn relay_builder(&self) -> Result<RelayBuilder, ConfigError> {
        self.relay_builder_with(&mut Resolvers::default())
    }

    /// As [`Config::relay_builder`], reusing (and adding to) resolvers built before.
    ///
    /// # Errors
    ///
    /// As [`Config::routes`].
    pub fn relay_builder_with(
        &self,
        resolvers: &mut Resolvers,
    ) -> Result<RelayBuilder, ConfigError> {
        let mut builder = Relay::builder()
            .threads(self.settings.threads.unwrap_or(0))
            .drain_timeout(self.settings.drain_timeout)
            .drain_delay(self.settings.drain_delay)
            .pool_limits(self.settings.pool_limits);
        if let Some(limit) = self.settings.max_connections {
            builder = builder.max_connections(limit);
        }
        for route in self.routes_with(resolvers)? {
            builder = builder.route(route);
        }
        Ok(builder)
    }
}
