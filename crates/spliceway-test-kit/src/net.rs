//! Sockets on loopback: free ports, connecting with timeouts, and how a stream ended.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::wait::TEST_TIMEOUT;

/// A loopback port that was free a moment ago (TCP and UDP), for a test that must name its
/// port before the relay binds it. It comes from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the kernel never hands out by itself: no socket
/// bound to port 0 and no outgoing connection of a test running meanwhile can take it, as
/// happened with ports taken from the ephemeral range. Only another explicit bind can, so
/// each process walks the range from its own offset (its PID). Falls back to a port the
/// kernel hands out when that range is too small or all taken.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    if high > low {
        let span = u32::from(high - low);
        let offset = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span.min(2000) {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = low + ((offset + n) % span) as u16;
            let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok();
            if free {
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener
        .local_addr()
        .expect("a bound listener's address")
        .port()
}

/// A loopback address nothing listens on (a [`free_port`], bound a moment ago and released).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Ports `[low, high)` for [`free_port`]: from 20000 up to the start of the ephemeral range
/// (empty when the range starts lower, or cannot be read).
fn below_ephemeral_range() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    (LOW, start.max(LOW))
}

/// Connects to `addr` with [`TEST_TIMEOUT`] on the connect, the reads and the writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_within(addr, TEST_TIMEOUT)
}

/// Connects to `addr` with `timeout` on the connect, the reads and the writes.
pub fn connect_within(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    // These can fail once the peer has already reset the connection (a denied client); the
    // next read or write then reports it.
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    stream
}

/// Sends `data` through `addr` (to an echo upstream), half-closes, and returns what came back
/// until the end of stream, each step bounded by `timeout`.
pub fn try_echo(addr: SocketAddr, data: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(data)?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// Half-closes `stream` (sends a FIN; reading goes on).
pub fn half_close(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).unwrap();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range_and_are_bindable() {
        let (low, high) = below_ephemeral_range();
        let first = free_port();
        let second = free_port();
        assert_ne!(first, second, "each call moves on");
        for port in [first, second] {
            if high > low {
                assert!((low..high).contains(&port), "{port} not in {low}..{high}");
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap();
            UdpSocket::bind(("127.0.0.1", port)).unwrap();
        }
        let dead = dead_addr();
        let refused = TcpStream::connect_timeout(&dead, Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
