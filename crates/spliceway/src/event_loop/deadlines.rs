//! Deadlines of a worker's connections (connect, idle, half-close, drain).
//!
//! A binary heap with lazy invalidation: moving bytes does not touch the heap (a connection only
//! records when it last moved a byte); when an entry comes due, the worker recomputes that
//! connection's real deadline and either acts or pushes the new one. Each connection remembers
//! the one entry that is current (`Connection::timer_at`), so stale entries are recognised and
//! dropped, and the heap holds about one entry per connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One pending deadline: when, which slab slot, which connection id (slots are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) key: usize,
    pub(crate) id: u64,
}

/// The heap of deadlines.
#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl DeadlineQueue {
    pub(crate) fn push(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_order_only_when_due() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::default();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            q.push(Deadline {
                at: t0 + Duration::from_millis(ms),
                key: i,
                id: i as u64,
            });
        }
        assert_eq!(q.next_at(), Some(t0 + Duration::from_millis(10)));
        assert!(q.pop_due(t0).is_none());
        let due: Vec<usize> = std::iter::from_fn(|| q.pop_due(t0 + Duration::from_millis(25)))
            .map(|d| d.key)
            .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(q.len(), 1);
    }
}
