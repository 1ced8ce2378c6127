//! Turning routes into running state: checking them, resolving known upstream names, binding
//! listening sockets. Shared by [`RelayBuilder::build`](super::RelayBuilder::build) and
//! [`RelayHandle::reload`](super::RelayHandle::reload).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use crate::address::UpstreamAddr;
use crate::balance::GroupState;
use crate::error::{Error, SettingsError};
use crate::listener;
use crate::resolver::{Resolver, Target, is_local};
use crate::route::{AddressPolicy, ConnectionOptions, Protocol, Resolution, Route, Upstream};
use crate::socket_options::check_congestion;
use crate::state::route::{RouteCounters, RouteState, loops_back};
use crate::sys;

/// Settings fixed for the relay's lifetime: chosen when it is built, used again by every
/// reload (which cannot change them).
#[derive(Debug, Clone)]
pub(super) struct LifetimeSettings {
    /// Worker threads (event loops), each with its own listener per address.
    pub(super) threads: usize,
    /// Accept-queue length of every listener.
    pub(super) backlog: i32,
    /// The resolver of routes that have none of their own.
    pub(super) resolution: Resolution,
}

/// Checks routes for consistency. No routes at all is consistent: such a relay serves only
/// the connections handed to it ([`RelayHandle::adopt`](super::RelayHandle::adopt)).
pub(super) fn validate(routes: &[Route]) -> Result<(), Error> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for route in routes {
        if !names.insert(route.name.as_str()) {
            return Err(SettingsError::DuplicateRoute {
                route: route.name.clone(),
            }
            .into());
        }
        if route.listen.is_empty() {
            return Err(SettingsError::NoListenAddress {
                route: route.name.clone(),
            }
            .into());
        }
        for addr in &route.listen {
            // TCP and UDP routes may share a port number: they are different sockets.
            if addr.port() != 0 && !addrs.insert((route.protocol, *addr)) {
                return Err(SettingsError::ListenedTwice { addr: *addr }.into());
            }
        }
        if let Upstream::Sni(table) = &route.upstream
            && table.entries.is_empty()
        {
            return Err(SettingsError::EmptySniTable {
                route: route.name.clone(),
            }
            .into());
        }
        if route.protocol == Protocol::Udp {
            validate_udp(route)?;
            continue;
        }
        if let Upstream::Group(group) = &route.upstream {
            group.validate().map_err(|problem| SettingsError::Group {
                route: route.name.clone(),
                problem,
            })?;
        }
        validate_options(&route.options, &route.name)?;
        validate_proxy_peers(route)?;
        validate_client_choice(route)?;
    }
    Ok(())
}

/// A route where the client chooses the destination must say which ranges it may reach (or it
/// is an open relay), and a CONNECT route which names.
fn validate_client_choice(route: &Route) -> Result<(), SettingsError> {
    if !route.upstream.client_chooses() {
        return Ok(());
    }
    let name = || route.name.clone();
    if route.address_policy.allowed().is_empty() {
        return Err(SettingsError::UpstreamAllowMissing { route: name() });
    }
    if let Upstream::HttpConnect(table) = &route.upstream {
        if table.allow.is_empty() {
            return Err(SettingsError::ConnectAllowEmpty { route: name() });
        }
        if table.request_timeout.is_zero() {
            return Err(SettingsError::RequestTimeout { route: name() });
        }
    }
    Ok(())
}

/// What a UDP route cannot have: an upstream chosen by TLS server name or by the client, a
/// chosen source, active health checks, PROXY protocol headers; and its group must be valid.
fn validate_udp(route: &Route) -> Result<(), SettingsError> {
    route.udp.validate(&route.name)?;
    if let Upstream::Group(group) = &route.upstream {
        group.validate().map_err(|problem| SettingsError::Group {
            route: route.name.clone(),
            problem,
        })?;
    }
    let unsupported = if matches!(route.upstream, Upstream::Sni(_)) {
        Some("an upstream chosen by TLS server name (SNI)")
    } else if route.upstream.client_chooses() {
        Some("an upstream the client chooses (original destination or HTTP CONNECT)")
    } else if route.options.source != crate::route::Source::Auto || route.options.transparent {
        Some("a chosen source address or a transparent listener")
    } else if matches!(&route.upstream, Upstream::Group(group) if group.check.is_some()) {
        Some(
            "active health checks (a UDP upstream is judged by its sessions: ICMP errors count \
             against it, max_fails and fail_timeout)",
        )
    } else if route.options.accept_proxy.is_some() || route.options.send_proxy.is_some() {
        Some("PROXY protocol headers")
    } else {
        None
    };
    match unsupported {
        Some(what) => Err(SettingsError::UdpUnsupported {
            route: route.name.clone(),
            what,
        }),
        None => Ok(()),
    }
}

/// A route that reads PROXY headers must say whose it believes: otherwise any client could
/// claim any address, to the access lists, the log and the upstream.
fn validate_proxy_peers(route: &Route) -> Result<(), SettingsError> {
    if route.options.accept_proxy.is_none() {
        return Ok(());
    }
    match route.proxy_peers() {
        None => Err(SettingsError::ProxyPeersMissing {
            route: route.name.clone(),
        }),
        Some([]) => Err(SettingsError::ProxyPeersEmpty {
            route: route.name.clone(),
        }),
        Some(_) => Ok(()),
    }
}

/// Checks a route's connection options: their values (`ConnectionOptions::validate`), then
/// what only the kernel can answer (whether this process may set the congestion control).
fn validate_options(options: &ConnectionOptions, route: &str) -> Result<(), SettingsError> {
    options.validate(route)?;
    if let Some(name) = &options.congestion {
        check_congestion(name).map_err(|problem| SettingsError::Congestion {
            route: route.to_string(),
            problem,
        })?;
    }
    Ok(())
}

/// Resolves every upstream name known in advance (fixed upstreams, explicit SNI upstreams),
/// so that typos fail at start-up (or make a reload fail) instead of failing every connection.
pub(super) fn resolve_upstreams(
    routes: &[Route],
    resolver: &Resolver,
    default: &Resolution,
) -> Result<(), Error> {
    for route in routes {
        let resolution = route.resolution.as_ref().unwrap_or(default);
        let names: Vec<&UpstreamAddr> = match &route.upstream {
            Upstream::Fixed(addr) => vec![addr],
            Upstream::Sni(table) => table
                .entries
                .iter()
                .filter_map(|e| e.upstream.as_ref())
                .collect(),
            // The client names the destination: nothing to resolve before it does.
            Upstream::OriginalDestination | Upstream::HttpConnect(_) => Vec::new(),
            Upstream::Group(group) => group.servers.iter().map(|s| &s.address).collect(),
        };
        for upstream in names {
            if let UpstreamAddr::Name { host, port } = upstream {
                resolver
                    .resolve_blocking(resolution, host, *port, route.options.resolve_cache_ttl)
                    .map_err(|source| Error::Resolve {
                        upstream: upstream.to_string(),
                        source,
                    })?;
            }
        }
    }
    Ok(())
}

/// Binds `addr` once per worker, after checking that nothing else listens there. `own` are the
/// relay's current listeners: an address that overlaps one of them (the same port, one of the
/// two the wildcard) is not probed, because the relay's own socket would fail the probe; every
/// listener has `SO_REUSEPORT`, so a reload can bind `0.0.0.0:P` while `127.0.0.1:P` still
/// listens, and close the old one after.
pub(super) fn bind_all(
    addr: SocketAddr,
    settings: &LifetimeSettings,
    own: &[SocketAddr],
    transparent: bool,
) -> Result<Vec<std::net::TcpListener>, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let overlaps_own = own.iter().any(|o| {
        o.port() == addr.port()
            && o.is_ipv4() == addr.is_ipv4()
            && (o.ip().is_unspecified() || addr.ip().is_unspecified() || o.ip() == addr.ip())
    });
    if !overlaps_own {
        listener::probe_free(addr).map_err(bind_error)?;
    }
    let first = listener::bind(addr, true, settings.backlog).map_err(bind_error)?;
    let actual = first.local_addr().map_err(bind_error)?;
    let mut sockets = vec![first];
    for _ in 1..settings.threads {
        sockets.push(
            listener::bind(actual, true, settings.backlog).map_err(|source| Error::Bind {
                addr: actual,
                source,
            })?,
        );
    }
    if transparent {
        make_transparent(addr, &sockets)?;
    }
    Ok(sockets)
}

/// Sets `IP_TRANSPARENT` on a route's listeners (`transparent = true`), so that `TPROXY` may
/// deliver connections addressed to other hosts to them.
pub(super) fn make_transparent(
    addr: SocketAddr,
    sockets: &[std::net::TcpListener],
) -> Result<(), Error> {
    for socket in sockets {
        sys::set_transparent(socket, addr.is_ipv6()).map_err(|source| Error::Bind {
            addr,
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "cannot make the listener transparent (IP_TRANSPARENT needs \
                     CAP_NET_ADMIN): {source}"
                ),
            ),
        })?;
    }
    Ok(())
}

/// Duplicates of `sockets` (the same sockets, new descriptors), tagged with their address.
pub(super) fn copies(
    addr: SocketAddr,
    sockets: &[std::net::TcpListener],
) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
    sockets.iter().map(|s| Ok((addr, s.try_clone()?))).collect()
}

/// The runtime state of a route bound to `listen`, in a relay listening on `relay_listeners`
/// (all routes).
pub(super) fn route_state(
    route: &Route,
    listen: Vec<SocketAddr>,
    relay_listeners: &Arc<[SocketAddr]>,
    counters: Arc<RouteCounters>,
    previous_group: Option<&GroupState>,
    settings: &LifetimeSettings,
) -> Result<RouteState, Error> {
    let literal_targets = match &route.upstream {
        Upstream::Fixed(UpstreamAddr::Ip(addr)) => Some(Arc::from(vec![Target {
            addr: *addr,
            local: is_local(addr.ip()),
        }])),
        _ => None,
    };
    let state = RouteState {
        name: route.name.clone(),
        upstream: route.upstream.clone(),
        options: route.options.clone(),
        access: route.access.clone(),
        proxy_from: route.proxy_from.clone(),
        resolution: route
            .resolution
            .clone()
            .unwrap_or_else(|| settings.resolution.clone()),
        // Where the client chooses the destination, upstream_allow is all it may reach.
        address_policy: if route.upstream.client_chooses() {
            AddressPolicy::strict(route.address_policy.allowed().to_vec())
        } else {
            route.address_policy.clone()
        },
        listen,
        configured_listen: route.listen.clone(),
        relay_listeners: Arc::clone(relay_listeners),
        literal_targets,
        counters,
        max_connections: route.max_connections,
        max_connections_per_client: route.max_connections_per_client,
        next_target: AtomicUsize::new(0),
        group: match &route.upstream {
            Upstream::Group(group) => Some(Arc::new(GroupState::new(
                group.clone(),
                previous_group,
                Instant::now(),
            ))),
            _ => None,
        },
    };
    // A literal upstream that is any listener of the relay (this route's, or another's: two
    // routes relaying to each other) is refused now rather than on every connection.
    if let Some(targets) = &state.literal_targets
        && let Some(listen) = loops_back(relay_listeners, &targets[0])
    {
        return Err(Error::SelfLoop {
            route: state.name.clone(),
            upstream: targets[0].addr,
            listen,
        });
    }
    if let Upstream::Group(group) = &route.upstream {
        for server in &group.servers {
            if let UpstreamAddr::Ip(addr) = server.address
                && let Some(listen) = crate::state::route::reached_listener(relay_listeners, addr)
            {
                return Err(Error::SelfLoop {
                    route: state.name.clone(),
                    upstream: addr,
                    listen,
                });
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_control_is_checked_when_the_route_is_built() {
        let with = |name: &str| ConnectionOptions {
            congestion: Some(name.to_string()),
            ..ConnectionOptions::default()
        };
        // reno is built into every kernel and allowed to every user.
        assert!(validate_options(&with("reno"), "r").is_ok());
        let err = validate_options(&with("no-such-cc"), "r")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("route \"r\"") && err.contains("not available"),
            "{err}"
        );
        let err = validate_options(&with(""), "r").unwrap_err().to_string();
        assert!(err.contains("not a valid name"), "{err}");
        let err = validate_options(&with("sixteen-chars-xx"), "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid name"), "{err}");
    }
}
