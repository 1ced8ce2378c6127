//! A worker's listening sockets, and taking clients from them: within the relay's and the
//! route's connection limits (the kernel's backlog holds clients while a limit is reached),
//! backing off for [`ACCEPT_BACKOFF`] when descriptors run out (`EMFILE`/`ENFILE`) instead of
//! spinning on a listener that stays readable.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use slab::Slab;

use super::token::Source;
use crate::clock::deadline;
use crate::descriptors::PER_CONNECTION;
use crate::socket_options::{apply_listener_options, inherited_options_differ};
use crate::state::mailbox::ReloadPlan;
use crate::state::relay::{RelayState, try_reserve};
use crate::state::route::RouteState;
use crate::stats::count;

/// Connections accepted from one listener per turn.
const ACCEPTS_PER_TURN: usize = 128;
/// Pause after the process ran out of descriptors while accepting.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket of this worker.
#[derive(Debug)]
struct ListenerSlot {
    listener: TcpListener,
    route: Arc<RouteState>,
    addr: SocketAddr,
    /// A reload changed the options accepted sockets inherit: clients already queued carry the
    /// old ones, so each accepted client gets the route's options set on it, until an accept
    /// finds the queue empty (every later client inherits the new ones).
    options_changed: bool,
    /// Setting the route's options on the listener failed (on a reload): set them on every
    /// accepted client instead.
    options_not_inherited: bool,
}

/// A client taken from a listener, its limit slots reserved.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) route: Arc<RouteState>,
    /// The socket may not carry the route's inherited options (TCP_NODELAY, keepalive): set
    /// them on it.
    pub(crate) needs_options: bool,
}

/// The listening sockets of one worker.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    slots: Slab<ListenerSlot>,
    /// Accepting is paused until then (descriptors exhausted).
    paused_until: Option<Instant>,
    /// Listeners may hold clients we did not take (limit reached, or batch exhausted).
    pending: bool,
    /// A connection limit or the descriptor budget stopped accepting: a closing connection
    /// must make the worker try again.
    held_back: bool,
    last_warning: Option<Instant>,
    /// The descriptor budget could not give a client its two descriptors (until a
    /// connection closes).
    short_of_descriptors: bool,
    last_descriptor_warning: Option<Instant>,
}

impl Listeners {
    /// Adds a listening socket.
    pub(crate) fn add(
        &mut self,
        registry: &Registry,
        listener: std::net::TcpListener,
        route: Arc<RouteState>,
    ) -> io::Result<()> {
        let addr = listener.local_addr()?;
        // Accepted sockets inherit these from the listener: set once here rather than on every
        // client (a system call per option per connection).
        apply_listener_options(&listener, &route.options)?;
        let mut listener = TcpListener::from_std(listener);
        let entry = self.slots.vacant_entry();
        registry.register(
            &mut listener,
            Source::Listener(entry.key()).token(),
            Interest::READABLE,
        )?;
        entry.insert(ListenerSlot {
            listener,
            route,
            addr,
            options_changed: false,
            options_not_inherited: false,
        });
        Ok(())
    }

    /// The slots of every listener.
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.slots.iter().map(|(k, _)| k).collect()
    }

    /// Clients may be waiting that no readiness event will announce again (a slot was freed,
    /// a batch was cut short): try every listener next turn.
    pub(crate) fn mark_pending(&mut self) {
        self.pending = true;
    }

    /// A connection closed: if a limit held clients back, try the listeners next turn. If
    /// none did, every listener was read until it had nothing more, and a new client raises a
    /// new event: an accept now would only answer EAGAIN.
    pub(crate) fn slot_freed(&mut self) {
        if self.held_back {
            self.pending = true;
        }
    }

    /// Whether accepting stopped because the descriptor budget was used up: other workers
    /// must be told when a connection closes, as at a connection limit.
    pub(crate) fn short_of_descriptors(&self) -> bool {
        self.short_of_descriptors
    }

    /// Whether the next poll must not sleep, to take clients already waiting.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending
    }

    /// When a pause for exhausted descriptors ends.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Whether every listener should be tried now (clients pending, or a pause is over);
    /// clears both.
    pub(crate) fn take_retry(&mut self, now: Instant) -> bool {
        let due = self.pending || self.paused_until.is_some_and(|t| t <= now);
        if due {
            self.pending = false;
            self.held_back = false;
            self.paused_until = None;
        }
        due
    }

    /// Takes up to a batch of clients from the listener in slot `key` into `accepted`, each
    /// with one slot of the relay's and of its route's connection limit reserved.
    pub(crate) fn accept(
        &mut self,
        key: usize,
        now: Instant,
        relay: &RelayState,
        worker: usize,
        accepted: &mut Vec<Accepted>,
    ) {
        if self.paused_until.is_some_and(|t| t > now) {
            return;
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_TURN {
            let route = &slot.route;
            if !try_reserve(&relay.active, relay.max_connections()) {
                self.held_back = true;
                return;
            }
            if !try_reserve(route.active(), route.max_connections) {
                relay.active.fetch_sub(1, Ordering::AcqRel);
                self.held_back = true;
                return;
            }
            // The client's socket and the upstream socket it will need, before taking it:
            // an accepted client must never fail for want of a descriptor.
            if !relay.descriptors.try_take(PER_CONNECTION) {
                relay.active.fetch_sub(1, Ordering::AcqRel);
                route.active().fetch_sub(1, Ordering::AcqRel);
                self.held_back = true;
                if !self.short_of_descriptors {
                    self.short_of_descriptors = true;
                    count(&relay.stats, route.stats(), |s| &s.descriptor_waits, 1);
                }
                // log: rate limited (once every 10 s per worker): clients arriving while
                // descriptors are short must not each write a line.
                if self
                    .last_descriptor_warning
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    self.last_descriptor_warning = Some(now);
                    tracing::warn!(
                        worker,
                        "descriptors nearly used up ({} for the relay under the open-file \
                         limit): new clients wait in the backlog until connections close \
                         (raise the limit, LimitNOFILE=, or lower max connections)",
                        relay.descriptors.capacity()
                    );
                }
                return;
            }
            self.short_of_descriptors = false;
            match slot.listener.accept() {
                Ok((stream, peer)) => accepted.push(Accepted {
                    stream,
                    peer,
                    route: Arc::clone(route),
                    needs_options: slot.options_changed || slot.options_not_inherited,
                }),
                Err(e) => {
                    relay.active.fetch_sub(1, Ordering::AcqRel);
                    route.active().fetch_sub(1, Ordering::AcqRel);
                    relay.descriptors.give_back(PER_CONNECTION);
                    match e.raw_os_error() {
                        _ if e.kind() == io::ErrorKind::WouldBlock => {
                            slot.options_changed = false;
                            return;
                        }
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            self.paused_until = Some(deadline(now, ACCEPT_BACKOFF));
                            // log: rate limited (once every 10 s per worker).
                            if self
                                .last_warning
                                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                            {
                                self.last_warning = Some(now);
                                tracing::warn!(
                                    worker,
                                    "cannot accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} \
                                     (raise the open-file limit, or lower max connections)"
                                );
                            }
                            return;
                        }
                        // The client went away before we took it, or a signal: next one.
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => {}
                        _ => {
                            // log: not client input: an accept error of the listener itself (a client's own are skipped above); accepting pauses after it
                            tracing::warn!(worker, "accept failed: {e}");
                            self.paused_until = Some(deadline(now, ACCEPT_BACKOFF));
                            return;
                        }
                    }
                }
            }
        }
        // More clients may be queued: take them next turn, after other events.
        self.pending = true;
    }

    /// Applies a reload: listeners whose address stays are kept (pointing at their route's new
    /// state), removed ones close, new ones open. Clients already queued on a listener that
    /// closes are taken into `accepted` first (closing it would reset them): a listener that
    /// moves from `127.0.0.1:P` to `0.0.0.0:P` loses nobody.
    pub(crate) fn apply_reload(
        &mut self,
        registry: &Registry,
        plan: ReloadPlan,
        relay: &RelayState,
        worker: usize,
        accepted: &mut Vec<Accepted>,
    ) {
        for key in self.keys() {
            let addr = self.slots[key].addr;
            match plan.keep.iter().find(|(a, _)| *a == addr) {
                Some((_, route)) => {
                    let slot = &mut self.slots[key];
                    if inherited_options_differ(&slot.route.options, &route.options) {
                        let set = apply_listener_options(&slot.listener, &route.options);
                        if let Err(e) = &set {
                            // log: not client input: a reload.
                            tracing::warn!(
                                worker,
                                addr = %addr,
                                "cannot set the new TCP options on the listener ({e}): setting \
                                 them on each client instead"
                            );
                        }
                        slot.options_not_inherited = set.is_err();
                        slot.options_changed = true;
                    }
                    slot.route = Arc::clone(route);
                }
                None => {
                    let mut slot = self.slots.remove(key);
                    let _ = registry.deregister(&mut slot.listener);
                    let taken = take_queued(&slot, relay, accepted);
                    // log: not client input: a reload.
                    tracing::info!(
                        worker,
                        addr = %addr,
                        queued = taken,
                        "listener closed (reload)"
                    );
                }
            }
        }
        for (listener, route) in plan.add {
            let addr = listener.local_addr().ok();
            if let Err(e) = self.add(registry, listener, route) {
                // log: not client input: a reload.
                tracing::error!(worker, ?addr, "cannot add listener on reload: {e}");
            }
        }
        self.pending = true;
    }

    /// Closes every listener (a drain or a stop). Clients still queued are reset by the
    /// kernel: a drain stops accepting.
    pub(crate) fn close_all(&mut self, registry: &Registry, worker: usize) {
        for (_, mut slot) in std::mem::take(&mut self.slots) {
            let _ = registry.deregister(&mut slot.listener);
            tracing::debug!(worker, addr = %slot.addr, "listener closed");
        }
    }
}

/// Most clients taken from the queue of a listener that a reload closes.
const QUEUED_ACCEPTS_MAX: usize = 4096;

/// Accepts every client already queued on `slot` (it is about to close), reserving each one's
/// slots and descriptors; beyond the descriptor budget the rest are left to the kernel. Returns
/// how many were taken.
fn take_queued(slot: &ListenerSlot, relay: &RelayState, accepted: &mut Vec<Accepted>) -> usize {
    let mut taken = 0;
    while taken < QUEUED_ACCEPTS_MAX && relay.descriptors.try_take(PER_CONNECTION) {
        match slot.listener.accept() {
            Ok((stream, peer)) => {
                // Past a connection limit too: these clients were already connected, and the
                // alternative is resetting them.
                relay.active.fetch_add(1, Ordering::AcqRel);
                slot.route.active().fetch_add(1, Ordering::AcqRel);
                accepted.push(Accepted {
                    stream,
                    peer,
                    route: Arc::clone(&slot.route),
                    needs_options: slot.options_changed || slot.options_not_inherited,
                });
                taken += 1;
            }
            Err(_) => {
                relay.descriptors.give_back(PER_CONNECTION);
                break;
            }
        }
    }
    taken
}
