//! Which transport a route relays, and the settings only datagram routes have.

use std::time::Duration;

use crate::error::SettingsError;

/// How long a UDP session may stay silent both ways before it ends (`udp_idle_timeout`).
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The transport of a route: TCP connections (the default) or UDP datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP: each accepted connection is relayed to its own upstream connection.
    #[default]
    Tcp,
    /// UDP: each client address is a session with its own connected upstream socket, so that
    /// the upstream's answers find their way back to that client.
    Udp,
}

impl Protocol {
    /// The name used in configuration files and logs (`"tcp"`, `"udp"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of a UDP route's sessions. Start from [`UdpOptions::default`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpOptions {
    /// A session silent both ways this long ends and its upstream socket is closed
    /// (`udp_idle_timeout`, default 60 s).
    pub idle_timeout: Duration,
    /// At most this many sessions on the route at once (`max_sessions`); a datagram from a new
    /// client beyond it is dropped and counted.
    pub max_sessions: Option<usize>,
    /// At most this many sessions per client IP address (`max_sessions_per_client`): one
    /// address cannot take every session of the route by changing its source port.
    pub max_sessions_per_client: Option<usize>,
    /// Answers the upstream gives each client datagram (`udp_responses`, nginx's
    /// `proxy_responses`): once every datagram of a session has had this many, the session
    /// ends at once rather than idling out, so that a DNS relay (1), whose clients ask each
    /// question from a new port, holds a socket per question in flight, not per question of
    /// the last `idle_timeout`. 0: no answer is expected (syslog), a session ends as soon as
    /// its datagrams have left. `None` (the default): answers are not counted.
    pub responses: Option<u32>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
            max_sessions: None,
            max_sessions_per_client: None,
            responses: None,
        }
    }
}

impl UdpOptions {
    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`SettingsError::UdpOption`] for a zero idle timeout or a zero limit.
    pub fn validate(&self, route: &str) -> Result<(), SettingsError> {
        let fail = |key, bound| SettingsError::UdpOption {
            route: route.to_string(),
            key,
            bound,
        };
        if self.idle_timeout.is_zero() {
            return Err(fail("udp_idle_timeout", "more than 0"));
        }
        if self.max_sessions == Some(0) {
            return Err(fail("max_sessions", "at least 1"));
        }
        if self.max_sessions_per_client == Some(0) {
            return Err(fail("max_sessions_per_client", "at least 1"));
        }
        Ok(())
    }
}
