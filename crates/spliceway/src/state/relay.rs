//! Relay-wide state shared by the workers and the handle: the routes as they run, the global
//! counters and connection count, the control state (running, draining, stopping), the
//! resolver, and the workers' mailboxes.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::mailbox::{Mailbox, Message};
use super::route::RouteState;
use crate::descriptors::DescriptorBudget;
use crate::resolver::Resolver;
use crate::stats::Stats;

/// Takes one slot of a connection limit, if one is free.
pub(crate) fn try_reserve(active: &AtomicUsize, limit: Option<usize>) -> bool {
    let previous = active.fetch_add(1, Ordering::AcqRel);
    match limit {
        Some(limit) if previous >= limit => {
            active.fetch_sub(1, Ordering::AcqRel);
            false
        }
        _ => true,
    }
}

/// What the workers should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Running = 0,
    /// Stop accepting; let connections finish until the drain timeout, then reset them.
    Draining = 1,
    /// Reset every connection and stop now.
    Stopping = 2,
}

/// Relay-wide state.
#[derive(Debug)]
pub(crate) struct RelayState {
    pub(crate) stats: Stats,
    pub(crate) routes: RwLock<Vec<Arc<RouteState>>>,
    pub(crate) active: AtomicUsize,
    max_connections: AtomicUsize,
    control: AtomicU8,
    drain_timeout: Mutex<Duration>,
    pub(crate) resolver: Resolver,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    pub(crate) next_id: AtomicU64,
    /// Pipes each worker holds (in use and pooled), as of its last closed connection.
    pub(crate) pipes_open: Vec<AtomicUsize>,
    /// Total capacity of those pipes, in bytes.
    pub(crate) pipe_bytes: Vec<AtomicUsize>,
    /// The descriptors the workers may still open (sockets of accepted clients, pipes).
    pub(crate) descriptors: Arc<DescriptorBudget>,
}

impl RelayState {
    pub(crate) fn new(
        routes: Vec<Arc<RouteState>>,
        max_connections: Option<usize>,
        drain_timeout: Duration,
        resolver: Resolver,
        mailboxes: Vec<Arc<Mailbox>>,
        descriptors: Arc<DescriptorBudget>,
    ) -> Self {
        let workers = mailboxes.len();
        RelayState {
            stats: Stats::default(),
            routes: RwLock::new(routes),
            active: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(max_connections.unwrap_or(usize::MAX)),
            control: AtomicU8::new(Control::Running as u8),
            drain_timeout: Mutex::new(drain_timeout),
            resolver,
            mailboxes,
            next_id: AtomicU64::new(1),
            pipes_open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            pipe_bytes: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            descriptors,
        }
    }

    /// The relay-wide connection limit.
    pub(crate) fn max_connections(&self) -> Option<usize> {
        match self.max_connections.load(Ordering::Relaxed) {
            usize::MAX => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_max_connections(&self, limit: Option<usize>) {
        self.max_connections
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The routes as they run now.
    pub(crate) fn routes(&self) -> Vec<Arc<RouteState>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn control(&self) -> Control {
        match self.control.load(Ordering::Acquire) {
            0 => Control::Running,
            1 => Control::Draining,
            _ => Control::Stopping,
        }
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the control state forward (never back) and wakes every worker.
    pub(crate) fn set_control(&self, control: Control, drain_timeout: Option<Duration>) {
        if let Some(timeout) = drain_timeout {
            *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
        }
        self.control.fetch_max(control as u8, Ordering::AcqRel);
        for mailbox in &self.mailboxes {
            mailbox.post(Message::Control);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_limit() {
        let active = AtomicUsize::new(0);
        assert!(try_reserve(&active, Some(2)));
        assert!(try_reserve(&active, Some(2)));
        assert!(!try_reserve(&active, Some(2)));
        assert_eq!(active.load(Ordering::SeqCst), 2);
        assert!(try_reserve(&active, None));
    }
}
