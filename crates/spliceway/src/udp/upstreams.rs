//! Where a UDP route's new sessions go: the addresses of its one upstream in turn, or a group
//! of upstreams (`[[route.upstreams]]`), balanced and judged as a TCP route's group is, by the
//! same [`GroupState`]: weights, backups, `balance`, and passive health. A session is the UDP
//! counterpart of a connection: it counts as open on its upstream while it lasts (for
//! `least_conn`), an ICMP error from the upstream is a failure (`max_fails` in a row mark it
//! down for `fail_timeout`), and its first answer shows the upstream reached. There is no
//! active check: a UDP service has no connect to try, and what a good answer is belongs to
//! its protocol.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::address::UpstreamAddr;
use crate::balance::{Change, GroupState, bit};
use crate::error::{Error, SettingsError};
use crate::route::{NameOrigin, Resolution, Route, Upstream};

/// A route's upstreams as new sessions see them: each one's resolved addresses, and the group
/// that chooses among them.
#[derive(Debug)]
pub(crate) struct UdpUpstreams {
    /// The usable addresses of each upstream, in the group's order (one entry for a route
    /// with one upstream). An upstream whose name gave none (yet) has none, and is passed by.
    addrs: Vec<Arc<[SocketAddr]>>,
    group: Option<Arc<GroupState>>,
}

/// The upstream a new session goes to.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub(crate) addr: SocketAddr,
    /// For a route with several upstreams, the member it is.
    pub(crate) member: Option<Member>,
}

/// One upstream of a group, as a session holds it: what the session's traffic tells its
/// health. (The group may be replaced by a reload meanwhile; a member that stays shares its
/// health with the new group.)
#[derive(Debug, Clone)]
pub(crate) struct Member {
    group: Arc<GroupState>,
    index: usize,
}

impl Member {
    /// A session to it opened: it counts as open there (for `least_conn`) until
    /// [`Member::closed`].
    pub(crate) fn opened(&self) {
        self.group.health[self.index].opened();
    }

    /// The session ended.
    pub(crate) fn closed(&self) {
        self.group.health[self.index].closed();
    }

    /// The session's first answer came: the failures in a row end; an upstream that passive
    /// health had marked down is logged as reached again (for route `route`).
    pub(crate) fn answered(&self, route: &str) {
        if self.group.health[self.index].reached() == Some(Change::ReachedAgain) {
            // log: not client input: once per mark of an upstream.
            tracing::info!(
                target: "spliceway::upstream",
                route,
                upstream = %self.group.group.servers[self.index].address,
                "upstream answered again after passive health had marked it down"
            );
        }
    }

    /// The upstream answered the session with an ICMP error (port unreachable) at `now`: a
    /// failure, and `max_fails` of them in a row mark it down for `fail_timeout` (logged for
    /// route `route`).
    pub(crate) fn unreachable(&self, route: &str, now: Instant) {
        let passive = self.group.group.passive;
        let change = self.group.health[self.index].connect_failed(
            now,
            passive.max_fails,
            passive.fail_timeout,
        );
        if change == Some(Change::MarkedDown) {
            // log: not client input: once per mark of an upstream.
            tracing::warn!(
                target: "spliceway::upstream",
                route,
                upstream = %self.group.group.servers[self.index].address,
                "upstream marked down for {:?}: {} ICMP error(s) in a row (max_fails); new \
                 sessions go to the other upstreams",
                passive.fail_timeout,
                passive.max_fails,
            );
        }
    }
}

impl UdpUpstreams {
    /// The group's state, for a route with several upstreams.
    pub(crate) fn group(&self) -> Option<&Arc<GroupState>> {
        self.group.as_ref()
    }

    /// The upstream of a new session from `client`: for one upstream, its addresses in turn
    /// (`turn` counts the route's sessions); for a group, the member the balance picks among
    /// those up (and with an address), then that member's addresses in turn.
    pub(crate) fn pick(&self, client: SocketAddr, turn: usize, now: Instant) -> Option<Picked> {
        let Some(group) = &self.group else {
            let addrs = self.addrs.first()?;
            return (!addrs.is_empty()).then(|| Picked {
                addr: addrs[turn % addrs.len()],
                member: None,
            });
        };
        let mut tried = 0;
        for _ in 0..self.addrs.len() {
            let i = group.choose(client.ip(), tried, now)?;
            tried |= bit(i);
            let addrs = &self.addrs[i];
            if !addrs.is_empty() {
                return Some(Picked {
                    addr: addrs[turn % addrs.len()],
                    member: Some(Member {
                        group: Arc::clone(group),
                        index: i,
                    }),
                });
            }
        }
        None
    }

    /// Whether an upstream is a name (so that looking it up again means something).
    pub(crate) fn has_name(route: &Route) -> bool {
        match &route.upstream {
            Upstream::Fixed(addr) => matches!(addr, UpstreamAddr::Name { .. }),
            Upstream::Group(group) => group
                .servers
                .iter()
                .any(|s| matches!(s.address, UpstreamAddr::Name { .. })),
            _ => false,
        }
    }
}

/// The upstreams of `route` as new sessions will see them, by the route's address policy: an
/// IP literal as written, a name's addresses less those the policy refuses (link-local, so
/// the metadata service, never; loopback allowed, as for a configured TCP upstream) and less
/// the relay's own UDP addresses (`own`). With `previous` (a refresh, or a reload of the
/// route), a group member keeps its health and counters, and a name that does not resolve
/// now keeps the addresses it had.
///
/// # Errors
///
/// The route's upstream is not one or a group of addresses or names; a literal is one of the
/// relay's own addresses; a lone upstream's name does not resolve to a usable address, or no
/// member of a group has one.
pub(crate) fn resolve(
    route: &Route,
    resolution: &Resolution,
    own: &[SocketAddr],
    previous: Option<&UdpUpstreams>,
) -> Result<UdpUpstreams, Error> {
    match &route.upstream {
        Upstream::Fixed(upstream) => Ok(UdpUpstreams {
            addrs: vec![addresses(route, upstream, resolution, own)?.into()],
            group: None,
        }),
        Upstream::Group(group) => {
            let previous_group = previous.and_then(|p| p.group.as_deref());
            let mut addrs = Vec::with_capacity(group.servers.len());
            let mut first_error = None;
            for server in &group.servers {
                match addresses(route, &server.address, resolution, own) {
                    Ok(found) => addrs.push(Arc::from(found)),
                    Err(e @ Error::SelfLoop { .. }) => return Err(e),
                    Err(e) => {
                        let kept = previous
                            .zip(previous_group)
                            .and_then(|(p, g)| {
                                let at = g
                                    .group
                                    .servers
                                    .iter()
                                    .position(|old| old.address == server.address)?;
                                p.addrs.get(at).cloned()
                            })
                            .unwrap_or_else(|| Arc::from(Vec::new()));
                        if kept.is_empty() {
                            first_error.get_or_insert(e);
                        }
                        addrs.push(kept);
                    }
                }
            }
            if addrs.iter().all(|a| a.is_empty())
                && let Some(e) = first_error
            {
                return Err(e);
            }
            let now = Instant::now();
            Ok(UdpUpstreams {
                addrs,
                group: Some(Arc::new(GroupState::new(
                    group.clone(),
                    previous_group,
                    now,
                ))),
            })
        }
        Upstream::Sni(_) => Err(SettingsError::UdpUnsupported {
            route: route.name.clone(),
            what: "an upstream chosen by TLS server name (SNI)",
        }
        .into()),
        Upstream::OriginalDestination | Upstream::HttpConnect(_) => {
            Err(SettingsError::UdpUnsupported {
                route: route.name.clone(),
                what: "an upstream the client chooses (original destination or HTTP CONNECT)",
            }
            .into())
        }
    }
}

/// The usable addresses of one upstream of `route` (see [`resolve`]).
fn addresses(
    route: &Route,
    upstream: &UpstreamAddr,
    resolution: &Resolution,
    own: &[SocketAddr],
) -> Result<Vec<SocketAddr>, Error> {
    let self_loop = |addr: SocketAddr| {
        own.iter()
            .copied()
            .find(|listen| crate::state::route::reached_listener(&[*listen], addr).is_some())
    };
    match upstream {
        UpstreamAddr::Ip(addr) => match self_loop(*addr) {
            Some(listen) => Err(Error::SelfLoop {
                route: route.name.clone(),
                upstream: *addr,
                listen,
            }),
            None => Ok(vec![*addr]),
        },
        UpstreamAddr::Name { host, port } => {
            let fail = |source: io::Error| Error::Resolve {
                upstream: upstream.to_string(),
                source,
            };
            let (found, _ttl) = resolution.lookup(host, *port).map_err(fail)?;
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| {
                    route
                        .address_policy
                        .refusal(a.ip(), NameOrigin::Configured)
                        .is_none()
                        && self_loop(*a).is_none()
                })
                .collect();
            if kept.is_empty() {
                return Err(fail(io::Error::other(format!(
                    "no usable address ({} found, each refused by the address policy or the \
                     relay's own)",
                    found.len()
                ))));
            }
            Ok(kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Protocol, UpstreamGroup, UpstreamServer};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn group_route(servers: &[&str]) -> Route {
        let group = UpstreamGroup::new(
            servers
                .iter()
                .map(|s| UpstreamServer::new(UpstreamAddr::parse(s).unwrap()))
                .collect(),
        );
        Route::group("dns", group).protocol(Protocol::Udp)
    }

    fn client() -> SocketAddr {
        "192.0.2.7:4000".parse().unwrap()
    }

    #[test]
    fn a_member_whose_name_fails_keeps_its_addresses_or_is_passed_by() {
        let answers = Arc::new(AtomicBool::new(true));
        let answering = Arc::clone(&answers);
        let resolution = Resolution::custom("test", move |host, port| {
            if host == "dns.test" && answering.load(Ordering::Relaxed) {
                Ok(vec![SocketAddr::from(([10, 0, 0, 2], port))])
            } else {
                Err(io::Error::other("no such name"))
            }
        });
        let route = group_route(&["10.0.0.1:53", "dns.test:53"]);
        let now = Instant::now();
        let first = resolve(&route, &resolution, &[], None).unwrap();
        let picked: Vec<SocketAddr> = (0..4)
            .map(|turn| first.pick(client(), turn, now).unwrap().addr)
            .collect();
        assert!(
            picked.contains(&"10.0.0.2:53".parse().unwrap()),
            "{picked:?}"
        );
        assert!(UdpUpstreams::has_name(&route));

        // The name stops resolving: a refresh keeps what it had.
        answers.store(false, Ordering::Relaxed);
        let refreshed = resolve(&route, &resolution, &[], Some(&first)).unwrap();
        assert_eq!(refreshed.addrs[1].len(), 1);
        // Without an earlier answer the member has no address and is passed by.
        let fresh = resolve(&route, &resolution, &[], None).unwrap();
        assert!(fresh.addrs[1].is_empty());
        for turn in 0..4 {
            let picked = fresh.pick(client(), turn, now).unwrap();
            assert_eq!(picked.addr, "10.0.0.1:53".parse().unwrap());
        }
        // No member with an address: the lookup's error.
        let only_names = group_route(&["dns.test:53", "other.test:53"]);
        assert!(matches!(
            resolve(&only_names, &resolution, &[], None),
            Err(Error::Resolve { .. })
        ));
    }

    #[test]
    fn a_refresh_keeps_each_members_health() {
        let route = group_route(&["10.0.0.1:53", "10.0.0.2:53"]);
        let resolution = Resolution::system();
        let now = Instant::now();
        let first = resolve(&route, &resolution, &[], None).unwrap();
        let member = first.pick(client(), 0, now).unwrap().member.unwrap();
        member.opened();
        let again = resolve(&route, &resolution, &[], Some(&first)).unwrap();
        let open: usize = again
            .group()
            .unwrap()
            .health
            .iter()
            .map(|h| h.open_connections())
            .sum();
        assert_eq!(open, 1, "the open session is still counted");
        member.closed();
        assert!(
            again
                .group()
                .unwrap()
                .health
                .iter()
                .all(|h| h.open_connections() == 0)
        );
    }

    #[test]
    fn a_literal_upstream_at_the_relays_own_address_is_a_loop() {
        let own: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let route = group_route(&["10.0.0.1:53", "127.0.0.1:5353"]);
        assert!(matches!(
            resolve(&route, &Resolution::system(), &[own], None),
            Err(Error::SelfLoop { .. })
        ));
    }
}
