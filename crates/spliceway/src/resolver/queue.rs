//! The lookups waiting and running, in a queue per group (route), served in turn, with the
//! bounds per group and per client and the waiters of each lookup.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::limits::MAX_RUNNING_LOOKUPS_PER_ROUTE;
use super::target::{Answer, ClientKey, Key};
use crate::route::LookupWithTtl;

/// A lookup waiting or running, with everyone waiting for its answer.
pub(super) struct Pending {
    pub(super) lookup: Arc<LookupWithTtl>,
    /// The cache time of a successful answer without a record TTL (the route's).
    pub(super) ttl: Duration,
    /// The client that started it (counted against [`MAX_PENDING_LOOKUPS_PER_CLIENT`]).
    pub(super) owner: ClientKey,
    pub(super) waiters: Vec<(u64, Answer)>,
    pub(super) running: bool,
}

/// One group's lookups: those waiting, in order, and those running.
#[derive(Default)]
pub(super) struct Group {
    /// Keys of the lookups not yet started, oldest first.
    pub(super) waiting: VecDeque<Key>,
    /// Every lookup of the group, waiting or running.
    pub(super) lookups: HashMap<Key, Pending>,
    pub(super) running: usize,
    /// Whether the group is in `Queue::ready`.
    pub(super) ready: bool,
}

impl Group {
    pub(super) fn can_start(&self) -> bool {
        !self.waiting.is_empty() && self.running < MAX_RUNNING_LOOKUPS_PER_ROUTE
    }
}

/// A lookup a thread took.
pub(super) struct Job {
    pub(super) group: String,
    pub(super) key: Key,
    pub(super) lookup: Arc<LookupWithTtl>,
    pub(super) ttl: Duration,
}

/// The groups and the threads serving them.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) groups: HashMap<String, Group>,
    /// Groups with a lookup that can start, served in turn.
    pub(super) ready: VecDeque<String>,
    /// Lookups waiting or running per client (by [`client_key`](super::target::client_key)).
    pub(super) clients: HashMap<ClientKey, usize>,
    pub(super) next_waiter: u64,
    /// Threads running, and how many of them wait for work.
    pub(super) threads: usize,
    pub(super) idle: usize,
    pub(super) stopped: bool,
}

impl Queue {
    /// Puts `name` in the round if it has a lookup that can start and is not there yet.
    pub(super) fn schedule(&mut self, name: &str) {
        if let Some(group) = self.groups.get_mut(name)
            && !group.ready
            && group.can_start()
        {
            group.ready = true;
            self.ready.push_back(name.to_string());
        }
    }

    /// Lookups that could start now.
    pub(super) fn startable(&self) -> usize {
        self.ready
            .iter()
            .filter_map(|name| self.groups.get(name))
            .map(|g| {
                g.waiting
                    .len()
                    .min(MAX_RUNNING_LOOKUPS_PER_ROUTE - g.running)
            })
            .sum()
    }

    /// The next lookup to run: the oldest waiting one of the next group in the round.
    pub(super) fn take_job(&mut self) -> Option<Job> {
        while let Some(name) = self.ready.pop_front() {
            let Some(group) = self.groups.get_mut(&name) else {
                continue;
            };
            group.ready = false;
            if group.running >= MAX_RUNNING_LOOKUPS_PER_ROUTE {
                continue;
            }
            let Some(key) = group.waiting.pop_front() else {
                continue;
            };
            let Some(pending) = group.lookups.get_mut(&key) else {
                continue;
            };
            pending.running = true;
            group.running += 1;
            let job = Job {
                lookup: Arc::clone(&pending.lookup),
                ttl: pending.ttl,
                key,
                group: name,
            };
            // To the back of the round: the other groups go first.
            self.schedule(&job.group);
            return Some(job);
        }
        None
    }

    /// A running lookup ended: its waiters, to be answered (outside the lock).
    pub(super) fn finish(&mut self, job: &Job) -> Vec<Answer> {
        let Some(group) = self.groups.get_mut(&job.group) else {
            return Vec::new();
        };
        group.running = group.running.saturating_sub(1);
        let waiters = match group.lookups.remove(&job.key) {
            Some(pending) => {
                self.release_client(pending.owner);
                pending.waiters.into_iter().map(|(_, a)| a).collect()
            }
            None => Vec::new(),
        };
        self.schedule(&job.group);
        self.forget_if_empty(&job.group);
        waiters
    }

    /// Withdraws one waiter; true when its lookup was waiting and is now dropped.
    pub(super) fn withdraw(&mut self, name: &str, key: &Key, waiter: u64) -> bool {
        let Some(group) = self.groups.get_mut(name) else {
            return false;
        };
        let Some(pending) = group.lookups.get_mut(key) else {
            return false;
        };
        pending.waiters.retain(|(id, _)| *id != waiter);
        if !pending.waiters.is_empty() || pending.running {
            return false;
        }
        let owner = pending.owner;
        group.lookups.remove(key);
        group.waiting.retain(|k| k != key);
        self.release_client(owner);
        self.forget_if_empty(name);
        true
    }

    pub(super) fn release_client(&mut self, client: ClientKey) {
        if let Entry::Occupied(mut entry) = self.clients.entry(client) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }

    /// Drops a group with no lookup left (groups are route names; a reload may retire them).
    pub(super) fn forget_if_empty(&mut self, name: &str) {
        if self.groups.get(name).is_some_and(|g| g.lookups.is_empty()) {
            self.groups.remove(name);
            self.ready.retain(|n| n != name);
        }
    }
}
