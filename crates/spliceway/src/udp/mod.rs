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
//! | `route_state` | a UDP route as it runs: its settings, counters and upstreams |
//! | `upstreams` | where new sessions go: one upstream's addresses, or a balanced group |
//! | `shared` | what the worker shares with the handle: the routes now, its inbox, socket copies |
//! | `reload` | a reload of the UDP routes: checked and bound first, then applied |
//! | `batch` | the preallocated receive buffers and the index of their datagrams |
//! | `train` | which datagrams travel together: `UDP_GRO` receives cut, `UDP_SEGMENT` trains |
//! | `send` | a run of datagrams out on one socket, in as few `sendmmsg` calls as may be |
//! | `session` | the session table: lookup by client, limits, counts |
//! | `worker` | the event loop of the UDP routes (one thread) |
//! | `resolve` | re-resolution of upstream names, off the event loop |
//!
//! The worker exists in every relay, with UDP routes or without: a reload may add the first
//! one. Without sessions it sleeps in `epoll_wait` with no timeout (woken by its inbox, a
//! datagram or the relay's control changes), so a TCP-only relay pays two sleeping threads
//! (the worker and its resolver thread), two descriptors (epoll, eventfd) and its batches'
//! zeroed allocation, which the kernel backs with memory only once datagrams are written
//! into it.

mod batch;
mod reload;
mod resolve;
mod route_state;
mod send;
mod session;
mod shared;
mod train;
mod upstreams;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

pub(crate) use reload::prepare as prepare_reload;
pub(crate) use resolve::refresh_names;
pub(crate) use route_state::UdpRouteState;
pub(crate) use shared::{Refresh, UdpMessage, UdpShared};
pub(crate) use worker::UdpWorker;

use crate::error::{Error, SettingsError};
use crate::route::{Resolution, Route};
use crate::state::relay::RelayState;

/// The UDP part of a relay as built: what it shares with the handle, the worker that serves
/// it and the receiving end of its resolver thread's line (both taken by
/// [`Relay::run`](crate::Relay::run)).
#[derive(Debug)]
pub(crate) struct UdpPart {
    pub(crate) shared: Arc<UdpShared>,
    pub(crate) worker: UdpWorker,
    pub(crate) refresh: mpsc::Receiver<Refresh>,
}

/// Resolves the UDP routes' upstreams once and binds their sockets, or serves the sockets
/// `passed` (an upgrade's) on the routes whose addresses they are bound to.
///
/// # Errors
///
/// [`Error::Resolve`] for an upstream name that does not resolve (or only to refused
/// addresses), [`Error::SelfLoop`] for an upstream that is one of the relay's own UDP
/// addresses, [`Error::Bind`] for an address in use or a passed socket that is not a UDP
/// socket, [`Error::Invalid`] for a passed socket bound to no UDP route's address.
pub(crate) fn build(
    routes: &[&Route],
    default_resolution: &Resolution,
    relay: &Arc<RelayState>,
    passed: Vec<std::net::UdpSocket>,
) -> Result<UdpPart, Error> {
    let mut passed = passed_by_address(passed, routes)?;
    let mut bound = Vec::new();
    for route in routes {
        let mut sockets = Vec::new();
        for &addr in &route.listen {
            let socket = match passed.iter().position(|(a, _)| *a == addr) {
                Some(index) => passed.swap_remove(index).1,
                None => worker::bind(addr).map_err(|source| Error::Bind { addr, source })?,
            };
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
    let mut handoff = Vec::new();
    let mut served = Vec::new();
    for (state, sockets) in states.iter().zip(bound) {
        for socket in sockets {
            let addr = socket.local_addr().map_err(|source| Error::Bind {
                addr: state.listen()[0],
                source,
            })?;
            let copy = socket
                .try_clone()
                .map_err(|source| Error::Bind { addr, source })?;
            handoff.push((addr, copy));
            served.push((socket, Arc::clone(state)));
        }
    }
    let poll = mio::Poll::new().map_err(Error::EventLoop)?;
    let waker =
        Arc::new(mio::Waker::new(poll.registry(), worker::WAKER).map_err(Error::EventLoop)?);
    relay.wake_also(Arc::clone(&waker));
    let (tell, refresh) = mpsc::channel();
    let shared = Arc::new(UdpShared::new(states.into(), waker, handoff, tell));
    let worker = UdpWorker::new(poll, Arc::clone(relay), Arc::clone(&shared), served)
        .map_err(Error::EventLoop)?;
    Ok(UdpPart {
        shared,
        worker,
        refresh,
    })
}

/// The passed sockets by bound address, made non-blocking; each must be a UDP socket bound to
/// a UDP route's address.
fn passed_by_address(
    passed: Vec<std::net::UdpSocket>,
    routes: &[&Route],
) -> Result<Vec<(SocketAddr, std::net::UdpSocket)>, Error> {
    let mut out = Vec::with_capacity(passed.len());
    for socket in passed {
        let unknown = || SocketAddr::from(([0, 0, 0, 0], 0));
        let addr = socket.local_addr().unwrap_or_else(|_| unknown());
        let bind_error = |source| Error::Bind { addr, source };
        let kind = socket2::SockRef::from(&socket)
            .r#type()
            .map_err(bind_error)?;
        if kind != socket2::Type::DGRAM {
            return Err(bind_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the socket passed for a UDP route is not a datagram socket",
            )));
        }
        socket.set_nonblocking(true).map_err(bind_error)?;
        if !routes.iter().any(|r| r.listen.contains(&addr)) {
            return Err(SettingsError::PassedSocketUnrouted { addr }.into());
        }
        out.push((addr, socket));
    }
    Ok(out)
}
