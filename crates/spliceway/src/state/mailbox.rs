//! Messages to a worker from other threads (resolver results, shutdown, reload), with the mio
//! waker that interrupts its `epoll_wait` so they are handled at once.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::adoption::Adopted;
use super::route::RouteState;
use crate::observe::{ConnectionFilter, ConnectionList, ConnectionQuery};
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
    /// Relay a connection the program handed over (`RelayHandle::adopt`).
    Adopt(Adopted),
    /// List this worker's connections (`RelayHandle::connections`).
    Observe {
        query: Arc<ConnectionQuery>,
        reply: mpsc::Sender<ConnectionList>,
    },
    /// Reset the connections `filter` selects (`RelayHandle::close_connections`), saying who
    /// asked; answers their ids.
    Close {
        filter: Arc<ConnectionFilter>,
        by: Arc<str>,
        reply: mpsc::Sender<Vec<u64>>,
    },
}

/// A worker's inbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    messages: Mutex<Vec<Message>>,
    waker: mio::Waker,
    /// Set, under the `messages` lock, when the worker stops reading its mail
    /// ([`Mailbox::close`]).
    closed: AtomicBool,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Mailbox {
            messages: Mutex::new(Vec::new()),
            waker,
            closed: AtomicBool::new(false),
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

    /// Queues a message unless the worker has stopped reading its mail, and wakes it; gives
    /// the message back if it has. For messages that must not be lost (adopted connections).
    // The message comes back whole so the caller can return the sockets it holds.
    #[allow(clippy::result_large_err)]
    pub(crate) fn post_unless_closed(&self, message: Message) -> Result<(), Message> {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Relaxed) {
            return Err(message);
        }
        messages.push(message);
        drop(messages);
        let _ = self.waker.wake();
        Ok(())
    }

    /// The worker stops reading its mail: takes what is left, and makes
    /// [`post_unless_closed`](Mailbox::post_unless_closed) refuse from now on.
    pub(crate) fn close(&self) -> Vec<Message> {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Relaxed);
        std::mem::take(&mut *messages)
    }

    /// Takes every queued message.
    pub(crate) fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
