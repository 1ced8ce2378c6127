//! One connection's way through a group of upstreams: which upstream it is on, which it has
//! tried, how many connect attempts it has left, and its open-connection mark on the upstream
//! it reached (released when the connection ends, however it ends: on drop).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::group::GroupState;
use super::health::Change;
use super::pick::{Mask, bit};
use crate::address::UpstreamAddr;

/// A connection's use of a group.
#[derive(Debug)]
pub(crate) struct GroupAttempt {
    group: Arc<GroupState>,
    /// The upstream being tried (or reached).
    current: usize,
    tried: Mask,
    /// Connect attempts made so far, over every upstream.
    attempts: usize,
    /// Whether this connection counts as open on `current` (after [`GroupAttempt::connected`]).
    holding: bool,
}

impl GroupAttempt {
    /// Chooses the first upstream for a connection from `client`.
    pub(crate) fn start(group: Arc<GroupState>, client: IpAddr, now: Instant) -> GroupAttempt {
        // A validated group has at least one upstream, so the first choice always exists.
        let current = group.choose(client, 0, now).unwrap_or(0);
        GroupAttempt {
            group,
            current,
            tried: bit(current),
            attempts: 0,
            holding: false,
        }
    }

    /// The upstream being tried.
    pub(crate) fn upstream(&self) -> &UpstreamAddr {
        &self.group.group.servers[self.current].address
    }

    /// The target of the current upstream when it is an IP literal.
    pub(crate) fn literal_targets(&self) -> Option<Arc<[crate::resolver::Target]>> {
        self.group.literal_targets(self.current)
    }

    /// Its index in the group.
    #[cfg(test)]
    fn index(&self) -> usize {
        self.current
    }

    /// A connect attempt to the current upstream begins.
    pub(crate) fn attempt_started(&mut self) {
        self.attempts += 1;
    }

    /// A connect attempt to the current upstream failed at `now`; a change of its health is
    /// logged for `route`.
    pub(crate) fn attempt_failed(&self, now: Instant, route: &str) -> Option<Change> {
        let passive = self.group.group.passive;
        let change = self.group.health[self.current].connect_failed(
            now,
            passive.max_fails,
            passive.fail_timeout,
        );
        if change.is_some() {
            tracing::warn!(
                target: "spliceway::upstream",
                route,
                upstream = %self.upstream(),
                "upstream marked down for {:?}: {} connect failure(s) in a row (max_fails); \
                 connections go to the other upstreams",
                passive.fail_timeout,
                passive.max_fails,
            );
        }
        change
    }

    /// The current upstream is out of addresses (or failed): moves to the next one the balance
    /// picks among those not tried, if the connection has attempts left of `budget`; `None`
    /// when it has none or every upstream was tried.
    pub(crate) fn next_upstream(
        &mut self,
        client: IpAddr,
        budget: usize,
        now: Instant,
    ) -> Option<&UpstreamAddr> {
        if self.attempts >= budget {
            return None;
        }
        let next = self.group.choose(client, self.tried, now)?;
        self.tried |= bit(next);
        self.current = next;
        Some(self.upstream())
    }

    /// The connection reached the current upstream: it counts as open there until dropped.
    /// An upstream that passive health had marked down is logged as reached again.
    pub(crate) fn connected(&mut self, route: &str) -> Option<Change> {
        self.holding = true;
        let change = self.group.health[self.current].connected();
        if change.is_some() {
            tracing::info!(
                target: "spliceway::upstream",
                route,
                upstream = %self.upstream(),
                "upstream reached again after passive health had marked it down"
            );
        }
        change
    }
}

impl Drop for GroupAttempt {
    fn drop(&mut self) {
        if self.holding {
            self.group.health[self.current].closed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{PassiveHealth, UpstreamGroup, UpstreamServer};
    use std::time::Duration;

    fn group(n: usize) -> Arc<GroupState> {
        let servers = (0..n)
            .map(|i| {
                UpstreamServer::new(UpstreamAddr::parse(&format!("10.0.0.{}:1", i + 1)).unwrap())
            })
            .collect();
        let g = UpstreamGroup::new(servers)
            .passive_health(PassiveHealth::new(1, Duration::from_secs(10)));
        Arc::new(GroupState::new(g, None, Instant::now()))
    }

    fn client() -> IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    #[test]
    fn a_failed_upstream_moves_the_connection_on_within_its_budget() {
        let g = group(3);
        let now = Instant::now();
        let mut a = GroupAttempt::start(Arc::clone(&g), client(), now);
        let first = a.index();
        a.attempt_started();
        assert_eq!(a.attempt_failed(now, "r"), Some(Change::MarkedDown));
        let second = a.next_upstream(client(), 3, now).cloned().unwrap();
        assert_ne!(a.index(), first);
        assert_eq!(&second, a.upstream());
        a.attempt_started();
        a.attempt_failed(now, "r");
        a.next_upstream(client(), 3, now).unwrap();
        a.attempt_started();
        a.attempt_failed(now, "r");
        // Budget spent (and every upstream tried).
        assert!(a.next_upstream(client(), 3, now).is_none());
        // Budget 1: no second upstream.
        let mut b = GroupAttempt::start(Arc::clone(&g), client(), now);
        b.attempt_started();
        assert!(b.next_upstream(client(), 1, now).is_none());
    }

    #[test]
    fn the_open_mark_is_released_however_the_connection_ends() {
        let g = group(1);
        let now = Instant::now();
        {
            let mut a = GroupAttempt::start(Arc::clone(&g), client(), now);
            a.attempt_started();
            a.connected("r");
            assert_eq!(g.health[0].open_connections(), 1);
        }
        assert_eq!(g.health[0].open_connections(), 0);
        // A connection that never connected holds nothing.
        drop(GroupAttempt::start(Arc::clone(&g), client(), now));
        assert_eq!(g.health[0].open_connections(), 0);
    }
}
