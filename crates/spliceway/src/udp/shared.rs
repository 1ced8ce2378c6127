//! What the UDP worker shares with the handle and the resolver thread: the routes as they run
//! now (a reload replaces the list), the worker's inbox (reloads, handing the sockets over),
//! copies of the listening sockets (for an upgrade) and the line to the resolver thread.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, mpsc};

use super::UdpRouteState;
use crate::observe::{ConnectionFilter, ConnectionQuery, UdpSessionInfo};

/// A message for the UDP worker.
#[derive(Debug)]
pub(crate) enum UdpMessage {
    /// Apply a reload of the UDP routes.
    Reload(UdpPlan),
    /// Another process reads the listening sockets from now on (an upgrade): stop reading
    /// them, keep the open sessions.
    Release,
    /// List the open sessions `query` selects: how many matched, and those kept (ordered and
    /// limited as it says).
    Observe {
        query: Arc<ConnectionQuery>,
        reply: mpsc::Sender<(usize, Vec<UdpSessionInfo>)>,
    },
    /// End the open sessions `filter` selects, logged as ended by the operator (`by`: who
    /// asked); the reply lists them (route, client).
    End {
        filter: Arc<ConnectionFilter>,
        by: Arc<str>,
        reply: mpsc::Sender<Vec<(String, SocketAddr)>>,
    },
}

/// The worker's share of a reload, as a TCP worker's [`ReloadPlan`](crate::state::mailbox::ReloadPlan).
#[derive(Debug, Default)]
pub(crate) struct UdpPlan {
    /// Every UDP route after the reload; those the worker has and are not here are removed.
    pub(crate) routes: Vec<Arc<UdpRouteState>>,
    /// Listening addresses that stay (their socket is kept), with the route they now serve.
    pub(crate) keep: Vec<(SocketAddr, Arc<UdpRouteState>)>,
    /// New listening sockets.
    pub(crate) add: Vec<(std::net::UdpSocket, Arc<UdpRouteState>)>,
}

/// What the resolver thread of the UDP routes is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The routes changed: look at the list again.
    RoutesChanged,
    /// The worker has stopped.
    Stop,
}

/// The UDP part of a relay as the handle, the worker and the resolver thread see it.
#[derive(Debug)]
pub(crate) struct UdpShared {
    routes: RwLock<Arc<[Arc<UdpRouteState>]>>,
    /// `None` once the worker has stopped: nothing reads it any more, so a message (and the
    /// reply channel in it) is refused instead of waiting forever.
    inbox: Mutex<Option<Vec<UdpMessage>>>,
    /// Wakes the worker's `epoll_wait` (it may sleep without a timeout when it has no session).
    waker: Arc<mio::Waker>,
    /// Duplicates of the worker's listening sockets, for an upgrade; kept current by reloads,
    /// emptied by a shutdown.
    handoff: Mutex<Vec<(SocketAddr, std::net::UdpSocket)>>,
    refresh: Mutex<mpsc::Sender<Refresh>>,
}

impl UdpShared {
    pub(crate) fn new(
        routes: Arc<[Arc<UdpRouteState>]>,
        waker: Arc<mio::Waker>,
        handoff: Vec<(SocketAddr, std::net::UdpSocket)>,
        refresh: mpsc::Sender<Refresh>,
    ) -> Self {
        UdpShared {
            routes: RwLock::new(routes),
            inbox: Mutex::new(Some(Vec::new())),
            waker,
            handoff: Mutex::new(handoff),
            refresh: Mutex::new(refresh),
        }
    }

    /// The UDP routes as they run now.
    pub(crate) fn current(&self) -> Arc<[Arc<UdpRouteState>]> {
        Arc::clone(&self.routes.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the list of routes (a reload, before the worker hears of it).
    pub(crate) fn set_routes(&self, routes: Arc<[Arc<UdpRouteState>]>) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
        self.tell_resolver(Refresh::RoutesChanged);
    }

    /// Queues a message and wakes the worker; `false` (the message dropped) once the worker
    /// has stopped.
    pub(crate) fn post(&self, message: UdpMessage) -> bool {
        match &mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(inbox) => inbox.push(message),
            None => return false,
        }
        // A failed wake (eventfd write) can only mean the worker is gone.
        let _ = self.waker.wake();
        true
    }

    /// Takes every queued message.
    pub(crate) fn take(&self) -> Vec<UdpMessage> {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The worker has stopped: later messages are refused, queued ones dropped (with their
    /// reply channels, so whoever waits on one hears at once).
    pub(crate) fn close_inbox(&self) {
        *self.inbox.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The copies of the listening sockets, for a change (a reload) or a look (an upgrade).
    pub(crate) fn handoff(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, std::net::UdpSocket)>> {
        self.handoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the resolver thread; it may have ended already, which is fine.
    pub(crate) fn tell_resolver(&self, what: Refresh) {
        let _ = self
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(what);
    }
}
