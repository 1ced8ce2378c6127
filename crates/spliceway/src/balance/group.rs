//! A group of upstreams as the workers run it: the description, each upstream's shared
//! health, the precomputed round-robin order and the shared turn counter; choosing an upstream.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::health::UpstreamHealth;
use super::pick::{Mask, View, bit, candidates, pick, stable_hash};
use super::schedule;
use crate::address::UpstreamAddr;
use crate::resolver::{Target, is_local};
use crate::route::{Balance, UpstreamGroup};
use crate::stats::UpstreamSnapshot;

/// A group of upstreams as the workers run it.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) group: UpstreamGroup,
    /// Each upstream's shared state, by index.
    pub(crate) health: Vec<Arc<UpstreamHealth>>,
    /// For each IP-literal upstream, its one target (no resolution, and whether it is an
    /// address of this host asked once here rather than per connection).
    literal_targets: Vec<Option<Arc<[Target]>>>,
    weights: Vec<u32>,
    /// Rendezvous keys: a stable hash of each upstream's address.
    keys: Vec<u64>,
    backups: Mask,
    all: Mask,
    /// The primaries' smooth round-robin order (upstream indices), used while every primary
    /// is up and untried.
    primary_order: Vec<u8>,
    /// The shared turn counter.
    turn: AtomicUsize,
}

impl GroupState {
    /// Runs `group` (already validated); upstreams with the same address as one of
    /// `previous` keep its health and counters.
    pub(crate) fn new(
        group: UpstreamGroup,
        previous: Option<&GroupState>,
        now: Instant,
    ) -> GroupState {
        let servers = &group.servers;
        let health = servers
            .iter()
            .map(|s| {
                previous
                    .and_then(|p| {
                        p.group
                            .servers
                            .iter()
                            .position(|old| old.address == s.address)
                            .map(|i| Arc::clone(&p.health[i]))
                    })
                    .unwrap_or_else(|| Arc::new(UpstreamHealth::new(now)))
            })
            .collect();
        let literal_targets = servers
            .iter()
            .map(|s| match s.address {
                UpstreamAddr::Ip(addr) => Some(Arc::from(vec![Target {
                    addr,
                    local: is_local(addr.ip()),
                }])),
                UpstreamAddr::Name { .. } => None,
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let keys = servers
            .iter()
            .map(|s| stable_hash(s.address.to_string().as_bytes()))
            .collect();
        let mut backups = 0;
        for (i, s) in servers.iter().enumerate() {
            if s.backup {
                backups |= bit(i);
            }
        }
        let all = if servers.len() >= 64 {
            u64::MAX
        } else {
            bit(servers.len()) - 1
        };
        let primaries: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].backup).collect();
        let primary_weights: Vec<u32> = primaries.iter().map(|&i| weights[i]).collect();
        let primary_order = schedule::smooth_schedule(&primary_weights)
            .into_iter()
            .map(|k| primaries[usize::from(k)] as u8)
            .collect();
        GroupState {
            group,
            health,
            literal_targets,
            weights,
            keys,
            backups,
            all,
            primary_order,
            turn: AtomicUsize::new(0),
        }
    }

    /// The target of upstream `i` when it is an IP literal.
    pub(crate) fn literal_targets(&self, i: usize) -> Option<Arc<[Target]>> {
        self.literal_targets[i].clone()
    }

    /// The upstreams up at `now`.
    pub(crate) fn up(&self, now: Instant) -> Mask {
        let mut up = 0;
        for (i, h) in self.health.iter().enumerate() {
            if h.is_up(now) {
                up |= bit(i);
            }
        }
        up
    }

    /// Each upstream's health and counters, for [`RelayHandle::snapshot`](crate::RelayHandle::snapshot).
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<UpstreamSnapshot> {
        self.group
            .servers
            .iter()
            .zip(&self.health)
            .map(|(s, h)| UpstreamSnapshot {
                upstream: s.address.to_string(),
                weight: s.weight,
                backup: s.backup,
                up: h.is_up(now),
                open_connections: h.open_connections(),
                connections: h.connections.load(Ordering::Relaxed),
                connect_failures: h.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The upstream a connection from `client` should try next, having tried `tried`; `None`
    /// once it has tried them all.
    pub(crate) fn choose(&self, client: IpAddr, tried: Mask, now: Instant) -> Option<usize> {
        let up = self.up(now);
        let set = candidates(up, self.backups, self.all, tried);
        if set == 0 {
            return None;
        }
        let balance = self.group.balance;
        let turn = match balance {
            Balance::ClientHash => 0,
            _ => self.turn.fetch_add(1, Ordering::Relaxed),
        };
        if balance == Balance::RoundRobin && set == self.all & !self.backups {
            return Some(usize::from(
                self.primary_order[turn % self.primary_order.len()],
            ));
        }
        let open = |i: usize| self.health[i].open_connections();
        let view = View {
            weights: &self.weights,
            open: &open,
            keys: &self.keys,
        };
        Some(pick(balance, &view, set, client, turn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::UpstreamServer;
    use std::time::Duration;

    fn group(spec: &[(&str, u32, bool)]) -> UpstreamGroup {
        UpstreamGroup::new(
            spec.iter()
                .map(|(a, w, b)| {
                    UpstreamServer::new(UpstreamAddr::parse(a).unwrap())
                        .weight(*w)
                        .backup(*b)
                })
                .collect(),
        )
    }

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    #[test]
    fn round_robin_over_all_primaries_is_smooth_and_skips_backups() {
        let now = Instant::now();
        let g = GroupState::new(
            group(&[
                ("10.0.0.1:1", 5, false),
                ("10.0.0.9:1", 1, true),
                ("10.0.0.2:1", 1, false),
                ("10.0.0.3:1", 1, false),
            ]),
            None,
            now,
        );
        let order: Vec<usize> = (0..7).map(|_| g.choose(ip(), 0, now).unwrap()).collect();
        assert_eq!(order, vec![0, 0, 2, 0, 3, 0, 0]);
    }

    #[test]
    fn a_marked_down_primary_gets_nothing_and_backups_only_when_all_are_down() {
        let now = Instant::now();
        let g = GroupState::new(
            group(&[
                ("10.0.0.1:1", 1, false),
                ("10.0.0.2:1", 1, false),
                ("10.0.0.9:1", 1, true),
            ]),
            None,
            now,
        );
        g.health[0].set_checked_up(false);
        for _ in 0..20 {
            assert_eq!(g.choose(ip(), 0, now), Some(1));
        }
        g.health[1].connect_failed(now, 1, Duration::from_secs(10));
        for _ in 0..20 {
            assert_eq!(g.choose(ip(), 0, now), Some(2));
        }
        // After fail_timeout the primary is back.
        assert_eq!(g.choose(ip(), 0, now + Duration::from_secs(11)), Some(1));
        // A connection that tried everything gets None.
        assert_eq!(g.choose(ip(), 0b111, now), None);
    }

    #[test]
    fn a_reload_keeps_the_health_of_unchanged_upstreams() {
        let now = Instant::now();
        let old = GroupState::new(
            group(&[("10.0.0.1:1", 1, false), ("10.0.0.2:1", 1, false)]),
            None,
            now,
        );
        old.health[1].set_checked_up(false);
        let new = GroupState::new(
            group(&[("10.0.0.2:1", 3, false), ("10.0.0.3:1", 1, false)]),
            Some(&old),
            now,
        );
        assert!(Arc::ptr_eq(&new.health[0], &old.health[1]));
        assert!(!new.health[0].checked_up());
        assert!(new.health[1].checked_up());
    }
}
