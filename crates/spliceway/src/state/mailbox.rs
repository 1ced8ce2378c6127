//! Messages to a worker from other threads (resolver results, shutdown, reload), with the mio
//! waker that interrupts its `epoll_wait` so they are handled at once.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use super::route::RouteState;
use crate::resolver::Target;

/// One worker's share of a configuration reload.
#[derive(Debug, Default)]
pub(crate) struct ReloadPlan {
    /// Listening addresses that stay, with the route state they now serve.
    pub(crate) keep: Vec<(SocketAddr, Arc<RouteState>)>,
    /// New listening sockets for this worker.
    pub(crate) add: Vec<(TcpListener, Arc<RouteState>)>,
}

/// A message for a worker.
#[derive(Debug)]
pub(crate) enum Message {
    /// A name resolution the worker asked for has finished.
    Resolved {
        key: usize,
        id: u64,
        result: Result<Arc<[Target]>, String>,
    },
    /// The relay's control state changed (shutdown, drain): look at the shared state.
    Control,
    /// A connection limit that was reached has a free slot again: try the listeners.
    ResumeAccepting,
    /// Apply a new configuration.
    Reload(ReloadPlan),
}

/// A worker's inbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    messages: Mutex<Vec<Message>>,
    waker: mio::Waker,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Mailbox {
            messages: Mutex::new(Vec::new()),
            waker,
        }
    }

    /// Queues a message and wakes the worker.
    pub(crate) fn post(&self, message: Message) {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
        // A failed wake (eventfd write) can only mean the worker is gone.
        let _ = self.waker.wake();
    }

    /// Takes every queued message.
    pub(crate) fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
