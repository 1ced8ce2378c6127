//! Judging a health check's reply, without I/O: whether the bytes read so far pass, fail, or
//! need more.

use crate::route::Probe;

/// What the reply read so far says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The upstream passes.
    Pass,
    /// It fails, and why.
    Fail(String),
    /// Not enough read yet to tell.
    NeedMore,
}

/// Judges `reply` (everything read so far) for `probe`; `ended`: the upstream closed its side,
/// so nothing more will come.
pub(crate) fn judge(probe: &Probe, reply: &[u8], ended: bool) -> Verdict {
    let verdict = match probe {
        Probe::Connect => Verdict::Pass,
        Probe::SendExpect { expect, .. } => {
            let n = reply.len().min(expect.len());
            if reply[..n] != expect[..n] {
                Verdict::Fail(format!(
                    "replied {:?}, expected {:?}",
                    String::from_utf8_lossy(&reply[..n]),
                    String::from_utf8_lossy(expect)
                ))
            } else if n == expect.len() {
                Verdict::Pass
            } else {
                Verdict::NeedMore
            }
        }
        Probe::HttpGet { status, .. } => match http_status(reply) {
            Some(Ok(got)) if got == *status => Verdict::Pass,
            Some(Ok(got)) => Verdict::Fail(format!("HTTP status {got}, expected {status}")),
            Some(Err(())) => Verdict::Fail("not an HTTP response".into()),
            None => Verdict::NeedMore,
        },
    };
    match verdict {
        Verdict::NeedMore if ended => Verdict::Fail(format!(
            "closed after {} bytes, before the reply could be judged",
            reply.len()
        )),
        other => other,
    }
}

/// The status of an HTTP/1.x response's status line: `None` until its first 12 bytes
/// (`HTTP/1.1 200`) are in, `Err` if they are not a status line.
fn http_status(reply: &[u8]) -> Option<Result<u16, ()>> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = reply.len().min(PREFIX.len());
    if reply[..n] != PREFIX[..n] {
        return Some(Err(()));
    }
    if reply.len() < 12 {
        return None;
    }
    let ok = reply[8] == b' ' && reply[9..12].iter().all(u8::is_ascii_digit);
    if !ok {
        return Some(Err(()));
    }
    let digits = std::str::from_utf8(&reply[9..12]).map_err(|_| ());
    Some(digits.and_then(|d| d.parse().map_err(|_| ())))
}

/// The request of an HTTP check: `GET path` to `host`, closed after the response.
pub(crate) fn http_request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: spliceway-health-check\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_expect_matches_the_prefix() {
        let probe = Probe::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        assert_eq!(judge(&probe, b"", false), Verdict::NeedMore);
        assert_eq!(judge(&probe, b"+PO", false), Verdict::NeedMore);
        assert_eq!(judge(&probe, b"+PONG\r\n", false), Verdict::Pass);
        assert!(matches!(judge(&probe, b"-ERR", false), Verdict::Fail(_)));
        assert!(matches!(judge(&probe, b"+PO", true), Verdict::Fail(_)));
    }

    #[test]
    fn http_get_reads_the_status() {
        let probe = Probe::HttpGet {
            path: "/health".into(),
            status: 200,
        };
        assert_eq!(judge(&probe, b"HTTP/1.1 20", false), Verdict::NeedMore);
        assert_eq!(judge(&probe, b"HTTP/1.1 200 OK\r\n", false), Verdict::Pass);
        assert_eq!(
            judge(&probe, b"HTTP/1.0 503 Busy\r\n", false),
            Verdict::Fail("HTTP status 503, expected 200".into())
        );
        assert!(matches!(judge(&probe, b"SSH-2.0", false), Verdict::Fail(_)));
        assert!(matches!(
            judge(&probe, b"HTTP/1.1 2x0", false),
            Verdict::Fail(_)
        ));
        assert!(matches!(judge(&probe, b"HTTP/1.1", true), Verdict::Fail(_)));
        assert_eq!(judge(&Probe::Connect, b"", true), Verdict::Pass);
    }

    #[test]
    fn the_request_is_one_get_that_closes() {
        let r = String::from_utf8(http_request("/h", "db-1.internal")).unwrap();
        assert!(r.starts_with("GET /h HTTP/1.1\r\nHost: db-1.internal\r\n"));
        assert!(r.ends_with("Connection: close\r\n\r\n"));
    }
}
