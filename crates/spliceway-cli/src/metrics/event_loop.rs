//! The metrics server's event loop: one thread, non-blocking sockets on a `mio` poll, a fixed
//! table of connections, every deadline taken from the poll timeout (no busy loop, no thread
//! per connection).
//!
//! What each defence is for (issue 24):
//! - at most [`MAX_CONNECTIONS`]: a new client takes the slot of the oldest idle connection,
//!   or when none is idle, of the oldest with a request under way (a slow sender first, then
//!   a slow reader): the clients holding the slots are the ones that are slow, and a health
//!   check is never left waiting behind them (finding 3);
//! - a new connection is read at once, so a health check whose request is already there is
//!   answered before any later client can push it out;
//! - `accept` failing for want of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//!   `ENOMEM`) is logged at ERROR (once per [`ERROR_LOG_INTERVAL`], with a count of the
//!   others), closes the oldest idle connection, and pauses accepting for [`ACCEPT_BACKOFF`];
//!   no error ends the loop (finding 4);
//! - the listener can be dropped on request ([`Command::StopAccepting`]) while answers under
//!   way finish: after an upgrade only the new process accepts on the shared socket
//!   (finding 6).

use std::io;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use spliceway::RelayHandle;

use super::connection::{Connection, Phase, Progress};
use super::throttle::{Throttle, repeats};

/// Connections held at most.
pub const MAX_CONNECTIONS: usize = 64;
/// Descriptors the server holds at most: its connections, one more accepted before the oldest
/// is closed to make room, the listener, the epoll instance and the waker's eventfd. The
/// relay keeps them out of its own budget (`RelayBuilder::reserve_descriptors`).
pub const DESCRIPTORS: usize = MAX_CONNECTIONS + 4;
/// How long accepting pauses after it failed for want of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one ERROR line per kind of failure in this period.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Connections accepted per turn of the loop, so that a flood of clients cannot keep the
/// loop from answering those it has.
const ACCEPTS_PER_TURN: usize = MAX_CONNECTIONS;

const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
/// The token of connection slot `i` is `FIRST_CONNECTION + i`.
const FIRST_CONNECTION: usize = 2;

/// What the server's owner asks of the loop (with a wake-up).
#[derive(Debug)]
pub enum Command {
    /// Drop the listener, answer the requests under way, close each connection after its
    /// answer, then say so on the channel.
    StopAccepting(mpsc::Sender<()>),
    /// End the loop; every connection closes.
    Shutdown,
}

/// The loop's state; [`EventLoop::run`] consumes it on the server thread.
#[derive(Debug)]
pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    connections: Vec<Option<Connection>>,
    handle: RelayHandle,
    commands: mpsc::Receiver<Command>,
    /// Connections that answered and may have more to do (driven next turn).
    again: Vec<usize>,
    /// Clients may be waiting in the listener's backlog.
    accept_pending: bool,
    accept_paused_until: Option<Instant>,
    /// The listener is gone: every connection closes after its answer.
    closing: bool,
    accept_errors: Throttle,
    poll_errors: Throttle,
}

impl EventLoop {
    /// A loop serving `listener` (already non-blocking) with answers from `handle`.
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        handle: RelayHandle,
        commands: mpsc::Receiver<Command>,
    ) -> io::Result<EventLoop> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            connections: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            handle,
            commands,
            again: Vec::new(),
            // Clients may have queued before the loop started (an upgrade's socket).
            accept_pending: true,
            accept_paused_until: None,
            closing: false,
            accept_errors: Throttle::new(ERROR_LOG_INTERVAL),
            poll_errors: Throttle::new(ERROR_LOG_INTERVAL),
        })
    }

    /// Serves until [`Command::Shutdown`] or until the owner is gone.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(MAX_CONNECTIONS + 2);
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    if let Some(n) = self.poll_errors.ready(Instant::now()) {
                        tracing::error!("metrics: waiting for events failed: {e}{}", repeats(n));
                    }
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            let now = Instant::now();
            for index in std::mem::take(&mut self.again) {
                self.drive(index, now);
            }
            let mut woken = false;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    WAKER => woken = true,
                    Token(token) => self.drive(token - FIRST_CONNECTION, now),
                }
            }
            if woken && self.obey() {
                return;
            }
            self.accept(now);
            self.expire(now);
        }
    }

    /// How long to wait for events: until the nearest deadline or the end of an accept pause;
    /// not at all when work is left over; for ever when there is nothing to time.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let accept_soon = self.listener.is_some() && self.accept_pending;
        if !self.again.is_empty() || (accept_soon && self.accept_paused_until.is_none()) {
            return Some(Duration::ZERO);
        }
        let deadlines = self.connections.iter().flatten().map(Connection::deadline);
        let pause = self.accept_paused_until.filter(|_| accept_soon);
        deadlines
            .chain(pause)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Carries out the owner's commands; whether the loop must end.
    fn obey(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::StopAccepting(done)) => {
                    self.stop_accepting();
                    let _ = done.send(());
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn stop_accepting(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            tracing::info!("metrics: no longer accepting (another process serves this address)");
        }
        self.closing = true;
        self.accept_pending = false;
        let now = Instant::now();
        for index in 0..self.connections.len() {
            self.drive(index, now);
        }
    }

    fn drive(&mut self, index: usize, now: Instant) {
        let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match connection.drive(now, &self.handle, self.closing) {
            Progress::Wait => {}
            Progress::Again => self.again.push(index),
            Progress::Close => drop(self.take(index)),
        }
    }

    /// Takes connection `index` out of the table (and the poll).
    fn take(&mut self, index: usize) -> Option<Connection> {
        let mut connection = self.connections[index].take()?;
        let _ = self.poll.registry().deregister(connection.stream_mut());
        Some(connection)
    }

    fn accept(&mut self, now: Instant) {
        if !self.accept_pending || self.listener.is_none() {
            return;
        }
        match self.accept_paused_until {
            Some(until) if now < until => return,
            _ => self.accept_paused_until = None,
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e) => match e.raw_os_error() {
                    // The client went away before it was taken, or a signal: the next one.
                    Some(
                        nix::libc::ECONNABORTED
                        | nix::libc::EINTR
                        | nix::libc::EPROTO
                        | nix::libc::EPERM,
                    ) => {}
                    Some(
                        nix::libc::EMFILE
                        | nix::libc::ENFILE
                        | nix::libc::ENOBUFS
                        | nix::libc::ENOMEM,
                    ) => {
                        let freed = self.close_oldest_idle();
                        if let Some(n) = self.accept_errors.ready(now) {
                            tracing::error!(
                                "metrics: cannot accept: {e}{}; {}pausing accepts for \
                                 {ACCEPT_BACKOFF:?} (raise the open-file limit, LimitNOFILE=)",
                                repeats(n),
                                if freed {
                                    "closed the oldest idle connection, "
                                } else {
                                    ""
                                }
                            );
                        }
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    _ => {
                        if let Some(n) = self.accept_errors.ready(now) {
                            tracing::error!(
                                "metrics: cannot accept: {e}{}; pausing accepts for \
                                 {ACCEPT_BACKOFF:?}",
                                repeats(n)
                            );
                        }
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                },
            }
        }
        // More may be queued: after the next turn's events.
    }

    /// Gives a new client a slot (freeing the least deserving one when all are taken),
    /// then reads its request at once.
    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        let index = match self.connections.iter().position(Option::is_none) {
            Some(free) => free,
            None => self.evict(),
        };
        let token = Token(FIRST_CONNECTION + index);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("metrics: cannot watch a connection, closing it: {e}");
            return;
        }
        // Its own clock reading rather than the turn's: of the clients accepted in one turn,
        // the later ones are the newer, and the oldest idle is closed first.
        let accepted = Instant::now().max(now);
        self.connections[index] = Some(Connection::new(stream, accepted));
        self.drive(index, accepted);
    }

    /// Closes the connection that deserves its slot least, and returns the slot: the oldest
    /// idle one; else the oldest still sending its head; else the oldest whose answer is
    /// unread.
    fn evict(&mut self) -> usize {
        let (index, phase) = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.phase(), c.since())))
            .min_by_key(|&(_, phase, since)| (phase, since))
            .map(|(i, phase, _)| (i, phase))
            .expect("evict is called only when every slot is taken");
        if let Some(connection) = self.take(index) {
            tracing::debug!(
                "metrics: {MAX_CONNECTIONS} connections open: closing the oldest {phase:?} one for a new client"
            );
            if phase != Phase::Idle {
                connection.reset();
            }
        }
        index
    }

    /// Closes the oldest idle connection, if any; whether one was closed.
    fn close_oldest_idle(&mut self) -> bool {
        let oldest = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| c.phase() == Phase::Idle)
            .min_by_key(|(_, c)| c.since())
            .map(|(i, _)| i);
        oldest.and_then(|i| self.take(i)).is_some()
    }

    /// Closes the connections whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        for index in 0..self.connections.len() {
            let due = self.connections[index]
                .as_ref()
                .is_some_and(|c| c.deadline() <= now);
            if due && let Some(connection) = self.take(index) {
                tracing::debug!(
                    "metrics: closing a connection at its {:?} deadline",
                    connection.phase()
                );
                connection.expire();
            }
        }
    }
}
