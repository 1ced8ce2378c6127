//! Relay-wide state shared by the workers and the handle: the routes as they run, the global
//! counters and connection count, the control state (running, draining, stopping), the
//! resolver, and the workers' mailboxes.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

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
    /// A drain has begun (readiness fails) but the drain delay has not passed: keep accepting
    /// until `accept_until`.
    Announced = 1,
    /// Stop accepting; let connections finish until the drain timeout, then reset them.
    Draining = 2,
    /// Reset every connection and stop now.
    Stopping = 3,
}

impl Control {
    /// Whether listeners take new clients.
    pub(crate) fn accepts(self) -> bool {
        matches!(self, Control::Running | Control::Announced)
    }
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
    /// How long a drain keeps accepting after it begins.
    drain_delay: Mutex<Duration>,
    /// Until when an announced drain keeps accepting.
    accept_until: Mutex<Option<Instant>>,
    /// Set when `Relay::run` starts its workers.
    pub(crate) started: AtomicBool,
    /// Set when a worker failed (an epoll error, a panic).
    pub(crate) failed: AtomicBool,
    pub(crate) resolver: Resolver,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    pub(crate) next_id: AtomicU64,
    /// Pipes each worker holds (in use and pooled), as of its last closed connection.
    pub(crate) pipes_open: Vec<AtomicUsize>,
    /// Total capacity of those pipes, in bytes.
    pub(crate) pipe_bytes: Vec<AtomicUsize>,
    /// The descriptors the workers may still open (sockets of accepted clients, pipes).
    pub(crate) descriptors: Arc<DescriptorBudget>,
    /// The UDP worker's waker: it has no mailbox of this kind, and may sleep without a
    /// timeout, so control changes wake it too.
    udp_waker: OnceLock<Arc<mio::Waker>>,
}

impl RelayState {
    pub(crate) fn new(
        routes: Vec<Arc<RouteState>>,
        max_connections: Option<usize>,
        (drain_delay, drain_timeout): (Duration, Duration),
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
            drain_delay: Mutex::new(drain_delay),
            accept_until: Mutex::new(None),
            started: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            resolver,
            mailboxes,
            next_id: AtomicU64::new(1),
            pipes_open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            pipe_bytes: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            descriptors,
            udp_waker: OnceLock::new(),
        }
    }

    /// Wakes `waker` too on every control change (the UDP worker's, set once when it is
    /// built).
    pub(crate) fn wake_also(&self, waker: Arc<mio::Waker>) {
        let _ = self.udp_waker.set(waker);
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
            1 => Control::Announced,
            2 => Control::Draining,
            _ => Control::Stopping,
        }
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn drain_delay(&self) -> Duration {
        *self.drain_delay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when an announced drain keeps accepting.
    pub(crate) fn accept_until(&self) -> Option<Instant> {
        *self.accept_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins a graceful shutdown: at once if `delay` is zero, else announced first (accepting
    /// goes on for `delay`; the workers move to draining when it has passed).
    pub(crate) fn begin_drain(&self, delay: Duration, drain_timeout: Option<Duration>) {
        if delay.is_zero() {
            self.set_control(Control::Draining, drain_timeout);
            return;
        }
        {
            let mut until = self.accept_until.lock().unwrap_or_else(|e| e.into_inner());
            if until.is_none() {
                *until = Some(crate::clock::deadline(Instant::now(), delay));
            }
        }
        self.set_control(Control::Announced, drain_timeout);
    }

    /// An announced drain whose delay has passed moves to draining.
    pub(crate) fn advance_drain(&self, now: Instant) -> Control {
        let control = self.control();
        if control == Control::Announced && self.accept_until().is_some_and(|t| t <= now) {
            self.set_control(Control::Draining, None);
            return self.control();
        }
        control
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
        if let Some(waker) = self.udp_waker.get() {
            // A failed wake (eventfd write) can only mean the worker is gone.
            let _ = waker.wake();
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
