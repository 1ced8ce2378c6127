//! Shared helpers: a relay on a thread, test servers, data generators, named assertions.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spliceway::{Relay, RelayHandle, Route, UpstreamAddr};

/// Upper bound for any single wait in these tests.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay running on its own thread; stopped (immediately) when dropped.
pub struct TestRelay {
    pub handle: RelayHandle,
    pub addr: SocketAddr,
    thread: Option<JoinHandle<Result<(), spliceway::Error>>>,
}

impl TestRelay {
    pub fn start(route: Route) -> TestRelay {
        Self::start_with(Relay::builder().route(route))
    }

    pub fn start_with(builder: spliceway::RelayBuilder) -> TestRelay {
        let relay = builder.build().expect("relay builds");
        let handle = relay.handle();
        let addr = relay.local_addrs()[0].1;
        let thread = std::thread::spawn(move || relay.run());
        TestRelay {
            handle,
            addr,
            thread: Some(thread),
        }
    }

    /// Graceful stop; waits for `run()` to return.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("relay thread").expect("relay ran");
        }
    }

    /// Waits until `check` holds for the relay's counters (bounded by TEST_TIMEOUT).
    pub fn wait_for(&self, what: &str, check: impl Fn(&spliceway::StatsSnapshot) -> bool) {
        wait_until(what, || check(&self.handle.snapshot().stats));
        let _ = &self.handle;
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A route from `name` to `upstream` listening on an ephemeral loopback port.
pub fn route_to(upstream: SocketAddr, mode: spliceway::Mode) -> Route {
    Route::new("test", UpstreamAddr::Ip(upstream))
        .listen("127.0.0.1:0".parse().unwrap())
        .with_options(|o| o.mode = mode)
}

/// Polls `check` until it holds; panics after TEST_TIMEOUT.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < TEST_TIMEOUT,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A test server: accepts connections on loopback and runs `serve` for each on its own thread.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start<F>(serve: F) -> Server
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
                        stream.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
                        let serve = Arc::clone(&serve);
                        workers.push(std::thread::spawn(move || serve(stream)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("test server accept: {e}"),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr` with the test timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TEST_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
}

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for hundreds of MiB.
pub struct Generator(u64);

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SHA-256 of `len` bytes of `Generator::new(seed)`, generated in the same chunks as
/// [`send_generated`] (8-byte aligned chunks make the stream independent of chunking).
pub fn expected_hash(seed: u64, len: u64) -> String {
    let mut g = Generator::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    format!("{:x}", h.finalize())
}

/// Writes `len` generated bytes; returns their SHA-256.
pub fn send_generated(w: &mut impl Write, seed: u64, len: u64) -> io::Result<String> {
    let mut g = Generator::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Reads to end of stream; returns (bytes, SHA-256), or the error that ended the read.
pub fn read_hashed(r: &mut impl Read) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((total, format!("{:x}", h.finalize())));
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// Reads until the stream ends; asserts it ended with a reset, not a clean end of stream.
pub fn assert_reset(stream: &mut TcpStream, context: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < TEST_TIMEOUT,
            "{context}: no reset within the timeout"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("{context}: saw a clean end of stream where a reset was due"),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                panic!("{context}: timed out waiting for a reset")
            }
            Err(e) => panic!("{context}: expected a reset, got {e}"),
        }
    }
}

/// Reads until a clean end of stream; asserts it is not a reset. Returns the bytes read.
pub fn assert_clean_end(stream: &mut TcpStream, context: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) => panic!("{context}: expected a clean end of stream, got {e}"),
    }
}

/// Resets a socket: close with SO_LINGER 0.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Descriptors this process holds.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A shared record of what test servers received: (bytes, hash) per connection.
pub type Received = Arc<Mutex<Vec<(u64, String)>>>;

pub fn half_close(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).unwrap();
}

impl TestRelay {
    /// Waits up to `limit` for `run()` to return by itself (after a shutdown was asked for) and
    /// returns what it returned; panics if it is still running then.
    pub fn join_within(mut self, limit: Duration) -> Result<(), spliceway::Error> {
        let thread = self.thread.take().expect("relay thread");
        let start = Instant::now();
        while !thread.is_finished() {
            assert!(
                start.elapsed() < limit,
                "run() did not return within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("relay thread")
    }

    /// Waits until `n` connections have closed and each close has been counted under its
    /// reason too (the engine counts `closed` before the reason's counter, so `closed == n`
    /// alone may be seen a moment before `completed`, `client_resets`, ... catch up).
    pub fn wait_closed(&self, n: u64) {
        let start = Instant::now();
        loop {
            let s = self.handle.snapshot().stats;
            if s.closed == n && ends_counted(&s) == n {
                return;
            }
            assert!(
                start.elapsed() < TEST_TIMEOUT,
                "timed out waiting for {n} connections closed and counted: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The listening address of the route named `route`.
    pub fn addr_of(&self, route: &str) -> SocketAddr {
        self.handle
            .local_addrs()
            .into_iter()
            .find(|(name, _)| name == route)
            .unwrap_or_else(|| panic!("no route {route:?}"))
            .1
    }
}

/// An echo server: writes back what it reads; at end of stream it half-closes and returns. A
/// reset ends the connection quietly.
pub fn echo_server() -> Server {
    Server::start(|mut stream| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    let _ = stream.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

/// One echo round trip through `addr`: sends `message`, half-closes, and expects the message
/// back followed by a clean end of stream.
pub fn echo_round_trip(addr: SocketAddr, message: &[u8]) {
    let mut stream = connect(addr);
    stream.write_all(message).unwrap();
    half_close(&stream);
    assert_eq!(
        assert_clean_end(&mut stream, "echo round trip"),
        message,
        "echoed bytes"
    );
}

/// A loopback address nothing listens on (a port the kernel just handed out and took back).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// How a stream ended, read from the receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A clean end of stream after this many bytes.
    Clean(u64),
    /// A reset after this many bytes.
    Reset(u64),
    /// Another error after this many bytes.
    Other(u64, String),
}

/// Reads until the stream ends (bounded by the stream's read timeout) and says how it ended.
pub fn read_ending(stream: &mut TcpStream) -> Ending {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ending::Clean(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ending::Reset(total),
            Err(e) => return Ending::Other(total, e.to_string()),
        }
    }
}

/// Waits (up to `limit`) until the socket has a pending error (`SO_ERROR`), as a reset leaves
/// it, without reading or writing a byte. Returns the error, or `None` after `limit`.
pub fn wait_for_socket_error(stream: &TcpStream, limit: Duration) -> Option<io::Error> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(e)) = stream.take_error() {
            return Some(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Connects to `addr` and expects the connection to be reset, whether the reset is already
/// there when the connect completes (a relay that refuses at once) or comes later.
pub fn connect_expecting_reset(addr: SocketAddr, context: &str) {
    match TcpStream::connect_timeout(&addr, TEST_TIMEOUT) {
        Ok(mut stream) => {
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            assert_reset(&mut stream, context);
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{context}: expected a reset, the connect failed with {e}"),
    }
}

/// Connections counted under an end reason (every reason but "splice unsupported").
pub fn ends_counted(s: &spliceway::StatsSnapshot) -> u64 {
    s.completed
        + s.client_resets
        + s.upstream_resets
        + s.client_resets_after_end
        + s.upstream_resets_after_end
        + s.idle_timeouts
        + s.half_close_timeouts
        + s.upstream_unavailable
        + s.denied
        + s.sni_refused
        + s.resolve_refused
        + s.drain_resets
        + s.descriptor_exhausted
        + s.client_limit_refused
        + s.proxy_header_errors().iter().sum::<u64>()
}

/// A minimal TLS 1.3-style ClientHello record naming `server_name` (SNI), enough for the
/// relay's SNI routing: record header, handshake header, version, random, no session id, one
/// cipher suite, null compression, one `server_name` extension.
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let name = server_name.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // server_name_list
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&0u16.to_be_bytes()); // server_name
    extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression methods
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Changes a route's connection options in a chain of builder calls. Options are set in one
/// way only, `Route::options(ConnectionOptions)`; this starts from the route's own.
pub trait WithOptions {
    /// The route with `change` applied to its connection options.
    fn with_options(self, change: impl FnOnce(&mut spliceway::ConnectionOptions)) -> Self;
}

impl WithOptions for Route {
    fn with_options(self, change: impl FnOnce(&mut spliceway::ConnectionOptions)) -> Self {
        let mut options = self.connection_options().clone();
        change(&mut options);
        self.options(options)
    }
}
