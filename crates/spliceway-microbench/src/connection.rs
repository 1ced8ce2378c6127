//! The connection benchmark's body: one connection's whole life (connect, send one byte, read
//! its echo, close), straight to an echo server or through an in-process relay.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use spliceway::{Route, UpstreamAddr};

use crate::InProcessRelay;

/// Longest wait for one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// An echo server serving one connection at a time: it reads one byte, writes it back, then
/// reads until end of stream and closes.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts the server on an ephemeral loopback port.
    pub fn start() -> io::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("swb-echo".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    // A failed connection is the client's problem: it will report it.
                    let _ = stream.and_then(echo_once);
                }
            })?;
        Ok(EchoServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the blocking accept
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn echo_once(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    if stream.read(&mut byte)? == 0 {
        return Ok(());
    }
    stream.write_all(&byte)?;
    let mut rest = [0u8; 64];
    while stream.read(&mut rest)? > 0 {}
    Ok(())
}

/// An echo server, and a relay in front of it.
#[derive(Debug)]
pub struct ConnectionBench {
    /// The echo server (connect here for the direct case).
    pub echo: EchoServer,
    /// The relay (connect to `relay.addr()` for the relayed case).
    pub relay: InProcessRelay,
}

impl ConnectionBench {
    /// Starts an echo server and a splice relay to it.
    pub fn start() -> io::Result<ConnectionBench> {
        let echo = EchoServer::start()?;
        let route = Route::new("bench", UpstreamAddr::Ip(echo.addr))
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let relay = InProcessRelay::start(vec![route])?;
        Ok(ConnectionBench { echo, relay })
    }

    /// Where the relay listens.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay.addr()
    }

    /// Where the echo server listens.
    pub fn direct_addr(&self) -> SocketAddr {
        self.echo.addr
    }
}

/// One connection's life: connect to `addr`, send a byte, read it back, close.
pub fn one_connection(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    if byte != *b"x" {
        return Err(io::Error::other(format!(
            "echoed {byte:?} instead of b\"x\""
        )));
    }
    Ok(())
}
