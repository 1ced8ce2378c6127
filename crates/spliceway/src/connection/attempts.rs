//! Which upstream address a connection tries next: a pure type, no sockets.
//!
//! Connections spread over every resolved address by starting at a rotating index (the route's
//! counter), try at most the route's `connect_attempts` addresses, and never connect to one of
//! the relay's own listening addresses: the "S3 endpoint" trick done on the relay host itself
//! (its `/etc/hosts` pointing the upstream name at itself) would otherwise make every
//! connection loop through the relay until descriptors run out. The last failure is kept, so
//! the client's close reason says why the final attempt failed.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::end::CloseReason;
use crate::resolver::Target;
use crate::route::{AddressPolicy, NameOrigin};
use crate::state::route::loops_back;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextAttempt {
    /// Connect to this address.
    Connect(SocketAddr),
    /// This address is the relay's own listener `listen`; it was skipped (and recorded as the
    /// last failure). Log it and ask again.
    SelfLoop {
        /// The address skipped.
        upstream: SocketAddr,
        /// The listening address it would have reached.
        listen: SocketAddr,
    },
    /// The route's address policy refuses this address (`reason`); it was skipped (and
    /// recorded as the last failure). Log it and ask again.
    Refused {
        /// The address skipped.
        upstream: SocketAddr,
        /// Why, e.g. `"link-local"`.
        reason: &'static str,
    },
    /// No address is left: the connection fails with this reason.
    Exhausted(CloseReason),
}

/// The connect attempts of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectAttempts {
    targets: Arc<[Target]>,
    first: usize,
    tried: usize,
    max_attempts: usize,
    last_error: Option<CloseReason>,
}

impl ConnectAttempts {
    /// Attempts over `targets`, starting at `rotation` (modulo their number), at most
    /// `max_attempts` of them.
    pub(crate) fn new(targets: Arc<[Target]>, rotation: usize, max_attempts: usize) -> Self {
        let first = rotation % targets.len().max(1);
        ConnectAttempts {
            targets,
            first,
            tried: 0,
            max_attempts,
            last_error: None,
        }
    }

    /// The next address to try, skipping (and reporting) any of `listen` and, for a resolved
    /// name, any `policy` refuses for a name of that origin.
    pub(crate) fn next(
        &mut self,
        listen: &[SocketAddr],
        policy: Option<(&AddressPolicy, NameOrigin)>,
    ) -> NextAttempt {
        if self.tried >= self.max_attempts.min(self.targets.len()) {
            let reason = self
                .last_error
                .take()
                .unwrap_or_else(|| CloseReason::ConnectFailed("no address".into()));
            return NextAttempt::Exhausted(reason);
        }
        let target = self.targets[(self.first + self.tried) % self.targets.len()];
        self.tried += 1;
        // Where the client chose the destination (a strict policy), a destination that is the
        // relay itself is named a loop, not merely an address outside upstream_allow.
        let strict = policy.is_some_and(|(policy, _)| policy.is_strict());
        if strict && let Some(own) = loops_back(listen, &target) {
            self.last_error = Some(CloseReason::SelfLoop(target.addr));
            return NextAttempt::SelfLoop {
                upstream: target.addr,
                listen: own,
            };
        }
        if let Some((policy, origin)) = policy
            && let Some(reason) = policy.refusal(target.addr.ip(), origin)
        {
            self.last_error = Some(CloseReason::AddressPolicy(format!(
                "{} is {reason}",
                target.addr
            )));
            return NextAttempt::Refused {
                upstream: target.addr,
                reason,
            };
        }
        if let Some(own) = loops_back(listen, &target) {
            self.last_error = Some(CloseReason::SelfLoop(target.addr));
            return NextAttempt::SelfLoop {
                upstream: target.addr,
                listen: own,
            };
        }
        NextAttempt::Connect(target.addr)
    }

    /// The attempt last returned failed with `reason`.
    pub(crate) fn failed(&mut self, reason: CloseReason) {
        self.last_error = Some(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(addrs: &[(&str, bool)]) -> Arc<[Target]> {
        addrs
            .iter()
            .map(|(a, local)| Target {
                addr: a.parse().unwrap(),
                local: *local,
            })
            .collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drain(attempts: &mut ConnectAttempts, listen: &[SocketAddr]) -> Vec<NextAttempt> {
        let mut seen = Vec::new();
        for _ in 0..16 {
            let next = attempts.next(listen, None);
            let done = matches!(next, NextAttempt::Exhausted(_));
            seen.push(next);
            if done {
                break;
            }
        }
        seen
    }

    #[test]
    fn rotation_spreads_the_first_address_and_wraps_around() {
        let t = targets(&[
            ("10.0.0.1:443", false),
            ("10.0.0.2:443", false),
            ("10.0.0.3:443", false),
        ]);
        for rotation in 0..6 {
            let mut attempts = ConnectAttempts::new(Arc::clone(&t), rotation, 3);
            let order: Vec<SocketAddr> = drain(&mut attempts, &[])
                .into_iter()
                .filter_map(|n| match n {
                    NextAttempt::Connect(a) => Some(a),
                    _ => None,
                })
                .collect();
            let expected: Vec<SocketAddr> = (0..3).map(|i| t[(rotation + i) % 3].addr).collect();
            assert_eq!(order, expected, "rotation {rotation}");
        }
    }

    #[test]
    fn at_most_max_attempts_and_the_last_error_is_the_reason() {
        let t = targets(&[
            ("10.0.0.1:443", false),
            ("10.0.0.2:443", false),
            ("10.0.0.3:443", false),
        ]);
        let mut attempts = ConnectAttempts::new(t, 0, 2);
        assert_eq!(
            attempts.next(&[], None),
            NextAttempt::Connect(addr("10.0.0.1:443"))
        );
        attempts.failed(CloseReason::ConnectFailed("first".into()));
        assert_eq!(
            attempts.next(&[], None),
            NextAttempt::Connect(addr("10.0.0.2:443"))
        );
        attempts.failed(CloseReason::ConnectFailed("second".into()));
        assert_eq!(
            attempts.next(&[], None),
            NextAttempt::Exhausted(CloseReason::ConnectFailed("second".into()))
        );
    }

    #[test]
    fn fewer_addresses_than_attempts_and_no_addresses() {
        let mut one = ConnectAttempts::new(targets(&[("10.0.0.1:443", false)]), 7, 3);
        assert_eq!(
            one.next(&[], None),
            NextAttempt::Connect(addr("10.0.0.1:443"))
        );
        assert!(matches!(one.next(&[], None), NextAttempt::Exhausted(_)));
        let mut none = ConnectAttempts::new(targets(&[]), 0, 3);
        assert_eq!(
            none.next(&[], None),
            NextAttempt::Exhausted(CloseReason::ConnectFailed("no address".into()))
        );
    }

    #[test]
    fn own_listeners_are_skipped_and_reported() {
        let listen = [addr("0.0.0.0:443")];
        let t = targets(&[("10.0.0.5:443", true), ("52.219.0.1:443", false)]);
        let mut attempts = ConnectAttempts::new(t, 0, 3);
        assert_eq!(
            attempts.next(&listen, None),
            NextAttempt::SelfLoop {
                upstream: addr("10.0.0.5:443"),
                listen: listen[0],
            }
        );
        assert_eq!(
            attempts.next(&listen, None),
            NextAttempt::Connect(addr("52.219.0.1:443"))
        );
        // Only self-loops: the reason says so.
        let mut only = ConnectAttempts::new(targets(&[("127.0.0.1:443", true)]), 0, 3);
        assert!(matches!(
            only.next(&listen, None),
            NextAttempt::SelfLoop { .. }
        ));
        assert_eq!(
            only.next(&listen, None),
            NextAttempt::Exhausted(CloseReason::SelfLoop(addr("127.0.0.1:443")))
        );
    }

    #[test]
    fn the_address_policy_skips_refused_addresses_and_names_the_last() {
        let policy = AddressPolicy::default();
        let t = targets(&[("169.254.169.254:80", false), ("10.0.0.9:80", false)]);
        let mut attempts = ConnectAttempts::new(t, 0, 3);
        let with = Some((&policy, NameOrigin::Configured));
        assert_eq!(
            attempts.next(&[], with),
            NextAttempt::Refused {
                upstream: addr("169.254.169.254:80"),
                reason: "link-local"
            }
        );
        assert_eq!(
            attempts.next(&[], with),
            NextAttempt::Connect(addr("10.0.0.9:80"))
        );
        let mut only = ConnectAttempts::new(targets(&[("127.0.0.1:443", true)]), 0, 3);
        let client = Some((&policy, NameOrigin::Client));
        assert!(matches!(
            only.next(&[], client),
            NextAttempt::Refused { .. }
        ));
        assert!(matches!(
            only.next(&[], client),
            NextAttempt::Exhausted(CloseReason::AddressPolicy(_))
        ));
        // No policy for IP literals.
        let mut literal = ConnectAttempts::new(targets(&[("169.254.169.254:80", false)]), 0, 3);
        assert_eq!(
            literal.next(&[], None),
            NextAttempt::Connect(addr("169.254.169.254:80"))
        );
    }
}
