//! Answering listings and closes from the control side (`RelayHandle::connections`,
//! `RelayHandle::close_connections`), between two turns of the worker's loop.
//!
//! A listing walks the worker's connections once: every one is summed into its route's
//! activity; those the filter selects compete for the `limit` places in a heap, so the worker
//! allocates in proportion to the limit, and builds the listed entries (with their route's
//! name) only for the winners.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

use super::Worker;
use crate::connection::Observed;
use crate::end::CloseReason;
use crate::observe::{ConnectionFilter, ConnectionList, ConnectionQuery, RouteActivity, sort_key};

/// A selected connection competing for a place in the listing.
struct Candidate {
    key: u64,
    id: u64,
    slab: usize,
    seen: Observed,
}

impl Candidate {
    /// Larger is listed first: the larger key, then the smaller id.
    fn rank(&self) -> (u64, Reverse<u64>) {
        (self.key, Reverse(self.id))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl Worker {
    /// This worker's part of a listing.
    pub(super) fn list(&mut self, query: &ConnectionQuery, now: Instant) -> ConnectionList {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut routes: Vec<RouteActivity> = Vec::new();
        // The worst kept candidate on top, to be pushed out by a better one.
        let mut kept: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
        let mut matched = 0;
        for (slab, connection) in &mut self.connections {
            let seen = connection.observe(now);
            let name = &connection.route.name;
            let activity = match routes.iter().position(|r| r.route == *name) {
                Some(index) => &mut routes[index],
                None => {
                    routes.push(RouteActivity {
                        route: name.clone(),
                        ..RouteActivity::default()
                    });
                    routes.last_mut().expect("just pushed")
                }
            };
            activity.open += 1;
            activity.bytes_up += seen.bytes_up;
            activity.bytes_down += seen.bytes_down;
            activity.rate_up += seen.rate_up;
            activity.rate_down += seen.rate_down;
            if !connection.selected_by(&query.filter) {
                continue;
            }
            matched += 1;
            if limit == 0 {
                continue;
            }
            let key = sort_key(
                query.sort,
                seen.age,
                seen.bytes_up.saturating_add(seen.bytes_down),
                seen.rate_up + seen.rate_down,
            );
            kept.push(Reverse(Candidate {
                key,
                id: connection.id,
                slab,
                seen,
            }));
            if kept.len() > limit {
                kept.pop();
            }
        }
        let connections = kept
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(c)| self.connections[c.slab].info(&c.seen))
            .collect();
        ConnectionList {
            connections,
            matched,
            routes,
            ..ConnectionList::default()
        }
    }

    /// Resets the connections `filter` selects (both sockets, `SO_LINGER` 0), the reason
    /// naming who asked; returns their ids.
    pub(super) fn close_selected(
        &mut self,
        filter: &ConnectionFilter,
        by: &str,
        now: Instant,
    ) -> Vec<u64> {
        if filter.is_everything() {
            return Vec::new();
        }
        let chosen: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, c)| c.selected_by(filter))
            .map(|(key, _)| key)
            .collect();
        let mut ids = Vec::with_capacity(chosen.len());
        for key in chosen {
            let connection = self.connections.remove(key);
            ids.push(connection.id);
            self.finish(
                connection,
                CloseReason::ClosedByOperator(by.to_owned()),
                now,
            );
        }
        ids
    }
}
