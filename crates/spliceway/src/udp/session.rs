//! The session table: one session per (listening socket, client address), found by the
//! client's address for each datagram, and counted per route and per client IP address so
//! that the limits hold.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use slab::Slab;

use super::send::Segmentation;
use super::upstreams::Member;

/// Why a session ended: its counter and the `end` field of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// Silent both ways for `udp_idle_timeout`.
    IdleTimeout,
    /// The upstream answered with an ICMP error (port unreachable, host unreachable).
    Unreachable,
    /// The drain ran out of time, or the relay stopped at once.
    Stopped,
    /// A reload removed the route, or moved it off the address the client wrote to: the
    /// socket its answers would leave through is closed.
    Removed,
    /// An operator ended it (`spliceway close --udp`); the text says who asked.
    Operator,
    /// Every datagram of it had its `udp_responses` answers (or, with 0, had left).
    Responses,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionEnd::IdleTimeout => "idle timeout",
            SessionEnd::Unreachable => "upstream unreachable (ICMP)",
            SessionEnd::Stopped => "relay stopped",
            SessionEnd::Removed => "route removed or moved (reload)",
            SessionEnd::Operator => "ended by the operator",
            SessionEnd::Responses => "answered (udp_responses)",
        })
    }
}

/// Why a datagram from a client without a session opened none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Denied,
    SessionLimit,
    ClientLimit,
    Draining,
    NoUpstream,
    /// The session's socket would take descriptors UDP sessions may not hold.
    Descriptors,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Denied => "refused by the access lists",
            Refusal::SessionLimit => "the route has max_sessions sessions",
            Refusal::ClientLimit => "the client has max_sessions_per_client sessions",
            Refusal::Draining => "the relay is draining",
            Refusal::NoUpstream => "no upstream address or socket",
            Refusal::Descriptors => {
                "UDP sessions hold all the descriptors they may (half of the relay's budget \
                 stays for TCP connections; raise the open-file limit, LimitNOFILE=)"
            }
        })
    }
}

/// Traffic of one session, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub(crate) datagrams_up: u64,
    pub(crate) bytes_up: u64,
    pub(crate) datagrams_down: u64,
    pub(crate) bytes_down: u64,
}

impl Traffic {
    /// Whether every datagram up has had `responses` answers (see
    /// [`UdpOptions::responses`](crate::route::UdpOptions::responses)); never without a count.
    pub(crate) fn answered(&self, responses: Option<u32>) -> bool {
        responses.is_some_and(|n| {
            self.datagrams_up > 0
                && self.datagrams_down >= self.datagrams_up.saturating_mul(u64::from(n))
        })
    }
}

/// One session: a client address on one listening socket, and its upstream socket.
#[derive(Debug)]
pub(crate) struct Session<S> {
    pub(crate) client: SocketAddr,
    /// Index of the listening socket the client wrote to (answers leave through it).
    pub(crate) listener: usize,
    pub(crate) route: usize,
    pub(crate) upstream: S,
    pub(crate) upstream_addr: SocketAddr,
    pub(crate) started: Instant,
    pub(crate) last_active: Instant,
    pub(crate) traffic: Traffic,
    /// The trains datagrams to the upstream may go in on its socket.
    pub(crate) segmentation: Segmentation,
    /// The group and member it went to, for a route with several upstreams: the session
    /// counts as open there until it ends.
    pub(crate) member: Option<Member>,
    /// Whether an answer came: the first one shows the upstream reached (told once to its
    /// group member).
    pub(crate) reached: bool,
    /// The route's `udp_responses` when it started (a reload applies to new sessions).
    pub(crate) responses: Option<u32>,
}

/// Sessions by key (the upstream socket's token), by client, and their counts.
#[derive(Debug)]
pub(crate) struct Sessions<S> {
    slab: Slab<Session<S>>,
    by_client: HashMap<(usize, SocketAddr), usize>,
    /// Sessions per route key (grown as routes are added by reloads).
    per_route: Vec<usize>,
    per_client: HashMap<(usize, IpAddr), usize>,
}

impl<S> Default for Sessions<S> {
    fn default() -> Self {
        Sessions {
            slab: Slab::new(),
            by_client: HashMap::new(),
            per_route: Vec::new(),
            per_client: HashMap::new(),
        }
    }
}

impl<S> Sessions<S> {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The session of `client` on listening socket `listener`.
    pub(crate) fn find(&self, listener: usize, client: SocketAddr) -> Option<usize> {
        self.by_client.get(&(listener, client)).copied()
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Session<S>> {
        self.slab.get_mut(key)
    }

    pub(crate) fn get(&self, key: usize) -> Option<&Session<S>> {
        self.slab.get(key)
    }

    /// Whether `route` may open one more session for `ip` under these limits.
    pub(crate) fn admits(
        &self,
        route: usize,
        ip: IpAddr,
        max_sessions: Option<usize>,
        max_per_client: Option<usize>,
    ) -> Result<(), Refusal> {
        let of_route = self.per_route.get(route).copied().unwrap_or(0);
        if max_sessions.is_some_and(|limit| of_route >= limit) {
            return Err(Refusal::SessionLimit);
        }
        let of_client = self.per_client.get(&(route, ip)).copied().unwrap_or(0);
        if max_per_client.is_some_and(|limit| of_client >= limit) {
            return Err(Refusal::ClientLimit);
        }
        Ok(())
    }

    /// The key the next inserted session will have (its upstream socket's token).
    pub(crate) fn next_key(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Adds a session; returns its key.
    pub(crate) fn insert(&mut self, session: Session<S>) -> usize {
        let id = (session.listener, session.client);
        let counted = (session.route, session.client.ip());
        let route = session.route;
        let key = self.slab.insert(session);
        self.by_client.insert(id, key);
        if self.per_route.len() <= route {
            self.per_route.resize(route + 1, 0);
        }
        self.per_route[route] += 1;
        *self.per_client.entry(counted).or_insert(0) += 1;
        key
    }

    /// Takes a session out, releasing its places in the limits.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Session<S>> {
        let session = self.slab.try_remove(key)?;
        self.by_client.remove(&(session.listener, session.client));
        self.per_route[session.route] -= 1;
        let counted = (session.route, session.client.ip());
        if let Some(n) = self.per_client.get_mut(&counted) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&counted);
            }
        }
        Some(session)
    }

    /// The keys of sessions silent since before their route's deadline, into `out`.
    pub(crate) fn expired(&self, deadline_of_route: &[Option<Instant>], out: &mut Vec<usize>) {
        out.clear();
        for (key, session) in &self.slab {
            if deadline_of_route
                .get(session.route)
                .copied()
                .flatten()
                .is_some_and(|before| session.last_active <= before)
            {
                out.push(key);
            }
        }
    }

    /// The keys of the sessions `select` picks, into `out`.
    /// Every open session.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session<S>> {
        self.slab.iter().map(|(_, session)| session)
    }

    pub(crate) fn matching(&self, select: impl Fn(&Session<S>) -> bool, out: &mut Vec<usize>) {
        out.clear();
        out.extend(
            self.slab
                .iter()
                .filter(|(_, s)| select(s))
                .map(|(key, _)| key),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(route: usize, client: &str, at: Instant) -> Session<()> {
        Session {
            client: client.parse().unwrap(),
            listener: route,
            route,
            upstream: (),
            upstream_addr: "127.0.0.1:53".parse().unwrap(),
            started: at,
            last_active: at,
            traffic: Traffic::default(),
            segmentation: Segmentation::OFF,
            member: None,
            reached: false,
            responses: None,
        }
    }

    #[test]
    fn limits_count_per_route_and_per_client_address_and_are_released() {
        let now = Instant::now();
        let mut table = Sessions::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(table.admits(0, ip, Some(2), Some(1)), Ok(()));
        let a = table.insert(session(0, "10.0.0.1:1000", now));
        assert_eq!(
            table.admits(0, ip, Some(2), Some(1)),
            Err(Refusal::ClientLimit),
            "the same address from another port"
        );
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        table.insert(session(0, "10.0.0.2:1000", now));
        assert_eq!(
            table.admits(0, other, Some(2), None),
            Err(Refusal::SessionLimit)
        );
        assert_eq!(
            table.admits(1, ip, Some(2), Some(1)),
            Ok(()),
            "another route"
        );
        assert_eq!(table.find(0, "10.0.0.1:1000".parse().unwrap()), Some(a));
        assert!(table.remove(a).is_some());
        assert!(table.remove(a).is_none(), "removed once");
        assert_eq!(table.find(0, "10.0.0.1:1000".parse().unwrap()), None);
        assert_eq!(table.admits(0, ip, Some(2), Some(1)), Ok(()));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn only_sessions_silent_past_their_route_s_deadline_expire() {
        let t0 = Instant::now();
        let mut table = Sessions::default();
        let old = table.insert(session(0, "10.0.0.1:1", t0));
        let fresh = table.insert(session(0, "10.0.0.1:2", t0 + Duration::from_secs(5)));
        let other_route = table.insert(session(1, "10.0.0.1:3", t0));
        let mut out = Vec::new();
        table.expired(&[Some(t0 + Duration::from_secs(1)), None], &mut out);
        assert_eq!(out, vec![old]);
        assert!(!out.contains(&fresh) && !out.contains(&other_route));
    }

    #[test]
    fn a_session_is_answered_once_each_datagram_has_its_count() {
        let traffic = |up, down| Traffic {
            datagrams_up: up,
            datagrams_down: down,
            ..Traffic::default()
        };
        assert!(!traffic(1, 5).answered(None), "without a count, never");
        assert!(traffic(1, 1).answered(Some(1)));
        assert!(!traffic(2, 1).answered(Some(1)));
        assert!(!traffic(2, 3).answered(Some(2)));
        assert!(traffic(2, 4).answered(Some(2)));
        assert!(traffic(3, 0).answered(Some(0)), "none expected");
        assert!(!traffic(0, 0).answered(Some(0)), "nothing sent yet");
    }
}
