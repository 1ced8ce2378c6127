//! The upstream of the scale benchmark: one mio event loop on its own thread serving every
//! connection the relay opens, as its [`Header`] says (see [`super::protocol`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use sha2::{Digest, Sha256};
use slab::Slab;

use super::endings::{Endings, Hashes, Seen};
use super::protocol::{GO, HEADER_BYTES, Header, Kind, READY, RESET_ME, Way, fill};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Accept queue length (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;
/// Bytes read or generated per call.
const SCRATCH_BYTES: usize = 256 * 1024;

/// A running upstream; stopped when dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    endings: Arc<Mutex<Endings>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Upstream {
    /// Starts listening on an ephemeral port of 127.0.0.1.
    pub fn start() -> io::Result<Upstream> {
        // Not mio's `bind`: its backlog of 128 overflows in bursts of 500, and each dropped SYN
        // costs the client a 1 s retransmission. 4096 is the usual `net.core.somaxconn` cap.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(LISTEN_BACKLOG)?;
        socket.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(socket.into());
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let open = Arc::new(AtomicUsize::new(0));
        let endings = Arc::new(Mutex::new(Endings::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            poll,
            listener,
            conns: Slab::new(),
            scratch: vec![0; SCRATCH_BYTES],
            open: Arc::clone(&open),
            endings: Arc::clone(&endings),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("swb-upstream".into())
            .spawn(move || server.run())?;
        Ok(Upstream {
            addr,
            open,
            endings,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Takes the endings recorded so far.
    pub fn take_endings(&self) -> Endings {
        self.endings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    open: Arc<AtomicUsize>,
    endings: Arc<Mutex<Endings>>,
    stop: Arc<AtomicBool>,
}

/// What ended a connection.
enum End {
    /// `Seen` by this end; `planned_reset`: this end reset it as its kind says.
    Seen(Seen),
    PlannedReset,
    Failed(io::Error),
}

struct Conn {
    stream: TcpStream,
    header: [u8; HEADER_BYTES],
    header_len: usize,
    head: Option<Header>,
    ready_pending: bool,
    go: bool,
    received: u64,
    received_hash: Sha256,
    sent: u64,
    sent_hash: Sha256,
    eof: bool,
    write_shut: bool,
    stray_bytes: u64,
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    Token(key) => self.drive(key),
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    stream.set_nodelay(true)?;
                    entry.insert(Conn::new(stream));
                    self.open.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: say so and try again at the next event.
                    eprintln!("upstream: accept failed: {e}");
                    return Ok(());
                }
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(end) = conn.pump(&mut self.scratch) else {
            return;
        };
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if matches!(end, End::PlannedReset) {
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        }
        // Closes the socket (a reset if planned so).
        conn.record(
            &end,
            &mut self.endings.lock().unwrap_or_else(|e| e.into_inner()),
        );
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            header: [0; HEADER_BYTES],
            header_len: 0,
            head: None,
            ready_pending: false,
            go: false,
            received: 0,
            received_hash: Sha256::new(),
            sent: 0,
            sent_hash: Sha256::new(),
            eof: false,
            write_shut: false,
            stray_bytes: 0,
        }
    }

    /// Reads and writes until both would block; `Some` when the connection is over.
    fn pump(&mut self, scratch: &mut [u8]) -> Option<End> {
        loop {
            let mut progress = false;
            if !self.eof {
                match self.stream.read(scratch) {
                    Ok(0) => {
                        self.eof = true;
                        progress = true;
                        if self.head.is_some_and(|h| h.kind == Kind::HalfClose) {
                            self.ready_pending = true;
                        }
                    }
                    Ok(n) => {
                        progress = true;
                        if self.consume(&scratch[..n]) {
                            return Some(End::PlannedReset);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => return Some(ended(e)),
                }
            }
            match self.write_some(scratch) {
                Ok(wrote) => progress |= wrote,
                Err(e) => return Some(ended(e)),
            }
            if let Some(end) = self.finished() {
                return Some(end);
            }
            if !progress {
                return None;
            }
        }
    }

    /// Takes bytes read; true if the client asked for a reset.
    fn consume(&mut self, mut bytes: &[u8]) -> bool {
        if self.head.is_none() {
            let take = (HEADER_BYTES - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == HEADER_BYTES {
                self.head = Header::decode(&self.header);
                match self.head {
                    Some(h) if h.kind != Kind::HalfClose => self.ready_pending = true,
                    _ => {}
                }
            }
        }
        let Some(head) = self.head else {
            self.stray_bytes += bytes.len() as u64;
            return false;
        };
        match head.kind {
            Kind::Active => {
                if !self.go && !bytes.is_empty() {
                    if bytes[0] == GO {
                        self.go = true;
                    } else {
                        self.stray_bytes += 1;
                    }
                    bytes = &bytes[1..];
                }
                self.received += bytes.len() as u64;
                self.received_hash.update(bytes);
            }
            Kind::UpstreamReset if bytes.first() == Some(&RESET_ME) => return true,
            _ => self.stray_bytes += bytes.len() as u64,
        }
        false
    }

    /// Writes what is due; true if anything was written.
    fn write_some(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        let mut wrote = false;
        if self.ready_pending {
            match self.stream.write(&[READY]) {
                Ok(_) => {
                    self.ready_pending = false;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let Some(head) = self.head else {
            return Ok(wrote);
        };
        if head.kind == Kind::Active && self.go {
            while self.sent < head.len {
                let n = (head.len - self.sent).min(scratch.len() as u64) as usize;
                fill(head.id, Way::Down, self.sent, &mut scratch[..n]);
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
        }
        let done_writing = match head.kind {
            Kind::Active => self.go && self.sent == head.len,
            Kind::HalfClose => self.eof && !self.ready_pending,
            _ => false,
        };
        if done_writing && !self.write_shut {
            self.stream.shutdown(Shutdown::Write)?;
            self.write_shut = true;
            wrote = true;
        }
        Ok(wrote)
    }

    fn finished(&self) -> Option<End> {
        if !self.eof {
            return None;
        }
        match self.head.map(|h| h.kind) {
            Some(Kind::Active | Kind::HalfClose) => {
                self.write_shut.then_some(End::Seen(Seen::Clean))
            }
            _ => Some(End::Seen(Seen::Clean)),
        }
    }

    fn record(mut self, end: &End, endings: &mut Endings) {
        let Some(head) = self.head else {
            endings.headerless += 1;
            return;
        };
        let kind = head.kind;
        let expected = match (kind, end) {
            (Kind::UpstreamReset, End::PlannedReset) => true,
            (Kind::ClientReset | Kind::IdleTimeout, End::Seen(Seen::Reset)) => true,
            (Kind::Idle | Kind::Clean, End::Seen(Seen::Clean)) => true,
            (Kind::HalfClose, End::Seen(Seen::Clean)) => self.stray_bytes == 0,
            (Kind::Active, End::Seen(Seen::Clean)) => self.received == head.len,
            _ => false,
        };
        if kind == Kind::Active {
            endings.hashes.insert(
                head.id,
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
                End::PlannedReset => "its own reset".into(),
                End::Failed(e) => format!("error {e}"),
            };
            format!(
                "upstream: {} connection {} ended by {how} (received {} bytes)",
                kind.name(),
                head.id,
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
