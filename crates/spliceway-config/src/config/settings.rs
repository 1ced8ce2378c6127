//! What a configuration file says, once read and checked: the relay-wide settings and each
//! route as the engine will get it. Plain data: `validate.rs` makes it, `Config` (`mod.rs`)
//! answers questions about it, `summary.rs` prints it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use spliceway::{PoolLimits, Route};

use crate::{LogFormat, LogLevel, ResolverChoice};

/// A place in the file, kept for errors found after reading (building a DNS resolver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct At {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) context: String,
}

/// One route as read, before its resolver is built.
#[derive(Debug, Clone)]
pub(super) struct RouteSpec {
    pub(super) route: Route,
    pub(super) resolver: ResolverChoice,
    pub(super) resolver_at: Option<At>,
}

/// The settings of a checked file.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) threads: Option<usize>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) log_level: LogLevel,
    pub(super) log_format: LogFormat,
    pub(super) metrics: Option<SocketAddr>,
    /// The unix socket `spliceway upgrade` talks to.
    pub(super) control_socket: Option<PathBuf>,
    pub(super) max_connections: Option<usize>,
    pub(super) drain_timeout: Duration,
    /// How long a drain keeps accepting after it begins.
    pub(super) drain_delay: Duration,
    pub(super) pool_limits: PoolLimits,
    pub(super) routes: Vec<RouteSpec>,
}
