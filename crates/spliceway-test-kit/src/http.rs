//! Plain HTTP/1.0 exchanges with a bounded time, for the metrics and health endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one health request may take in the abuse tests: generous, so that a loaded test
/// machine does not flake, yet far below the unbounded waits the old server gave (the soak
/// reports the tight figure).
pub const HEALTH_BOUND: Duration = Duration::from_secs(2);

/// Sends `request` (raw bytes) to `addr` and reads the answer until the server closes or
/// `timeout` passes (each step bounded by it): the status code and the body.
pub fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => response.extend_from_slice(&buf[..n]),
        }
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// `GET path` (HTTP/1.0, so the server closes after its answer) within `timeout`: the status
/// code and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: spliceway\r\n\r\n").as_bytes(),
        timeout,
    )
}

/// `/healthz` and `/readyz` both answer 200 within [`HEALTH_BOUND`] each; panics with what
/// happened otherwise.
pub fn assert_health_answers(addr: SocketAddr, what: &str) {
    for path in ["/healthz", "/readyz"] {
        let started = Instant::now();
        let answer = http_get(addr, path, HEALTH_BOUND);
        let took = started.elapsed();
        match answer {
            Ok((200, _)) => {}
            other => panic!("{what}: {path} answered {other:?} after {took:?}"),
        }
    }
}
