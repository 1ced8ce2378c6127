//! State shared between a relay's workers and its handle: routes as they run, counters, the
//! control state (running, draining, stopping) and the workers' mailboxes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::mailbox::{Mailbox, Message};
use crate::resolver::{Resolver, Target};
use crate::route::{AccessList, ConnectionOptions, Resolution, Upstream};
use crate::stats::Stats;

/// What a route keeps across configuration reloads: its counters and its connection count.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    pub(crate) stats: Stats,
    pub(crate) active: AtomicUsize,
}

/// A route as the workers run it. A reload makes a new `RouteState` (new connections use it);
/// connections already open keep the one they started with.
#[derive(Debug)]
pub(crate) struct RouteState {
    pub(crate) name: String,
    pub(crate) upstream: Upstream,
    pub(crate) options: ConnectionOptions,
    pub(crate) access: AccessList,
    pub(crate) resolution: Resolution,
    /// The addresses actually bound (port 0 replaced by the port the kernel chose).
    pub(crate) listen: Vec<SocketAddr>,
    /// For an IP-literal upstream, its one target (no resolution needed).
    pub(crate) literal_targets: Option<Arc<[Target]>>,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) max_connections: Option<usize>,
    /// Rotates the first address tried, spreading connections over all resolved addresses.
    pub(crate) next_target: AtomicUsize,
}

impl RouteState {
    pub(crate) fn stats(&self) -> &Stats {
        &self.counters.stats
    }

    pub(crate) fn active(&self) -> &AtomicUsize {
        &self.counters.active
    }

    /// The listening address `target` would connect back to, if it is one of this route's own.
    pub(crate) fn loops_back(&self, target: &Target) -> Option<SocketAddr> {
        self.listen.iter().copied().find(|listen| {
            listen.port() == target.addr.port()
                && listen.is_ipv4() == target.addr.is_ipv4()
                && (listen.ip() == target.addr.ip()
                    || (listen.ip().is_unspecified() && target.local))
        })
    }
}

/// Takes one slot of a connection limit, if one is free.
pub(crate) fn try_reserve(active: &AtomicUsize, limit: Option<usize>) -> bool {
    let previous = active.fetch_add(1, Ordering::AcqRel);
    match limit {
        Some(limit) if previous >= limit => {
            active.fetch_sub(1, Ordering::AcqRel);
            false
        }
        _ => true,
    }
}

/// What the workers should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Running = 0,
    /// Stop accepting; let connections finish until the drain timeout, then reset them.
    Draining = 1,
    /// Reset every connection and stop now.
    Stopping = 2,
}

/// Relay-wide state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Stats,
    pub(crate) routes: RwLock<Vec<Arc<RouteState>>>,
    pub(crate) active: AtomicUsize,
    max_connections: AtomicUsize,
    control: AtomicU8,
    drain_timeout: Mutex<Duration>,
    pub(crate) resolver: Resolver,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    pub(crate) next_id: AtomicU64,
    /// Pipes each worker holds (in use and pooled), as of its last closed connection.
    pub(crate) pipes_open: Vec<AtomicUsize>,
    /// Total capacity of those pipes, in bytes.
    pub(crate) pipe_bytes: Vec<AtomicUsize>,
    pub(crate) fixed: crate::relay::Fixed,
    /// Serialises reloads.
    pub(crate) reload_lock: Mutex<()>,
}

impl Shared {
    pub(crate) fn new(
        routes: Vec<Arc<RouteState>>,
        max_connections: Option<usize>,
        drain_timeout: Duration,
        resolver: Resolver,
        mailboxes: Vec<Arc<Mailbox>>,
        fixed: crate::relay::Fixed,
    ) -> Self {
        let workers = mailboxes.len();
        Shared {
            stats: Stats::default(),
            routes: RwLock::new(routes),
            active: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(max_connections.unwrap_or(usize::MAX)),
            control: AtomicU8::new(Control::Running as u8),
            drain_timeout: Mutex::new(drain_timeout),
            resolver,
            mailboxes,
            next_id: AtomicU64::new(1),
            pipes_open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            pipe_bytes: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            fixed,
            reload_lock: Mutex::new(()),
        }
    }

    /// The relay-wide connection limit.
    pub(crate) fn max_connections(&self) -> Option<usize> {
        match self.max_connections.load(Ordering::Relaxed) {
            usize::MAX => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_max_connections(&self, limit: Option<usize>) {
        self.max_connections
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The routes as they run now.
    pub(crate) fn routes(&self) -> Vec<Arc<RouteState>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn control(&self) -> Control {
        match self.control.load(Ordering::Acquire) {
            0 => Control::Running,
            1 => Control::Draining,
            _ => Control::Stopping,
        }
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the control state forward (never back) and wakes every worker.
    pub(crate) fn set_control(&self, control: Control, drain_timeout: Option<Duration>) {
        if let Some(timeout) = drain_timeout {
            *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
        }
        self.control.fetch_max(control as u8, Ordering::AcqRel);
        for mailbox in &self.mailboxes {
            mailbox.post(Message::Control);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(listen: &[&str]) -> RouteState {
        RouteState {
            name: "r".into(),
            upstream: Upstream::Fixed(
                crate::address::UpstreamAddr::parse("example.com:443").unwrap(),
            ),
            options: ConnectionOptions::default(),
            access: AccessList::default(),
            resolution: Resolution::system(),
            listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
            literal_targets: None,
            counters: Arc::default(),
            max_connections: None,
            next_target: AtomicUsize::new(0),
        }
    }

    fn target(addr: &str, local: bool) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            local,
        }
    }

    #[test]
    fn detects_connecting_to_its_own_listener() {
        let r = route(&["0.0.0.0:443", "[::]:443"]);
        assert!(r.loops_back(&target("10.0.0.5:443", true)).is_some());
        assert!(r.loops_back(&target("[::1]:443", true)).is_some());
        assert!(r.loops_back(&target("52.219.0.1:443", false)).is_none());
        assert!(r.loops_back(&target("10.0.0.5:8443", true)).is_none());
        let r = route(&["127.0.0.1:8080"]);
        assert!(r.loops_back(&target("127.0.0.1:8080", true)).is_some());
        assert!(r.loops_back(&target("127.0.0.2:8080", true)).is_none());
    }

    #[test]
    fn reservations_respect_the_limit() {
        let active = AtomicUsize::new(0);
        assert!(try_reserve(&active, Some(2)));
        assert!(try_reserve(&active, Some(2)));
        assert!(!try_reserve(&active, Some(2)));
        assert_eq!(active.load(Ordering::SeqCst), 2);
        assert!(try_reserve(&active, None));
    }
}
