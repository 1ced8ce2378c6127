//! A group of upstreams behind one route or one SNI entry: several servers, how connections
//! are balanced over them, and how their health is judged (issue 29). A description, plain
//! data; the relay runs it in `balance/` (the choice of an upstream, the shared health state)
//! and `health_check/` (the active checks).

use std::fmt;
use std::time::Duration;

use crate::address::UpstreamAddr;
pub use crate::error::GroupError;

/// The most upstreams a group may hold: the round-robin schedule is precomputed, and a group
/// of hundreds is a job for a load balancer's service discovery, not a relay's configuration.
pub const MAX_UPSTREAMS_PER_GROUP: usize = 64;

/// The largest weight of an upstream. Weights are relative; a thousand to one is already more
/// than any deployment needs, and a bound keeps the round-robin schedule small.
pub const MAX_WEIGHT: u32 = 1000;

/// Consecutive connect failures that mark an upstream down, by default (nginx's default too).
pub const DEFAULT_MAX_FAILS: u32 = 1;

/// How long an upstream stays down after `max_fails` consecutive failures, by default (nginx's
/// default too).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `rise` or `fall` of a health check.
pub const MAX_RISE_FALL: u32 = 100;

/// The largest request (`send`) or expected reply prefix (`expect`) of a health check.
pub const MAX_PROBE_BYTES: usize = 4096;

/// One upstream of a group: an address (a name is resolved per connection as a single
/// upstream is), its weight and whether it is a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    pub(crate) address: UpstreamAddr,
    pub(crate) weight: u32,
    pub(crate) backup: bool,
}

impl UpstreamServer {
    /// A primary upstream of weight 1.
    #[must_use]
    pub fn new(address: UpstreamAddr) -> Self {
        UpstreamServer {
            address,
            weight: 1,
            backup: false,
        }
    }

    /// Sets the weight (1 to [`MAX_WEIGHT`]): an upstream of weight 3 receives three times the
    /// new connections of one of weight 1 under round robin, and is held to three times the
    /// open connections under least-connections.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Makes this upstream a backup: it receives connections only while no primary is up.
    #[must_use]
    pub fn backup(mut self, backup: bool) -> Self {
        self.backup = backup;
        self
    }

    /// The address.
    #[must_use]
    pub fn address(&self) -> &UpstreamAddr {
        &self.address
    }

    /// The weight.
    #[must_use]
    pub fn upstream_weight(&self) -> u32 {
        self.weight
    }

    /// Whether it is a backup.
    #[must_use]
    pub fn is_backup(&self) -> bool {
        self.backup
    }
}

/// How a group spreads new connections over its upstreams that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// Weighted round robin, smooth as nginx's: weights 5, 1, 1 give `a a b a c a a`, not
    /// five in a row.
    #[default]
    RoundRobin,
    /// The upstream with the fewest open connections for its weight.
    LeastConnections,
    /// By the client's address (rendezvous hashing): a client keeps reaching the same
    /// upstream while the set of upstreams that are up is unchanged, and when one of N
    /// leaves only its own clients (about 1/N) move.
    ClientHash,
}

impl Balance {
    /// The name used in configuration files and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConnections => "least-connections",
            Balance::ClientHash => "client-hash",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Passive health: judged from the connections themselves. `max_fails` consecutive failed
/// connects to an upstream mark it down for `fail_timeout`; the connection that failed moves on
/// to the next upstream within its `connect_attempts`, so its client does not see the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassiveHealth {
    /// Consecutive connect failures that mark an upstream down; 0 never marks it down.
    pub max_fails: u32,
    /// How long it then stays down (after which connections try it again).
    pub fail_timeout: Duration,
}

impl PassiveHealth {
    /// `max_fails` failures in a row mark an upstream down for `fail_timeout`.
    #[must_use]
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        PassiveHealth {
            max_fails,
            fail_timeout,
        }
    }
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth::new(DEFAULT_MAX_FAILS, DEFAULT_FAIL_TIMEOUT)
    }
}

/// What an active health check does to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// A TCP connect that completes.
    Connect,
    /// Connects, sends `send` (may be empty) and expects the reply to begin with `expect`
    /// (a Redis `PING\r\n` and `+PONG`, stone's health script).
    SendExpect {
        /// The bytes sent after connecting.
        send: Vec<u8>,
        /// The bytes the reply must begin with.
        expect: Vec<u8>,
    },
    /// An HTTP/1.1 `GET path` whose response status must be `status`.
    HttpGet {
        /// The path requested (starts with `/`).
        path: String,
        /// The status expected.
        status: u16,
    },
}

/// Active health checks: a probe every `interval`, `fall` failures in a row mark an upstream
/// down and `rise` successes in a row mark it up again. Each probe is bounded by `timeout`.
/// Probes never reach an address the route's address policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// Time between two probes of one upstream.
    pub interval: Duration,
    /// Successes in a row that mark a down upstream up.
    pub rise: u32,
    /// Failures in a row that mark an up upstream down.
    pub fall: u32,
    /// How long one probe may take (connect, send and reply together).
    pub timeout: Duration,
    /// What a probe does.
    pub probe: Probe,
}

impl HealthCheck {
    /// A TCP connect every `interval`, timing out after `interval` (at most 5 s), rise 2 and
    /// fall 3 (HAProxy's defaults).
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        HealthCheck {
            interval,
            rise: 2,
            fall: 3,
            timeout: interval.min(Duration::from_secs(5)),
            probe: Probe::Connect,
        }
    }

    /// Sets the successes in a row that mark an upstream up.
    #[must_use]
    pub fn rise(mut self, rise: u32) -> Self {
        self.rise = rise;
        self
    }

    /// Sets the failures in a row that mark an upstream down.
    #[must_use]
    pub fn fall(mut self, fall: u32) -> Self {
        self.fall = fall;
        self
    }

    /// Sets the probe's time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets what a probe does.
    #[must_use]
    pub fn probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self
    }
}

/// Several upstreams for one route or SNI entry, balanced, with their health judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamGroup {
    pub(crate) servers: Vec<UpstreamServer>,
    pub(crate) balance: Balance,
    pub(crate) passive: PassiveHealth,
    pub(crate) check: Option<HealthCheck>,
}

impl UpstreamGroup {
    /// A group of `servers`, balanced by weighted round robin, with the default passive health
    /// ([`PassiveHealth::default`]) and no active check.
    #[must_use]
    pub fn new(servers: Vec<UpstreamServer>) -> Self {
        UpstreamGroup {
            servers,
            balance: Balance::default(),
            passive: PassiveHealth::default(),
            check: None,
        }
    }

    /// Sets how connections are spread.
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Sets the passive health rule.
    #[must_use]
    pub fn passive_health(mut self, passive: PassiveHealth) -> Self {
        self.passive = passive;
        self
    }

    /// Adds active health checks.
    #[must_use]
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// The upstreams, in the order given.
    #[must_use]
    pub fn servers(&self) -> &[UpstreamServer] {
        &self.servers
    }

    /// How connections are spread.
    #[must_use]
    pub fn balancing(&self) -> Balance {
        self.balance
    }

    /// The passive health rule.
    #[must_use]
    pub fn passive(&self) -> PassiveHealth {
        self.passive
    }

    /// The active health check, if any.
    #[must_use]
    pub fn check(&self) -> Option<&HealthCheck> {
        self.check.as_ref()
    }

    /// Checks the group on its own: at least one primary, at most
    /// [`MAX_UPSTREAMS_PER_GROUP`], no address twice, weights from 1 to [`MAX_WEIGHT`], and a
    /// health check with an interval and timeout above zero, `rise` and `fall` from 1 to
    /// [`MAX_RISE_FALL`], probe bytes within [`MAX_PROBE_BYTES`] and an HTTP path and status
    /// that make a request.
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`GroupError`].
    pub fn validate(&self) -> Result<(), GroupError> {
        if self.servers.is_empty() {
            return Err(GroupError::Empty);
        }
        if self.servers.len() > MAX_UPSTREAMS_PER_GROUP {
            return Err(GroupError::TooMany(self.servers.len()));
        }
        for (i, server) in self.servers.iter().enumerate() {
            if server.weight == 0 || server.weight > MAX_WEIGHT {
                return Err(GroupError::Weight {
                    upstream: server.address.to_string(),
                    weight: server.weight,
                });
            }
            if self.servers[..i]
                .iter()
                .any(|s| s.address == server.address)
            {
                return Err(GroupError::Duplicate(server.address.to_string()));
            }
        }
        if self.servers.iter().all(|s| s.backup) {
            return Err(GroupError::OnlyBackups);
        }
        if let Some(check) = &self.check {
            check_health_check(check)?;
        }
        Ok(())
    }
}

fn check_health_check(check: &HealthCheck) -> Result<(), GroupError> {
    let bad = |what: String| Err(GroupError::HealthCheck(what));
    if check.interval.is_zero() {
        return bad("the interval must be more than zero".into());
    }
    if check.interval > Duration::from_secs(24 * 3600) {
        return bad("the interval must be at most a day".into());
    }
    if check.timeout.is_zero() {
        return bad("the timeout must be more than zero".into());
    }
    for (name, value) in [("rise", check.rise), ("fall", check.fall)] {
        if value == 0 || value > MAX_RISE_FALL {
            return bad(format!(
                "{name} must be from 1 to {MAX_RISE_FALL}, not {value}"
            ));
        }
    }
    match &check.probe {
        Probe::Connect => {}
        Probe::SendExpect { send, expect } => {
            if send.len() > MAX_PROBE_BYTES || expect.len() > MAX_PROBE_BYTES {
                return bad(format!(
                    "send and expect must be at most {MAX_PROBE_BYTES} bytes"
                ));
            }
            if expect.is_empty() {
                return bad(
                    "expect must name at least one byte (without it, a connect is the whole check)"
                        .into(),
                );
            }
        }
        Probe::HttpGet { path, status } => {
            if !path.starts_with('/')
                || path.len() > MAX_PROBE_BYTES
                || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                return bad(format!(
                    "the HTTP path must start with / and hold no spaces or control characters, not {path:?}"
                ));
            }
            if !(100..=599).contains(status) {
                return bad(format!(
                    "the HTTP status must be from 100 to 599, not {status}"
                ));
            }
        }
    }
    Ok(())
}

impl fmt::Display for UpstreamGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", s.address)?;
            if s.weight != 1 {
                write!(f, " weight {}", s.weight)?;
            }
            if s.backup {
                f.write_str(" backup")?;
            }
        }
        write!(f, " ({})", self.balance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(a: &str) -> UpstreamServer {
        UpstreamServer::new(UpstreamAddr::parse(a).unwrap())
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        assert_eq!(
            UpstreamGroup::new(vec![]).validate(),
            Err(GroupError::Empty)
        );
        assert!(matches!(
            UpstreamGroup::new(vec![server("10.0.0.1:1").weight(0)]).validate(),
            Err(GroupError::Weight { weight: 0, .. })
        ));
        assert!(matches!(
            UpstreamGroup::new(vec![server("10.0.0.1:1").weight(MAX_WEIGHT + 1)]).validate(),
            Err(GroupError::Weight { .. })
        ));
        assert_eq!(
            UpstreamGroup::new(vec![server("10.0.0.1:1").backup(true)]).validate(),
            Err(GroupError::OnlyBackups)
        );
        assert!(matches!(
            UpstreamGroup::new(vec![server("a.example:1"), server("a.example:1")]).validate(),
            Err(GroupError::Duplicate(_))
        ));
        let many = (0..=MAX_UPSTREAMS_PER_GROUP as u16)
            .map(|p| server(&format!("10.0.0.1:{}", p + 1)))
            .collect();
        assert!(matches!(
            UpstreamGroup::new(many).validate(),
            Err(GroupError::TooMany(_))
        ));
        let ok = UpstreamGroup::new(vec![
            server("10.0.0.1:1"),
            server("b.example:2").backup(true),
        ]);
        assert_eq!(ok.validate(), Ok(()));
        for check in [
            HealthCheck::new(Duration::ZERO),
            HealthCheck::new(Duration::from_secs(1)).rise(0),
            HealthCheck::new(Duration::from_secs(1)).fall(MAX_RISE_FALL + 1),
            HealthCheck::new(Duration::from_secs(1)).timeout(Duration::ZERO),
            HealthCheck::new(Duration::from_secs(1)).probe(Probe::SendExpect {
                send: b"PING\r\n".to_vec(),
                expect: Vec::new(),
            }),
            HealthCheck::new(Duration::from_secs(1)).probe(Probe::HttpGet {
                path: "health".into(),
                status: 200,
            }),
            HealthCheck::new(Duration::from_secs(1)).probe(Probe::HttpGet {
                path: "/health".into(),
                status: 99,
            }),
        ] {
            assert!(
                matches!(
                    ok.clone().health_check(check.clone()).validate(),
                    Err(GroupError::HealthCheck(_))
                ),
                "{check:?}"
            );
        }
    }

    #[test]
    fn the_messages_name_the_limits() {
        assert!(
            GroupError::TooMany(65)
                .to_string()
                .contains(&MAX_UPSTREAMS_PER_GROUP.to_string())
        );
        let weight = GroupError::Weight {
            upstream: "a:1".into(),
            weight: 0,
        };
        assert!(weight.to_string().contains(&MAX_WEIGHT.to_string()));
    }

    #[test]
    fn display_names_weights_backups_and_the_balance() {
        let g = UpstreamGroup::new(vec![
            server("10.0.0.1:1").weight(3),
            server("b.example:2").backup(true),
        ])
        .balance(Balance::LeastConnections);
        assert_eq!(
            g.to_string(),
            "10.0.0.1:1 weight 3, b.example:2 backup (least-connections)"
        );
    }
}
