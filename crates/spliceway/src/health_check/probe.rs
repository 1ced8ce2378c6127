//! One health probe of one address, blocking, on the checker's own thread: connect, send, read
//! until the reply can be judged, all within the check's timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use super::reply::{Verdict, http_request, judge};
use crate::route::{HealthCheck, Probe};

/// The most reply bytes a probe reads: enough for any status line or expected prefix.
const MAX_REPLY_BYTES: usize = 8192;

/// Probes `addr` (the upstream named `host` in an HTTP check's `Host`); `Err` says why it
/// failed.
pub(crate) fn probe(check: &HealthCheck, addr: SocketAddr, host: &str) -> Result<(), String> {
    let started = Instant::now();
    let left = || {
        check
            .timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {:?}", check.timeout))
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("connect: {e}"))?;
    let request = match &check.probe {
        Probe::Connect => return Ok(()),
        Probe::SendExpect { send, .. } => send.clone(),
        Probe::HttpGet { path, .. } => http_request(path, host),
    };
    let _ = stream.set_nodelay(true);
    if !request.is_empty() {
        stream
            .set_write_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(&request)
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match judge(&check.probe, &reply, false) {
            Verdict::Pass => return Ok(()),
            Verdict::Fail(why) => return Err(why),
            Verdict::NeedMore => {}
        }
        if reply.len() >= MAX_REPLY_BYTES {
            return Err(format!("no verdict in the first {MAX_REPLY_BYTES} bytes"));
        }
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return match judge(&check.probe, &reply, true) {
                    Verdict::Pass => Ok(()),
                    Verdict::Fail(why) => Err(why),
                    Verdict::NeedMore => Err("closed early".into()),
                };
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {:?}", check.timeout));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    const TEST_TIMEOUT: Duration = Duration::from_secs(2);

    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
            }
        });
        addr
    }

    #[test]
    fn probes_pass_and_fail_against_real_sockets() {
        let check = |probe| {
            HealthCheck::new(Duration::from_secs(1))
                .timeout(TEST_TIMEOUT)
                .probe(probe)
        };
        let redis = Probe::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        assert_eq!(
            probe(&check(redis.clone()), serve_once(b"+PONG\r\n"), "r"),
            Ok(())
        );
        assert!(probe(&check(redis), serve_once(b"-NOAUTH\r\n"), "r").is_err());
        let http = Probe::HttpGet {
            path: "/".into(),
            status: 204,
        };
        assert_eq!(
            probe(
                &check(http.clone()),
                serve_once(b"HTTP/1.1 204 No Content\r\n\r\n"),
                "h"
            ),
            Ok(())
        );
        assert!(probe(&check(http), serve_once(b"HTTP/1.1 500 Oops\r\n\r\n"), "h").is_err());
        // Nothing listening: connection refused.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(
            probe(&check(Probe::Connect), closed, "c")
                .unwrap_err()
                .starts_with("connect")
        );
    }
}
