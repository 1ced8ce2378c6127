//! UDP routes: datagrams relayed per client address.
//!
//! Splice does not apply to datagrams, but the discipline of the TCP engine does: few system
//! calls per datagram (`recvmmsg`/`sendmmsg`, up to [`MAX_BATCH`](crate::sys::MAX_BATCH) a
//! call), no allocation per datagram (two preallocated batches of 64 KiB slots, so a datagram of
//! any size arrives whole), bounded memory (sessions bounded per route and per client address),
//! and honest ends (an ICMP error from the upstream ends its session and is counted).
//!
//! Each client address is a *session* with its own connected upstream socket, so that the
//! upstream's answers come back on that socket and go to that client only. A session ends
//! after `udp_idle_timeout` of silence both ways.
//!
//! | module | job |
//! | --- | --- |
//! | `route_state` | a UDP route as it runs: its settings, counters and upstream addresses |
//! | `batch` | the preallocated receive buffers and the index of their datagrams |
//! | `train` | which datagrams travel together: `UDP_GRO` receives cut, `UDP_SEGMENT` trains |
//! | `send` | a run of datagrams out on one socket, in as few `sendmmsg` calls as may be |
//! | `session` | the session table: lookup by client, limits, counts |
//! | `worker` | the event loop of the UDP routes (one thread) |
//! | `resolve` | re-resolution of upstream names, off the event loop |

mod batch;
mod resolve;
mod route_state;
mod send;
mod session;
mod train;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) use resolve::refresh_names;
pub(crate) use route_state::UdpRouteState;
pub(crate) use worker::UdpWorker;

use crate::error::Error;
use crate::route::{Resolution, Route};
use crate::state::relay::RelayState;

/// The UDP part of a relay as built: its routes' state (read by the handle) and the worker that
/// serves them (taken by [`Relay::run`](crate::Relay::run)).
#[derive(Debug)]
pub(crate) struct UdpPart {
    pub(crate) routes: Arc<[Arc<UdpRouteState>]>,
    pub(crate) worker: Option<UdpWorker>,
}

/// Resolves the UDP routes' upstreams once and binds their sockets.
///
/// # Errors
///
/// [`Error::Resolve`] for an upstream name that does not resolve (or only to refused
/// addresses), [`Error::SelfLoop`] for an upstream that is one of the relay's own UDP
/// addresses, [`Error::Bind`] for an address in use.
pub(crate) fn build(
    routes: &[&Route],
    default_resolution: &Resolution,
    relay: &Arc<RelayState>,
) -> Result<UdpPart, Error> {
    if routes.is_empty() {
        return Ok(UdpPart {
            routes: Arc::new([]),
            worker: None,
        });
    }
    let mut bound = Vec::new();
    for route in routes {
        let mut sockets = Vec::new();
        for &addr in &route.listen {
            let socket = worker::bind(addr).map_err(|source| Error::Bind { addr, source })?;
            sockets.push(socket);
        }
        bound.push(sockets);
    }
    let own: Vec<SocketAddr> = bound
        .iter()
        .flatten()
        .filter_map(|s| s.local_addr().ok())
        .collect();
    let mut states = Vec::new();
    for (route, sockets) in routes.iter().zip(&bound) {
        let listen = sockets
            .iter()
            .zip(&route.listen)
            .map(|(s, configured)| s.local_addr().unwrap_or(*configured))
            .collect();
        let resolution = route
            .resolution
            .clone()
            .unwrap_or_else(|| default_resolution.clone());
        states.push(Arc::new(UdpRouteState::new(
            (*route).clone(),
            listen,
            resolution,
            own.clone(),
        )?));
    }
    let states: Arc<[Arc<UdpRouteState>]> = states.into();
    let worker =
        UdpWorker::new(Arc::clone(relay), Arc::clone(&states), bound).map_err(Error::EventLoop)?;
    Ok(UdpPart {
        routes: states,
        worker: Some(worker),
    })
}
