//! The accept-loop test server, and the echo and hash servers built on it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::net::try_echo;
use crate::wait::TEST_TIMEOUT;

/// A test server: accepts connections and runs `serve` for each on its own thread, with
/// [`TEST_TIMEOUT`] on its reads and writes. Dropping it stops the accept loop and waits for the
/// handlers, which are bounded by those timeouts (and may watch the stop flag they are given).
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on an ephemeral loopback port (127.0.0.1).
    pub fn start<F>(serve: F) -> Server
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("test server binds");
        Server::start_on(listener, move |stream, _stop| serve(stream))
    }

    /// A server on `listener` (bound wherever the caller chose, in a namespace for one).
    /// `serve` gets a flag that is raised when the server is dropped, for handlers that must
    /// not wait forever on a link that was cut.
    pub fn start_on<F>(listener: TcpListener, serve: F) -> Server
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
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
                        let stop = Arc::clone(&stop2);
                        workers.push(std::thread::spawn(move || serve(stream, &stop)));
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

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
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

/// Writes back what it reads; at end of stream it half-closes and returns. A reset or a
/// timeout ends the connection quietly. The handler of [`echo_server`].
pub fn echo(stream: &mut TcpStream) {
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
}

/// An echo server on loopback: see [`echo`].
pub fn echo_server() -> Server {
    Server::start(|mut stream| echo(&mut stream))
}

/// A server on loopback that reads each connection to its end and answers
/// `"<bytes> <sha256 hex>\n"` ([`crate::hash_answer`] of what it read, and a newline).
pub fn hash_server() -> Server {
    Server::start(|mut stream| {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                Err(_) => return,
            }
        }
        let _ = writeln!(stream, "{total} {:x}", hasher.finalize());
    })
}

/// The address of one echo server shared by every test of this process, started on first use
/// and running until the process exits: for helpers that return a relay configured with an
/// upstream and have nowhere to keep a [`Server`].
pub fn shared_echo_server() -> SocketAddr {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(echo_server).addr
}

/// As [`shared_echo_server`], for a [`hash_server`].
pub fn shared_hash_server() -> SocketAddr {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(hash_server).addr
}

/// One echo round trip through `addr`: sends `message`, half-closes, and expects the message
/// back followed by a clean end of stream.
pub fn echo_round_trip(addr: SocketAddr, message: &[u8]) {
    let back = try_echo(addr, message, TEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("echo round trip through {addr}: {e}"));
    assert_eq!(back, message, "echoed bytes through {addr}");
}
