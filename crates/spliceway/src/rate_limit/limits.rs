//! A route's limits as its connections use them: the settings a reload changes in place
//! (so that connections already open follow them), the route's shared buckets, and the table
//! of its clients (each client's shared buckets and connection count).
//!
//! One `RouteLimits` lives as long as the route's counters, across reloads. The client table
//! is a `Mutex<HashMap>` touched twice per connection (admitted, closed), never per read.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bucket::Limit;
use super::shared::SharedBucket;
use crate::route::{ConnectionOptions, RateLimit};

/// The two directions of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Client → upstream.
    Up = 0,
    /// Upstream → client.
    Down = 1,
}

/// Whose bytes a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One connection (`rate_limit`).
    Connection = 0,
    /// Every connection of one client address, an IPv6 client by its /64 (`client_rate_limit`).
    Client = 1,
    /// Every connection of the route (`route_rate_limit`).
    Route = 2,
}

/// One direction's limit of one scope, as atomics a reload may change (rate 0: none).
#[derive(Debug, Default)]
struct LimitCell {
    rate: AtomicU64,
    burst: AtomicU64,
}

impl LimitCell {
    fn set(&self, limit: Option<Limit>) {
        let (rate, burst) = limit.map_or((0, 0), |l| (l.rate, l.burst));
        // The burst first: a reader that sees the new rate with the old burst gets a burst
        // that was valid a moment ago, never a zero one.
        self.burst.store(burst.max(1), Ordering::Relaxed);
        self.rate.store(rate, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Limit> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            rate => Some(Limit {
                rate,
                burst: self.burst.load(Ordering::Relaxed).max(1),
            }),
        }
    }
}

/// A client's share of a route: the buckets of its `client_rate_limit` and its connections.
#[derive(Debug)]
pub(crate) struct ClientShare {
    pub(crate) buckets: [SharedBucket; 2],
    /// Changed only under the table's lock.
    connections: AtomicUsize,
}

/// A route's limits, kept across reloads.
#[derive(Debug)]
pub(crate) struct RouteLimits {
    origin: Instant,
    /// `[scope][side]`.
    cells: [[LimitCell; 2]; 3],
    pub(crate) route_buckets: [SharedBucket; 2],
    clients: Mutex<HashMap<IpAddr, Arc<ClientShare>>>,
    /// `max_connections_per_client`; `usize::MAX`: none.
    max_per_client: AtomicUsize,
    /// Per side: the connection's own rate (bytes a second) when the kernel paces it on the
    /// sending socket rather than the bucket counting it; 0 when it does not.
    paced: [AtomicU64; 2],
    /// Incremented by every `configure`, so that a connection looks at `paced` again only
    /// after a reload (one load per read).
    generation: AtomicU64,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits::new(Instant::now())
    }
}

/// The new connection's client already holds `max_connections_per_client` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAtLimit {
    pub(crate) limit: usize,
}

impl RouteLimits {
    pub(crate) fn new(origin: Instant) -> Self {
        RouteLimits {
            origin,
            cells: Default::default(),
            route_buckets: [SharedBucket::new(origin), SharedBucket::new(origin)],
            clients: Mutex::default(),
            max_per_client: AtomicUsize::new(usize::MAX),
            paced: Default::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// Takes a route's settings (at build and at every reload): connections already open
    /// follow them from their next read, the kernel's pacing included.
    pub(crate) fn configure(&self, options: &ConnectionOptions, max_per_client: Option<usize>) {
        let (up, down) = options.kernel_paced();
        for (side, paced) in [(Side::Up, up), (Side::Down, down)] {
            let own = limit_of(options.rate_limit.as_ref(), side);
            let cells = &self.cells;
            cells[Scope::Connection as usize][side as usize].set(own.filter(|_| !paced));
            for (scope, limit) in [
                (Scope::Client, &options.client_rate_limit),
                (Scope::Route, &options.route_rate_limit),
            ] {
                cells[scope as usize][side as usize].set(limit_of(limit.as_ref(), side));
            }
            let rate = own.filter(|_| paced).map_or(0, |l| l.rate);
            self.paced[side as usize].store(rate, Ordering::Relaxed);
        }
        self.max_per_client
            .store(max_per_client.unwrap_or(usize::MAX), Ordering::Relaxed);
        // Release: a connection that sees the new generation sees the settings above.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The settings' generation (changed by every `configure`).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The rate the kernel paces `side` at, in bytes a second; 0 when it does not.
    pub(crate) fn paced(&self, side: Side) -> u64 {
        self.paced[side as usize].load(Ordering::Relaxed)
    }

    /// The limit of `scope` in direction `side` now.
    pub(crate) fn limit(&self, scope: Scope, side: Side) -> Option<Limit> {
        self.cells[scope as usize][side as usize].get()
    }

    /// Whether any limit applies to `side` (one relaxed load per scope).
    pub(crate) fn limits(&self, side: Side) -> [Option<Limit>; 3] {
        [
            self.limit(Scope::Connection, side),
            self.limit(Scope::Client, side),
            self.limit(Scope::Route, side),
        ]
    }

    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// Counts a connection of `client` (an IPv6 client by its /64), unless the client already
    /// holds `max_connections_per_client`.
    ///
    /// # Errors
    ///
    /// The client is at its limit; nothing was counted.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ClientSlot, ClientAtLimit> {
        let key = crate::address::client_key(client);
        let limit = self.max_per_client.load(Ordering::Relaxed);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let share = match clients.entry(key) {
            Entry::Occupied(entry) => {
                let share = entry.get();
                if share.connections.load(Ordering::Relaxed) >= limit {
                    return Err(ClientAtLimit { limit });
                }
                Arc::clone(share)
            }
            Entry::Vacant(entry) => {
                if limit == 0 {
                    return Err(ClientAtLimit { limit });
                }
                Arc::clone(entry.insert(Arc::new(ClientShare {
                    buckets: [
                        SharedBucket::new(self.origin),
                        SharedBucket::new(self.origin),
                    ],
                    connections: AtomicUsize::new(0),
                })))
            }
        };
        share.connections.fetch_add(1, Ordering::Relaxed);
        Ok(ClientSlot {
            limits: Arc::clone(self),
            key,
            share,
        })
    }

    /// Counts a connection of `client` whatever the limit: a connection the program handed
    /// over was accepted by the program, not by this route's listener.
    pub(crate) fn join(self: &Arc<Self>, client: IpAddr) -> ClientSlot {
        let key = crate::address::client_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let share = Arc::clone(clients.entry(key).or_insert_with(|| {
            Arc::new(ClientShare {
                buckets: [
                    SharedBucket::new(self.origin),
                    SharedBucket::new(self.origin),
                ],
                connections: AtomicUsize::new(0),
            })
        }));
        share.connections.fetch_add(1, Ordering::Relaxed);
        ClientSlot {
            limits: Arc::clone(self),
            key,
            share,
        }
    }

    /// Clients with at least one connection (tests).
    #[cfg(test)]
    pub(crate) fn clients(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// The limit of `side` in a route's `RateLimit`, with its burst.
fn limit_of(limit: Option<&RateLimit>, side: Side) -> Option<Limit> {
    let limit = limit?;
    let rate = match side {
        Side::Up => limit.up,
        Side::Down => limit.down,
    }?;
    Some(Limit {
        rate: rate.bytes(),
        burst: limit.burst_of(rate).max(1),
    })
}

/// One connection's place in its route's client table; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    pub(crate) limits: Arc<RouteLimits>,
    key: IpAddr,
    pub(crate) share: Arc<ClientShare>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self
            .limits
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.share.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            clients.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{ConnectionLimitBy, Rate};

    fn options(per_connection: Option<RateLimit>) -> ConnectionOptions {
        ConnectionOptions {
            rate_limit: per_connection,
            ..ConnectionOptions::default()
        }
    }

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_64() {
        let limits = Arc::new(RouteLimits::default());
        limits.configure(&ConnectionOptions::default(), Some(2));
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let second = limits.admit(b).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), ClientAtLimit { limit: 2 });
        let _third = limits.admit(other).unwrap();
        assert_eq!(limits.clients(), 2);
        drop(first);
        let _again = limits.admit(a).unwrap();
        drop(second);
        drop(_again);
        assert_eq!(
            limits.clients(),
            1,
            "the /64 is forgotten with its last connection"
        );
        // IPv4 and its IPv4-mapped spelling are one client.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _x = limits.admit(v4).unwrap();
        let _y = limits.admit(mapped).unwrap();
        assert!(limits.admit(v4).is_err());
    }

    #[test]
    fn a_reload_changes_the_limits_in_place() {
        let limits = RouteLimits::default();
        assert_eq!(limits.limits(Side::Up), [None, None, None]);
        let rate = Rate::bytes_per_second(1_000_000).unwrap();
        let mut bucket = options(Some(RateLimit::new(Some(rate), None)));
        bucket.connection_limit_by = ConnectionLimitBy::Bucket;
        limits.configure(&bucket, None);
        assert_eq!(
            limits.limit(Scope::Connection, Side::Up),
            Some(Limit {
                rate: 1_000_000,
                burst: 64 * 1024
            })
        );
        assert_eq!(limits.limit(Scope::Connection, Side::Down), None);
        limits.configure(&options(None), None);
        assert_eq!(limits.limit(Scope::Connection, Side::Up), None);
    }

    #[test]
    fn the_kernel_paces_a_connection_limit_only_when_nothing_shared_limits_it() {
        let rate = Rate::bytes_per_second(1_000_000);
        let own = RateLimit::new(rate, rate);
        let limits = RouteLimits::default();
        let before = limits.generation();
        limits.configure(&options(Some(own)), None);
        assert!(limits.generation() > before, "a reload is seen");
        assert_eq!(
            (limits.paced(Side::Up), limits.paced(Side::Down)),
            (1_000_000, 1_000_000)
        );
        assert_eq!(
            limits.limit(Scope::Connection, Side::Up),
            None,
            "not counted twice"
        );

        // A route limit on the way up: that side goes back to the bucket, down stays paced.
        let mut shared = options(Some(own));
        shared.route_rate_limit = Some(RateLimit::new(Rate::bytes_per_second(5_000_000), None));
        limits.configure(&shared, None);
        assert_eq!(limits.paced(Side::Up), 0);
        assert_eq!(limits.paced(Side::Down), 1_000_000);
        assert_eq!(
            limits.limit(Scope::Connection, Side::Up).map(|l| l.rate),
            Some(1_000_000)
        );

        // A named burst is the bucket's.
        limits.configure(&options(Some(own.with_burst(1 << 20))), None);
        assert_eq!((limits.paced(Side::Up), limits.paced(Side::Down)), (0, 0));

        // Forced either way.
        let mut bucket = options(Some(own));
        bucket.connection_limit_by = ConnectionLimitBy::Bucket;
        limits.configure(&bucket, None);
        assert_eq!(limits.paced(Side::Up), 0);
        let mut kernel = shared.clone();
        kernel.connection_limit_by = ConnectionLimitBy::KernelPacing;
        limits.configure(&kernel, None);
        assert_eq!(limits.paced(Side::Up), 1_000_000);
        assert_eq!(limits.limit(Scope::Connection, Side::Up), None);
        assert!(limits.limit(Scope::Route, Side::Up).is_some());

        // No limit: nothing paced.
        limits.configure(&options(None), None);
        assert_eq!((limits.paced(Side::Up), limits.paced(Side::Down)), (0, 0));
    }

    #[test]
    fn no_limit_admits_everyone() {
        let limits = Arc::new(RouteLimits::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| limits.admit(ip).unwrap()).collect();
        assert_eq!(limits.clients(), 1);
        drop(slots);
        assert_eq!(limits.clients(), 0);
    }
}
