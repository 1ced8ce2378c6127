//! Turning routes into running state: checking them, resolving known upstream names, binding
//! listening sockets. Shared by [`RelayBuilder::build`] and [`RelayHandle::reload`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::address::UpstreamAddr;

/// Checks routes for consistency.
pub(super) fn validate(routes: &[Route]) -> Result<(), Error> {
    if routes.is_empty() {
        return Err(Error::Invalid("no routes".into()));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for route in routes {
        if !names.insert(route.name.as_str()) {
            return Err(Error::Invalid(format!(
                "two routes are named {:?}",
                route.name
            )));
        }
        if route.listen.is_empty() {
            return Err(Error::Invalid(format!(
                "route {:?} has no listen address",
                route.name
            )));
        }
        for addr in &route.listen {
            if addr.port() != 0 && !addrs.insert(*addr) {
                return Err(Error::Invalid(format!("{addr} is listed twice")));
            }
        }
        if let Upstream::Sni(table) = &route.upstream
            && table.entries.is_empty()
        {
            return Err(Error::Invalid(format!(
                "route {:?} has an empty SNI table",
                route.name
            )));
        }
        route
            .options
            .validate(&route.name)
            .map_err(Error::Invalid)?;
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

/// Binds `addr` once per worker (after checking nothing else listens there).
pub(super) fn bind_all(
    addr: SocketAddr,
    fixed: &Fixed,
) -> Result<Vec<std::net::TcpListener>, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let reuse_port = fixed.threads > 1;
    listener::probe_free(addr).map_err(bind_error)?;
    let first = listener::bind(addr, reuse_port, fixed.backlog).map_err(bind_error)?;
    let actual = first.local_addr().map_err(bind_error)?;
    let mut sockets = vec![first];
    for _ in 1..fixed.threads {
        sockets.push(
            listener::bind(actual, true, fixed.backlog).map_err(|source| Error::Bind {
                addr: actual,
                source,
            })?,
        );
    }
    Ok(sockets)
}

/// The runtime state of a route bound to `listen`.
pub(super) fn route_state(
    route: &Route,
    listen: Vec<SocketAddr>,
    counters: Arc<RouteCounters>,
    fixed: &Fixed,
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
        resolution: route
            .resolution
            .clone()
            .unwrap_or_else(|| fixed.resolution.clone()),
        listen,
        literal_targets,
        counters,
        max_connections: route.max_connections,
        next_target: AtomicUsize::new(0),
    };
    if let Some(targets) = &state.literal_targets
        && let Some(listen) = state.loops_back(&targets[0])
    {
        return Err(Error::SelfLoop {
            route: state.name.clone(),
            upstream: targets[0].addr,
            listen,
        });
    }
    Ok(state)
}
