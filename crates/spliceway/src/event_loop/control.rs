//! Control from outside the loop: draining, stopping, applying a reload.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::mailbox::ReloadPlan;

impl Worker {
    /// Applies draining and stopping. Returns true when the worker should exit.
    pub(super) fn check_control(&mut self, now: Instant) -> bool {
        match self.shared.control() {
            Control::Running => false,
            Control::Draining => {
                if self.drain_deadline.is_none() {
                    self.stop_listening();
                    let timeout = self.shared.drain_timeout();
                    self.drain_deadline = Some(now + timeout);
                    tracing::info!(
                        worker = self.index,
                        connections = self.connections.len(),
                        "draining: no new connections; waiting up to {timeout:?} for open ones"
                    );
                }
                if self.connections.is_empty() {
                    return true;
                }
                if self.drain_deadline.is_some_and(|t| t <= now) {
                    self.reset_all(now);
                    return true;
                }
                false
            }
            Control::Stopping => {
                self.stop_listening();
                self.reset_all(now);
                true
            }
        }
    }

    /// Applies a new configuration: listeners whose address stays are kept (pointing at their
    /// route's new state), removed ones close, new ones open. Open connections keep the route
    /// state they started with.
    pub(super) fn apply_reload(&mut self, plan: ReloadPlan) {
        if self.shared.control() != Control::Running {
            return; // draining: no listeners to update
        }
        let keys: Vec<usize> = self.listeners.iter().map(|(k, _)| k).collect();
        for key in keys {
            let addr = self.listeners[key].addr;
            match plan.keep.iter().find(|(a, _)| *a == addr) {
                Some((_, route)) => self.listeners[key].route = Arc::clone(route),
                None => {
                    let mut slot = self.listeners.remove(key);
                    let _ = self.poll.registry().deregister(&mut slot.listener);
                    tracing::info!(worker = self.index, addr = %addr, "listener closed (reload)");
                }
            }
        }
        for (listener, route) in plan.add {
            let addr = listener.local_addr().ok();
            if let Err(e) = self.add_listener(listener, route) {
                tracing::error!(
                    worker = self.index,
                    ?addr,
                    "cannot add listener on reload: {e}"
                );
            }
        }
        self.accept_pending = true;
    }

    pub(super) fn stop_listening(&mut self) {
        for (_, mut slot) in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut slot.listener);
            tracing::debug!(worker = self.index, addr = %slot.addr, "listener closed");
        }
    }

    pub(super) fn reset_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        for key in keys {
            let connection = self.connections.remove(key);
            self.finish(connection, CloseReason::Shutdown, now);
        }
    }
}
