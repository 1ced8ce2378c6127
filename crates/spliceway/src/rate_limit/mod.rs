//! Bandwidth limits that keep zero copy: token buckets a direction reserves its next read in
//! (`bucket.rs`: the arithmetic; `shared.rs`: lock-free buckets shared across workers and a
//! connection's own), a route's limits and client table, changed in place by a reload
//! (`limits.rs`), and one direction's throttle (`throttle.rs`). No I/O anywhere: the
//! direction's I/O half asks the throttle how much to read, and the worker parks a waiting
//! direction on its deadline heap.

mod bucket;
mod limits;
mod shared;
mod throttle;

pub(crate) use limits::{ClientSlot, RouteLimits, Side};
pub(crate) use throttle::{Allowance, Throttle};
