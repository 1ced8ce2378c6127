//! An adopted connection on its way from [`RelayHandle::adopt`](crate::RelayHandle::adopt) to
//! the worker that will relay it, as a mailbox message.
//!
//! By the time it is posted, its sockets were checked, switched to non-blocking and given
//! `SO_LINGER` 0, and its slots of the connection limits and of the descriptor budget were
//! taken; the worker gives the slots back when the connection closes, as for an accepted one.
//! Should the message never be handled (the relay was dropped without running, or a worker
//! failed), dropping it drops the sockets, which resets both peers, and still tells the
//! program, with [`CloseReason::Shutdown`](crate::CloseReason::Shutdown).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::route::RouteState;
use crate::end::{CloseReason, ConnectionEnd, OnEnd};

/// The parts of an adopted connection.
#[derive(Debug)]
pub(crate) struct AdoptedPair {
    pub(crate) id: u64,
    pub(crate) client: TcpStream,
    pub(crate) client_addr: SocketAddr,
    pub(crate) upstream: TcpStream,
    pub(crate) upstream_addr: SocketAddr,
    /// The route whose options it has and where it is counted (a route of its own, named
    /// `adopted` and counted only relay-wide, when the program named none).
    pub(crate) route: Arc<RouteState>,
    pub(crate) client_bytes: Vec<u8>,
    pub(crate) upstream_bytes: Vec<u8>,
    pub(crate) on_end: Option<OnEnd>,
}

/// The message: an adopted pair the worker takes, or that tells the program when dropped.
#[derive(Debug)]
pub(crate) struct Adopted(Option<AdoptedPair>);

impl Adopted {
    pub(crate) fn new(pair: AdoptedPair) -> Self {
        Adopted(Some(pair))
    }

    /// The pair, for the worker.
    pub(crate) fn take(mut self) -> Option<AdoptedPair> {
        self.0.take()
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if let Some(mut pair) = self.0.take()
            && let Some(on_end) = pair.on_end.take()
        {
            on_end.call(ConnectionEnd::new(
                pair.id,
                CloseReason::Shutdown,
                (0, 0),
                Duration::ZERO,
            ));
        }
    }
}
