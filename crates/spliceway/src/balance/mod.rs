//! A group of upstreams as the workers run it (issue 29): the choice of an upstream for each new
//! connection and the health every worker and the health checker share.
//!
//! | file | job |
//! | --- | --- |
//! | `schedule.rs` | the smooth weighted round-robin order, precomputed |
//! | `pick.rs` | which upstreams are candidates, and which one the balance picks (pure) |
//! | `health.rs` | one upstream's shared health and counters (atomics), and the rise/fall rule |
//! | `attempt.rs` | one connection's way through a group: current upstream, tried, attempts |
//! | `group.rs` | the group as it runs: its health, order and counter; choosing |
//!
//! Choosing takes no lock: a relaxed counter and relaxed reads of each upstream's state.

mod attempt;
mod group;
mod health;
mod pick;
mod schedule;

pub(crate) use attempt::GroupAttempt;
pub(crate) use group::GroupState;
pub(crate) use health::{Change, RiseFall, UpstreamHealth};
pub(crate) use pick::bit;
