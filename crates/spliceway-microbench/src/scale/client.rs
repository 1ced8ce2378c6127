//! The clients of the scale benchmark: thousands of connections driven by one mio event loop
//! on the calling thread, each following its [`Kind`] (see [`super::protocol`]).
//!
//! Connections are spread over several loopback source addresses (127.0.0.2, .3, ...) with
//! `IP_BIND_ADDRESS_NO_PORT`, so that ephemeral ports do not run short at 100,000 connections.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{setsockopt, sockopt};
use sha2::{Digest, Sha256};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use super::endings::{Endings, Hashes, Seen};
use super::protocol::{GO, HEADER_BYTES, Header, Kind, READY, RESET_ME, Way, fill};

/// Bytes read or generated per call.
const SCRATCH_BYTES: usize = 256 * 1024;

/// One connection to open.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Where to connect (the relay).
    pub addr: SocketAddr,
    /// What the connection does.
    pub kind: Kind,
    /// Unique id (seeds the payloads).
    pub id: u64,
    /// Payload bytes each way ([`Kind::Active`]).
    pub len: u64,
}

/// Many client connections and the loop that drives them.
#[derive(Debug)]
pub struct Client {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    queue: VecDeque<Spec>,
    window: usize,
    in_window: usize,
    parked: usize,
    scratch: Vec<u8>,
    sources: Vec<Ipv4Addr>,
    next_source: usize,
    /// How connections ended, as seen by the clients.
    pub endings: Endings,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    spec: Spec,
    connected: bool,
    header_sent: usize,
    ready: bool,
    parked: bool,
    go: bool,
    go_sent: bool,
    reset_asked: bool,
    sent: u64,
    sent_hash: Sha256,
    received: u64,
    received_hash: Sha256,
    eof: bool,
    write_shut: bool,
}

/// How a client connection ended.
enum End {
    Seen(Seen),
    /// This end closed (or reset) as its kind says.
    Planned,
    Failed(io::Error),
}

impl Client {
    /// A client connecting from `sources` in turn (empty: let the kernel choose).
    pub fn new(sources: Vec<Ipv4Addr>) -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Slab::new(),
            queue: VecDeque::new(),
            window: 1,
            in_window: 0,
            parked: 0,
            scratch: vec![0; SCRATCH_BYTES],
            sources,
            next_source: 0,
            endings: Endings::default(),
        })
    }

    /// Queues connections; at most `window` are being set up or running at once (connections
    /// parked once established, idle or waiting for [`Client::go`], do not count).
    pub fn submit(&mut self, specs: impl IntoIterator<Item = Spec>, window: usize) {
        self.queue.extend(specs);
        self.window = window.max(1);
    }

    /// Connections queued or open.
    pub fn outstanding(&self) -> usize {
        self.queue.len() + self.conns.len()
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Connections established and parked (idle, or active waiting for [`Client::go`]).
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Drives connections until `done` holds (true) or `deadline` passes (false).
    pub fn run_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Client) -> bool,
    ) -> io::Result<bool> {
        loop {
            while self.in_window < self.window {
                let Some(spec) = self.queue.pop_front() else {
                    break;
                };
                self.start(spec)?;
            }
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let timeout = (deadline - now).min(Duration::from_millis(50));
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let keys: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for key in keys {
                self.drive(key);
            }
        }
    }

    /// Starts the transfers of every parked active connection at once.
    pub fn go(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.parked && c.spec.kind == Kind::Active)
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            let conn = &mut self.conns[key];
            conn.parked = false;
            conn.go = true;
            self.parked -= 1;
            self.in_window += 1;
        }
        for key in keys {
            self.drive(key);
        }
    }

    /// Closes every parked idle connection (a planned, clean close).
    pub fn close_idle(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.parked && c.spec.kind == Kind::Idle)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.finish(key, End::Planned);
        }
    }

    /// Drops every connection and queued spec without recording anything (after a timeout).
    pub fn abandon(&mut self) {
        self.queue.clear();
        for mut conn in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.in_window = 0;
        self.parked = 0;
    }

    fn start(&mut self, spec: Spec) -> io::Result<()> {
        self.in_window += 1;
        let stream = match self.connect(spec.addr) {
            Ok(stream) => stream,
            Err(e) => {
                self.in_window -= 1;
                self.endings
                    .fail(format!("client: connect to {} failed: {e}", spec.addr));
                return Ok(());
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn::new(stream, spec);
        self.poll.registry().register(
            &mut conn.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(conn);
        Ok(())
    }

    fn connect(&mut self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if !self.sources.is_empty() && addr.is_ipv4() {
            let source = self.sources[self.next_source % self.sources.len()];
            self.next_source += 1;
            // The port is chosen at connect, knowing the whole 4-tuple.
            setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
            socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let was_parked = conn.parked;
        let result = conn.pump(&mut self.scratch);
        if !was_parked && conn.parked {
            self.parked += 1;
            self.in_window -= 1;
        }
        if let Some(end) = result {
            self.finish(key, end);
        }
    }

    fn finish(&mut self, key: usize, end: End) {
        let mut conn = self.conns.remove(key);
        if conn.parked {
            self.parked -= 1;
        } else {
            self.in_window -= 1;
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if matches!(end, End::Planned) && conn.spec.kind == Kind::ClientReset {
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        }
        conn.record(&end, &mut self.endings);
    }
}

impl Conn {
    fn new(stream: TcpStream, spec: Spec) -> Conn {
        Conn {
            stream,
            spec,
            connected: false,
            header_sent: 0,
            ready: false,
            parked: false,
            go: false,
            go_sent: false,
            reset_asked: false,
            sent: 0,
            sent_hash: Sha256::new(),
            received: 0,
            received_hash: Sha256::new(),
            eof: false,
            write_shut: false,
        }
    }

    /// Connects, reads and writes until everything would block; `Some` when it is over.
    fn pump(&mut self, scratch: &mut [u8]) -> Option<End> {
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
                return Some(End::Failed(e));
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) => return Some(End::Failed(e)),
            }
        }
        loop {
            let mut progress = false;
            match self.write_some(scratch) {
                Ok(wrote) => progress |= wrote,
                Err(e) => return Some(ended(e)),
            }
            if !self.eof {
                match self.stream.read(scratch) {
                    Ok(0) => {
                        self.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        progress = true;
                        if let Some(end) = self.consume(&scratch[..n]) {
                            return Some(end);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => return Some(ended(e)),
                }
            }
            if self.eof {
                let done = match self.spec.kind {
                    Kind::Active => self.write_shut,
                    _ => true,
                };
                if done {
                    return Some(End::Seen(Seen::Clean));
                }
            }
            if !progress {
                return None;
            }
        }
    }

    fn consume(&mut self, mut bytes: &[u8]) -> Option<End> {
        if !self.ready {
            if bytes[0] != READY {
                return Some(End::Failed(io::Error::other(format!(
                    "expected the ready byte, got {:#x}",
                    bytes[0]
                ))));
            }
            self.ready = true;
            bytes = &bytes[1..];
            match self.spec.kind {
                Kind::Idle | Kind::Active => self.parked = true,
                Kind::Clean | Kind::ClientReset => return Some(End::Planned),
                _ => {}
            }
        }
        if self.spec.kind == Kind::Active {
            self.received += bytes.len() as u64;
            self.received_hash.update(bytes);
        }
        None
    }

    fn write_some(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        let mut wrote = false;
        if self.header_sent < HEADER_BYTES {
            let header = Header {
                kind: self.spec.kind,
                id: self.spec.id,
                len: self.spec.len,
            }
            .encode();
            while self.header_sent < HEADER_BYTES {
                match self.stream.write(&header[self.header_sent..]) {
                    Ok(n) => {
                        self.header_sent += n;
                        wrote = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                    Err(e) => return Err(e),
                }
            }
            if self.spec.kind == Kind::HalfClose {
                self.stream.shutdown(Shutdown::Write)?;
                self.write_shut = true;
            }
        }
        if self.spec.kind == Kind::UpstreamReset && self.ready && !self.reset_asked {
            match self.stream.write(&[RESET_ME]) {
                Ok(_) => {
                    self.reset_asked = true;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                Err(e) => return Err(e),
            }
        }
        if self.spec.kind == Kind::Active && self.go {
            if !self.go_sent {
                match self.stream.write(&[GO]) {
                    Ok(_) => {
                        self.go_sent = true;
                        wrote = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                    Err(e) => return Err(e),
                }
            }
            while self.sent < self.spec.len {
                let n = (self.spec.len - self.sent).min(scratch.len() as u64) as usize;
                fill(self.spec.id, Way::Up, self.sent, &mut scratch[..n]);
                match self.stream.write(&scratch[..n]) {
                    Ok(n) => {
                        self.sent_hash.update(&scratch[..n]);
                        self.sent += n as u64;
                        wrote = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                    Err(e) => return Err(e),
                }
            }
            if !self.write_shut {
                self.stream.shutdown(Shutdown::Write)?;
                self.write_shut = true;
                wrote = true;
            }
        }
        Ok(wrote)
    }

    fn record(mut self, end: &End, endings: &mut Endings) {
        let kind = self.spec.kind;
        if !self.ready
            && let End::Failed(e) = end
        {
            endings.fail(format!(
                "client: {} connection {} failed before it was established: {e}",
                kind.name(),
                self.spec.id
            ));
            return;
        }
        let expected = self.ready
            && match (kind, end) {
                (Kind::Idle | Kind::Clean | Kind::ClientReset, End::Planned) => true,
                (Kind::UpstreamReset | Kind::IdleTimeout, End::Seen(Seen::Reset)) => true,
                (Kind::HalfClose, End::Seen(Seen::Clean)) => true,
                (Kind::Active, End::Seen(Seen::Clean)) => self.received == self.spec.len,
                _ => false,
            };
        if kind == Kind::Active {
            endings.hashes.insert(
                self.spec.id,
                Hashes {
                    sent: format!("{:x}", std::mem::take(&mut self.sent_hash).finalize()),
                    received: format!("{:x}", std::mem::take(&mut self.received_hash).finalize()),
                    received_len: self.received,
                },
            );
        }
        endings.record(kind, expected, || {
            let how = match end {
                End::Seen(seen) => format!("{seen:?}"),
                End::Planned => "its planned close".into(),
                End::Failed(e) => format!("error {e}"),
            };
            format!(
                "client: {} connection {} ended by {how} (ready: {}, received {} bytes)",
                kind.name(),
                self.spec.id,
                self.ready,
                self.received
            )
        });
    }
}

fn ended(error: io::Error) -> End {
    match Seen::from_error(&error) {
        Some(seen) => End::Seen(seen),
        None => End::Failed(error),
    }
}
