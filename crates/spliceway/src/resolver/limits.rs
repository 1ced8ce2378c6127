//! The resolver's limits: how many lookups may wait and run, and how long answers are kept.
//! Public, so that operators and tests can reason about them (docs/reliability.md).

use std::time::Duration;

/// How long a failed lookup is remembered when the lookup does not say (a `getaddrinfo`
/// failure, a DNS timeout), so a dead DNS server or a name that does not exist is not asked once
/// per client; short enough that a name that starts to exist works within seconds.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The longest a failure is remembered, whatever the lookup reports ([`NegativeAnswer`](crate::NegativeAnswer)): a
/// name created after a client asked for it works within this time.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Most lookup threads a relay runs at once.
pub const MAX_LOOKUP_THREADS: usize = 16;

/// Most lookups one route runs at once (below `MAX_LOOKUP_THREADS`: a route whose DNS hangs
/// cannot hold every thread).
pub const MAX_RUNNING_LOOKUPS_PER_ROUTE: usize = 4;

/// Most distinct lookups waiting or running for one route; a connection that needs another is
/// refused (reset, counted in `resolve_refused`).
pub const MAX_PENDING_LOOKUPS_PER_ROUTE: usize = 64;

/// Most distinct lookups waiting or running that one client address (an IPv6 client's /64)
/// started, over all routes; a connection of that client that needs another is refused.
pub const MAX_PENDING_LOOKUPS_PER_CLIENT: usize = 8;

/// Lookup threads kept when idle.
pub(super) const MIN_LOOKUP_THREADS: usize = 2;

/// How long a thread beyond [`MIN_LOOKUP_THREADS`] stays idle before it ends.
pub(super) const LOOKUP_THREAD_IDLE_EXIT: Duration = Duration::from_secs(30);

/// Shortest time a DNS answer is cached, even if its record says 0 (a burst of connections
/// must not become a burst of lookups); also the shortest negative time.
pub(super) const MIN_TTL: Duration = Duration::from_secs(1);

/// Most cached answers; past it (once expired answers are dropped) new answers are given to
/// their waiters but not cached.
pub(super) const MAX_CACHE_ENTRIES: usize = 65_536;

/// Cache size below which expired answers are left alone.
pub(super) const CACHE_PURGE_ENTRIES: usize = 1024;
