//! The relay's share of the process's descriptors, so that an accepted client can always get
//! its upstream socket.
//!
//! Each connection holds two sockets, and in splice mode up to two pipes (two descriptors each)
//! while bytes are in flight. When the open-file limit (`RLIMIT_NOFILE`) runs out, the kernel
//! refuses whichever descriptor comes next: hostile testing under `prlimit --nofile=64` with
//! 200 clients saw accepted clients reset because their upstream socket could not be created.
//! So the relay counts what it holds against a budget taken at start:
//!
//! - accepting a client takes **two** descriptors from the budget (its socket and the upstream
//!   socket it will need) before `accept` is called; while the budget cannot give two, the
//!   worker stops accepting and clients wait in the kernel's backlog, exactly as at a
//!   connection limit; the two come back when the connection closes;
//! - a new pipe takes two; when it cannot, the transfer gets a user-space buffer instead
//!   (counted and logged as a pipe degradation), never a failure;
//! - a UDP session takes **one** (its connected upstream socket) when it opens, and gives it
//!   back when it ends, but only while half of the budget stays free: any datagram opens a
//!   session, from any address it claims (UDP sources are not verified), so a flood of new
//!   sources must not take the descriptors TCP clients are accepted with; a datagram that
//!   would take more is dropped and counted (`spliceway_udp_dropped_total{reason="descriptors"}`);
//! - the budget is the soft limit, less the descriptors open when the relay was built, less a
//!   reserve for everything else the process may open later (DNS client sockets, the metrics
//!   server, log files): [`RESERVED_DESCRIPTORS`] or one in sixteen of the limit, whichever is
//!   more, plus what the program asks to keep for itself with
//!   [`RelayBuilder::reserve_descriptors`](crate::RelayBuilder::reserve_descriptors).
//!
//! A program that opens many descriptors of its own beside the relay should bound them and
//! reserve that bound: then neither can take the other's. The `spliceway` command does so for
//! its metrics and health listener, which holds at most a fixed number of connections (plus
//! its listener, epoll instance and waker): however many clients crowd that port, the relay's
//! budget is untouched, and however many clients the relay carries, the metrics server keeps
//! its descriptors.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::resource::{Resource, getrlimit};

/// Descriptors left for the rest of the process, at least.
pub const RESERVED_DESCRIPTORS: usize = 16;

/// Descriptors one accepted connection is sure to need: its socket and its upstream socket.
pub(crate) const PER_CONNECTION: usize = 2;

/// Descriptors one pipe needs.
pub(crate) const PER_PIPE: usize = 2;

/// Descriptors one UDP session holds: its connected upstream socket (the client's datagrams
/// come in on the route's listening socket).
pub(crate) const PER_SESSION: usize = 1;

/// A count of descriptors the relay may still open.
#[derive(Debug)]
pub(crate) struct DescriptorBudget {
    capacity: usize,
    in_use: AtomicUsize,
}

impl DescriptorBudget {
    /// A budget of `capacity` descriptors.
    pub(crate) fn new(capacity: usize) -> Self {
        DescriptorBudget {
            capacity,
            in_use: AtomicUsize::new(0),
        }
    }

    /// The budget left by this process's open-file limit and the descriptors it holds now,
    /// after the reserve and `extra_reserve` more kept for the rest of the program. Without a
    /// limit to read, effectively unlimited.
    pub(crate) fn for_this_process(extra_reserve: usize) -> Self {
        let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return DescriptorBudget::new(usize::MAX);
        };
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count());
        let reserve = RESERVED_DESCRIPTORS
            .max(soft / 16)
            .saturating_add(extra_reserve);
        DescriptorBudget::new(soft.saturating_sub(open).saturating_sub(reserve))
    }

    /// Takes `n` descriptors if the budget has them.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        self.try_take_leaving(n, 0)
    }

    /// Takes `n` descriptors if the budget has them and still has `keep` free after them: a
    /// claim that must not crowd out others (UDP sessions leave half of the budget to TCP).
    pub(crate) fn try_take_leaving(&self, n: usize, keep: usize) -> bool {
        let mut current = self.in_use.load(Ordering::Relaxed);
        loop {
            let after = current.saturating_add(n).saturating_add(keep);
            if after > self.capacity {
                return false;
            }
            match self.in_use.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back `n` descriptors taken earlier.
    pub(crate) fn give_back(&self, n: usize) {
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Descriptors the relay may open in all.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_fits_and_gets_it_back() {
        let budget = DescriptorBudget::new(5);
        assert!(budget.try_take(PER_CONNECTION));
        assert!(budget.try_take(PER_CONNECTION));
        assert!(!budget.try_take(PER_CONNECTION), "4 + 2 > 5");
        assert!(budget.try_take(1));
        budget.give_back(PER_CONNECTION);
        assert!(budget.try_take(PER_PIPE));
        assert!(!budget.try_take(1));
        assert_eq!(budget.capacity(), 5);
    }

    #[test]
    fn a_claim_that_must_leave_some_free_stops_short_of_them() {
        let budget = DescriptorBudget::new(10);
        for _ in 0..5 {
            assert!(budget.try_take_leaving(PER_SESSION, 5));
        }
        assert!(!budget.try_take_leaving(PER_SESSION, 5), "5 + 1 + 5 > 10");
        // What is left is still there for claims that need not leave any.
        assert!(budget.try_take(PER_CONNECTION));
        assert!(budget.try_take(3));
        assert!(!budget.try_take(1));
        budget.give_back(PER_CONNECTION);
        assert!(!budget.try_take_leaving(PER_SESSION, 5), "8 in use");
        assert!(!budget.try_take_leaving(1, usize::MAX));
    }

    #[test]
    fn this_process_has_a_budget_below_its_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let budget = DescriptorBudget::for_this_process(0);
        assert!((budget.capacity() as u64) < soft);
    }

    #[test]
    fn an_extra_reserve_comes_off_the_budget() {
        let without = DescriptorBudget::for_this_process(0).capacity();
        let with = DescriptorBudget::for_this_process(67).capacity();
        // Other tests may open or close descriptors meanwhile: a few either way.
        assert!(
            with + 67 <= without + 8 && with + 67 + 8 >= without,
            "{without} without, {with} with 67 reserved"
        );
        assert_eq!(DescriptorBudget::for_this_process(usize::MAX).capacity(), 0);
    }
}
