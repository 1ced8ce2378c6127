//! A reload of the UDP routes, as TCP routes reload: routes are matched by name; an address
//! the relay already listens on keeps its socket (no datagram is refused while it reloads);
//! new addresses are bound and every upstream is checked *before* anything changes, so that a
//! port taken or a name that does not resolve fails the reload with the running routes kept.
//! Addresses no route keeps close, and their sessions end (their answers would have left
//! through the closed socket).

use std::net::SocketAddr;
use std::sync::Arc;

use super::route_state::Running;
use super::shared::{UdpMessage, UdpPlan, UdpShared};
use super::upstreams::{UdpUpstreams, resolve};
use super::{UdpRouteState, worker};
use crate::error::Error;
use crate::route::{Resolution, Route};

/// A UDP route of the new configuration, checked and bound, waiting for the rest of the reload.
#[derive(Debug)]
struct Planned {
    route: Route,
    previous: Option<Arc<UdpRouteState>>,
    /// Its addresses, in the configured order (with the ports the kernel chose).
    listen: Vec<SocketAddr>,
    /// Those of them the relay already listens on.
    kept: Vec<SocketAddr>,
    /// New sockets, each with a copy for an upgrade.
    added: Vec<(SocketAddr, std::net::UdpSocket, std::net::UdpSocket)>,
    resolution: Resolution,
}

/// A checked reload of the UDP routes: applying it cannot fail. Dropped unapplied (another
/// part of the reload failed), it closes what it bound.
#[derive(Debug)]
pub(crate) struct UdpReload {
    /// Each route with its upstreams, resolved once the whole reload's addresses are known.
    planned: Vec<(Planned, UdpUpstreams)>,
    own: Vec<SocketAddr>,
    removed: Vec<String>,
}

/// What a reload did to the UDP routes, by name.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) changed: Vec<String>,
    pub(crate) unchanged: Vec<String>,
}

/// Checks the UDP routes of a reload against the running ones: binds the new addresses and
/// resolves every route's upstream against the relay's UDP addresses after the reload.
///
/// # Errors
///
/// [`Error::Bind`] for an address in use (a UDP socket is bound without `SO_REUSEADDR` or
/// `SO_REUSEPORT`: nobody else's port is shared, and an address that overlaps one the relay
/// listens on, `0.0.0.0:P` beside `127.0.0.1:P`, cannot be bound while that one is),
/// [`Error::Resolve`], [`Error::SelfLoop`], or a route the UDP worker cannot serve.
pub(crate) fn prepare(
    shared: &UdpShared,
    routes: Vec<Route>,
    default: &Resolution,
) -> Result<UdpReload, Error> {
    let current = shared.current();
    let listening: Vec<SocketAddr> = current.iter().flat_map(|s| s.listen()).collect();
    let mut planned = Vec::with_capacity(routes.len());
    for route in routes {
        let previous = current.iter().find(|s| s.name == route.name).cloned();
        let (configured_before, bound_before) = previous
            .as_ref()
            .map(|p| (p.route().listen.clone(), p.listen()))
            .unwrap_or_default();
        let mut listen = Vec::with_capacity(route.listen.len());
        let mut kept = Vec::new();
        let mut added = Vec::new();
        for (index, &configured) in route.listen.iter().enumerate() {
            // Port 0: the port the kernel chose last time, if the route listened on this very
            // address then (an unchanged file must not move the route).
            let addr = match bound_before.get(index) {
                Some(&bound)
                    if configured.port() == 0
                        && configured_before.get(index) == Some(&configured) =>
                {
                    bound
                }
                _ => configured,
            };
            if addr.port() != 0 && listening.contains(&addr) {
                listen.push(addr);
                kept.push(addr);
                continue;
            }
            let bind_error = |source| Error::Bind { addr, source };
            let socket = worker::bind(addr).map_err(bind_error)?;
            let bound = socket.local_addr().map_err(bind_error)?;
            let copy = socket.try_clone().map_err(bind_error)?;
            listen.push(bound);
            added.push((bound, socket, copy));
        }
        let resolution = route.resolution.clone().unwrap_or_else(|| default.clone());
        planned.push(Planned {
            route,
            previous,
            listen,
            kept,
            added,
            resolution,
        });
    }
    let own: Vec<SocketAddr> = planned.iter().flat_map(|p| p.listen.clone()).collect();
    let mut resolved = Vec::with_capacity(planned.len());
    for plan in planned {
        // A route that stays keeps its members' health, and a name's addresses while it does
        // not resolve.
        let previous = plan.previous.as_ref().map(|state| state.upstreams());
        let upstreams = resolve(&plan.route, &plan.resolution, &own, previous.as_deref())?;
        resolved.push((plan, upstreams));
    }
    let removed = current
        .iter()
        .filter(|s| !resolved.iter().any(|(p, _)| p.route.name == s.name))
        .map(|s| s.name.clone())
        .collect();
    Ok(UdpReload {
        planned: resolved,
        own,
        removed,
    })
}

impl UdpReload {
    /// Makes the routes run: the handle sees the new list at once, the worker when it reads
    /// its inbox (it keeps, closes and opens its sockets then).
    pub(crate) fn apply(self, shared: &UdpShared) -> Names {
        let mut names = Names {
            removed: self.removed,
            ..Names::default()
        };
        let mut plan = UdpPlan::default();
        let mut copies = Vec::new();
        for (planned, upstreams) in self.planned {
            let running = Running {
                resolution: planned.resolution,
                listen: planned.listen,
                own: self.own.clone(),
                upstreams,
            };
            let name = planned.route.name.clone();
            let state = match planned.previous {
                Some(state) => {
                    let same = *state.route() == planned.route && state.listen() == running.listen;
                    if same {
                        names.unchanged.push(name.clone());
                    } else {
                        names.changed.push(name.clone());
                    }
                    state.replace(planned.route, running);
                    state
                }
                None => {
                    names.added.push(name.clone());
                    Arc::new(UdpRouteState::running(planned.route, running))
                }
            };
            for addr in planned.kept {
                plan.keep.push((addr, Arc::clone(&state)));
            }
            for (addr, socket, copy) in planned.added {
                // log: not client input: a reload.
                tracing::info!(route = %name, addr = %addr, "listening (UDP, reload)");
                plan.add.push((socket, Arc::clone(&state)));
                copies.push((addr, copy));
            }
            plan.routes.push(state);
        }
        {
            let mut handoff = shared.handoff();
            handoff.retain(|(addr, _)| plan.keep.iter().any(|(a, _)| a == addr));
            handoff.extend(copies);
        }
        shared.set_routes(plan.routes.clone().into());
        shared.post(UdpMessage::Reload(plan));
        names
    }
}
