//! One direction's throttle: how many bytes its next read may ask for, or until when it
//! waits. No I/O; the time is passed in.
//!
//! Before a read the direction asks [`Throttle::allow`] with the room its buffer (pipe) has.
//! The throttle reserves up to that much (at most one burst) in each bucket that limits the
//! direction: its own (`rate_limit`), its client's (`client_rate_limit`) and its route's
//! (`route_rate_limit`). If every bucket has the bytes, the read asks for that many; else
//! the direction waits, holding its reservation, until the latest bucket will have them (the
//! worker parks it on a deadline: no busy wait, no thread). After the read, [`Throttle::used`]
//! gives back what the read did not take. A splice asks the kernel for no more than the
//! reservation, so a limited direction still never copies.
//!
//! A connection's own limit may instead be paced by the kernel on the direction's sending
//! socket (`ConnectionLimitBy`): [`Throttle::pacing_change`] tells the direction when to set
//! or lift that pacing, at its first read and after a reload that changed it.

use std::sync::Arc;
use std::time::Instant;

use super::bucket::Limit;
use super::limits::{ClientShare, ClientSlot, RouteLimits, Scope, Side};
use super::shared::{OwnBucket, Reserved};

/// What a direction may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowance {
    /// No limit applies: read as much as there is room for.
    Unlimited,
    /// Read at most this many bytes, then call [`Throttle::used`].
    Read(usize),
    /// Wait until `until` (the bytes are reserved). `held_back` is the number of bytes this
    /// call newly held back (0 when asked again while already waiting): with `until - now`,
    /// what the metrics count.
    Wait { until: Instant, held_back: u64 },
}

/// A reservation not yet used.
#[derive(Debug)]
struct Pending {
    bytes: u64,
    from: Instant,
    /// The limits it was charged under (connection, client, route), to give back to.
    charged: [Option<Limit>; 3],
    /// The reservations in the client's and the route's buckets.
    client: Option<Reserved>,
    route: Option<Reserved>,
}

/// One direction's throttle.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: Arc<RouteLimits>,
    client: Arc<ClientShare>,
    side: Side,
    own: OwnBucket,
    pending: Option<Pending>,
    /// The generation of the route's settings last looked at for kernel pacing (0: none yet;
    /// the route's settings start at 1).
    pacing_seen: u64,
    /// The pacing rate set on the sending socket, bytes a second (0: none).
    pacing_set: u64,
}

impl Throttle {
    /// The throttle of direction `side` of a connection holding `slot`.
    pub(crate) fn new(slot: &ClientSlot, side: Side) -> Self {
        Throttle {
            limits: Arc::clone(&slot.limits),
            client: Arc::clone(&slot.share),
            side,
            own: OwnBucket::new(slot.limits.origin()),
            pending: None,
            pacing_seen: 0,
            pacing_set: 0,
        }
    }

    /// The kernel pacing rate (bytes a second; 0: none) the direction's sending socket must be
    /// set to before its next write, when it differs from what was set: at the first read of
    /// a paced direction, and after a reload changed it. One atomic load when nothing
    /// changed.
    pub(crate) fn pacing_change(&mut self) -> Option<u64> {
        let generation = self.limits.generation();
        if generation == self.pacing_seen {
            return None;
        }
        self.pacing_seen = generation;
        let rate = self.limits.paced(self.side);
        if rate == self.pacing_set {
            return None;
        }
        self.pacing_set = rate;
        Some(rate)
    }

    /// How much a read with `room` bytes of space may ask for at `now`.
    pub(crate) fn allow(&mut self, room: usize, now: Instant) -> Allowance {
        if let Some(pending) = &self.pending {
            if pending.from > now {
                return Allowance::Wait {
                    until: pending.from,
                    held_back: 0,
                };
            }
            return Allowance::Read(
                usize::try_from(pending.bytes)
                    .unwrap_or(usize::MAX)
                    .min(room),
            );
        }
        let charged = self.limits.limits(self.side);
        let Some(largest) = charged
            .iter()
            .flatten()
            .map(|limit| limit.largest_reservation())
            .min()
        else {
            return Allowance::Unlimited;
        };
        let bytes = largest.min(room as u64);
        if bytes == 0 {
            return Allowance::Read(0);
        }
        let side = self.side as usize;
        let mut from = now;
        if let Some(limit) = charged[Scope::Connection as usize] {
            from = from.max(self.own.reserve(now, bytes, limit));
        }
        let mut shared = |bucket: &super::shared::SharedBucket, limit: Option<Limit>| {
            limit.map(|limit| {
                let (at, reserved) = bucket.reserve(now, bytes, limit);
                from = from.max(at);
                reserved
            })
        };
        let client = shared(&self.client.buckets[side], charged[Scope::Client as usize]);
        let route = shared(
            &self.limits.route_buckets[side],
            charged[Scope::Route as usize],
        );
        self.pending = Some(Pending {
            bytes,
            from,
            charged,
            client,
            route,
        });
        if from > now {
            Allowance::Wait {
                until: from,
                held_back: bytes,
            }
        } else {
            Allowance::Read(usize::try_from(bytes).unwrap_or(usize::MAX))
        }
    }

    /// The read after [`Allowance::Read`] moved `moved` bytes (0 after an error or the end of
    /// the stream): what it did not take is given back.
    pub(crate) fn used(&mut self, moved: usize, now: Instant) {
        if let Some(pending) = self.pending.take() {
            self.give_back(&pending, pending.bytes.saturating_sub(moved as u64), now);
        }
    }

    /// Until when the direction waits, if it does.
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.from)
    }

    fn give_back(&mut self, pending: &Pending, unused: u64, now: Instant) {
        if unused == 0 {
            return;
        }
        let side = self.side as usize;
        if let Some(limit) = pending.charged[Scope::Connection as usize] {
            self.own.refund(now, unused, limit);
        }
        if let (Some(limit), Some(reserved)) =
            (pending.charged[Scope::Client as usize], pending.client)
        {
            self.client.buckets[side].refund(reserved, now, unused, limit);
        }
        if let (Some(limit), Some(reserved)) =
            (pending.charged[Scope::Route as usize], pending.route)
        {
            self.limits.route_buckets[side].refund(reserved, now, unused, limit);
        }
    }
}

impl Drop for Throttle {
    /// A connection that ends while waiting gives its reservation back to the client's and
    /// the route's buckets, which other connections share.
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            // Given back as of its start: the bytes were never read.
            let at = pending.from;
            self.give_back(&pending, pending.bytes, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{ConnectionOptions, Rate, RateLimit};
    use std::time::Duration;

    fn limits(options: ConnectionOptions) -> Arc<RouteLimits> {
        let limits = Arc::new(RouteLimits::new(Instant::now()));
        limits.configure(&options, None);
        limits
    }

    fn rate(bytes: u64) -> Option<Rate> {
        Rate::bytes_per_second(bytes)
    }

    fn ip() -> std::net::IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    #[test]
    fn an_unlimited_direction_is_never_held() {
        let limits = limits(ConnectionOptions::default());
        let slot = limits.admit(ip()).unwrap();
        let mut up = Throttle::new(&slot, Side::Up);
        assert_eq!(up.allow(512 * 1024, Instant::now()), Allowance::Unlimited);
    }

    #[test]
    fn reads_ask_for_at_most_a_burst_then_wait_for_the_rate() {
        let limits = limits(ConnectionOptions {
            rate_limit: Some(RateLimit::new(rate(1_000_000), None).with_burst(10_000)),
            ..ConnectionOptions::default()
        });
        let slot = limits.admit(ip()).unwrap();
        let mut up = Throttle::new(&slot, Side::Up);
        let mut down = Throttle::new(&slot, Side::Down);
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(down.allow(65_536, now), Allowance::Unlimited);
        assert_eq!(up.allow(65_536, now), Allowance::Read(10_000));
        up.used(10_000, now);
        let Allowance::Wait {
            until: at,
            held_back: 10_000,
        } = up.allow(65_536, now)
        else {
            panic!("an empty bucket must wait");
        };
        assert_eq!(at, now + Duration::from_millis(10));
        assert_eq!(up.waiting_until(), Some(at));
        // Asking again before then: still waiting, nothing reserved (or counted) twice.
        assert_eq!(
            up.allow(65_536, now),
            Allowance::Wait {
                until: at,
                held_back: 0
            }
        );
        assert_eq!(up.allow(4_000, at), Allowance::Read(4_000));
        up.used(4_000, at);
        // The 6,000 bytes not taken were given back: the next read waits only for its own.
        assert_eq!(
            up.allow(65_536, at),
            Allowance::Wait {
                until: at + Duration::from_millis(4),
                held_back: 10_000
            }
        );
    }

    #[test]
    fn a_client_limit_is_shared_by_its_connections_and_a_route_limit_by_all() {
        let limits = limits(ConnectionOptions {
            client_rate_limit: Some(RateLimit::new(rate(1_000_000), None).with_burst(10_000)),
            route_rate_limit: Some(RateLimit::new(rate(2_000_000), None).with_burst(10_000)),
            ..ConnectionOptions::default()
        });
        let now = Instant::now() + Duration::from_secs(1);
        let a1 = limits.admit(ip()).unwrap();
        let a2 = limits.admit(ip()).unwrap();
        let b = limits.admit("192.0.2.8".parse().unwrap()).unwrap();
        let mut first = Throttle::new(&a1, Side::Up);
        let mut second = Throttle::new(&a2, Side::Up);
        let mut other = Throttle::new(&b, Side::Up);
        assert_eq!(first.allow(10_000, now), Allowance::Read(10_000));
        first.used(10_000, now);
        // The same client waits for its client's bucket (10 ms at 1 MB/s) ...
        assert_eq!(
            second.allow(10_000, now),
            Allowance::Wait {
                until: now + Duration::from_millis(10),
                held_back: 10_000
            }
        );
        // ... another client only for the route's, behind the 20 kB reserved in it (at 2 MB/s
        // with a 10 kB burst: 10 ms), not for the first client's.
        assert_eq!(
            other.allow(10_000, now),
            Allowance::Wait {
                until: now + Duration::from_millis(10),
                held_back: 10_000
            }
        );
    }

    #[test]
    fn a_throttle_dropped_while_waiting_gives_its_reservation_back() {
        let limits = limits(ConnectionOptions {
            route_rate_limit: Some(RateLimit::new(rate(1_000_000), None).with_burst(10_000)),
            ..ConnectionOptions::default()
        });
        let now = Instant::now() + Duration::from_secs(1);
        let a = limits.admit(ip()).unwrap();
        let mut first = Throttle::new(&a, Side::Up);
        let mut second = Throttle::new(&a, Side::Up);
        assert_eq!(first.allow(10_000, now), Allowance::Read(10_000));
        first.used(10_000, now);
        assert!(matches!(second.allow(10_000, now), Allowance::Wait { .. }));
        drop(second);
        let mut third = Throttle::new(&a, Side::Up);
        assert_eq!(
            third.allow(10_000, now),
            Allowance::Wait {
                until: now + Duration::from_millis(10),
                held_back: 10_000
            }
        );
    }

    #[test]
    fn a_reload_reaches_open_connections() {
        let limits = limits(ConnectionOptions::default());
        let slot = limits.admit(ip()).unwrap();
        let mut up = Throttle::new(&slot, Side::Up);
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(up.allow(65_536, now), Allowance::Unlimited);
        limits.configure(
            &ConnectionOptions {
                rate_limit: Some(RateLimit::new(rate(1_000_000), None).with_burst(1_000)),
                ..ConnectionOptions::default()
            },
            None,
        );
        assert_eq!(up.allow(65_536, now), Allowance::Read(1_000));
    }

    #[test]
    fn kernel_pacing_is_set_once_changed_by_a_reload_and_lifted() {
        let paced = |bytes| ConnectionOptions {
            rate_limit: Some(RateLimit::new(rate(bytes), None)),
            ..ConnectionOptions::default()
        };
        let limits = limits(paced(1_000_000));
        let slot = limits.admit(ip()).unwrap();
        let mut up = Throttle::new(&slot, Side::Up);
        let mut down = Throttle::new(&slot, Side::Down);
        let now = Instant::now();
        assert_eq!(up.pacing_change(), Some(1_000_000));
        assert_eq!(up.pacing_change(), None, "set once");
        assert_eq!(
            down.pacing_change(),
            None,
            "the unlimited side is never touched"
        );
        // The bucket does not count it too.
        assert_eq!(up.allow(65_536, now), Allowance::Unlimited);
        // A reload that keeps it: nothing to set.
        limits.configure(&paced(1_000_000), None);
        assert_eq!(up.pacing_change(), None);
        limits.configure(&paced(2_000_000), None);
        assert_eq!(up.pacing_change(), Some(2_000_000));
        // The limit removed: lifted.
        limits.configure(&ConnectionOptions::default(), None);
        assert_eq!(up.pacing_change(), Some(0));
        assert_eq!(up.pacing_change(), None);
    }
}
