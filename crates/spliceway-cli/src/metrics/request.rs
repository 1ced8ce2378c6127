//! The head of an HTTP/1.x request, collected from a connection in pieces and parsed under a
//! size limit. It is the only part of a request this server reads: `GET` and `HEAD` carry no
//! body, and a request that declares one is answered and its connection closed.
//!
//! Pure, without I/O, so that every case is a unit test: a connection reads at most
//! [`HeadBuffer::room`] bytes, hands them to [`HeadBuffer::push`], and asks
//! [`HeadBuffer::take`] for the next request. Bytes after a complete head (pipelined requests)
//! stay in the buffer for the next call. The buffer never holds more than [`MAX_HEAD_BYTES`]: a
//! head that has not ended by then is [`HeadError::TooLarge`] (answered 431), never a bigger
//! allocation (issue 24, finding 5: three 64 MiB request lines took the old server from 6 to
//! 198 MiB).

/// The longest request head accepted (request line and headers, with their line ends).
/// Health checks and Prometheus send a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The methods this server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other well-formed method (answered 405).
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path of the target, without its query string.
    pub path: String,
    /// Whether the client lets the connection stay open after the answer: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Whether a body follows the head (`Content-Length` above 0, or `Transfer-Encoding`).
    /// The server does not read bodies, so it closes such a connection after its answer.
    pub has_body: bool,
}

/// Why a head cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// No end of the head within [`MAX_HEAD_BYTES`] (431).
    TooLarge,
    /// Not an HTTP/1.x request head (400); the text says what was wrong.
    Malformed(&'static str),
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1 (505).
    Version,
}

/// What [`HeadBuffer::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The head has not ended yet: read more.
    Incomplete,
    Request(Request),
    /// The connection cannot go on (its framing is lost): answer and close.
    Error(HeadError),
}

/// The bytes of a connection's next request head (and any pipelined after it), at most
/// [`MAX_HEAD_BYTES`].
#[derive(Debug, Default)]
pub struct HeadBuffer {
    bytes: Vec<u8>,
    /// How far the search for the end of the head got without finding it, so that a head
    /// arriving a byte at a time is not searched from the start each time.
    scanned: usize,
}

impl HeadBuffer {
    pub fn new() -> Self {
        HeadBuffer::default()
    }

    /// No byte of a request is here.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many more bytes may be pushed.
    pub fn room(&self) -> usize {
        MAX_HEAD_BYTES - self.bytes.len()
    }

    /// Adds bytes read from the connection; at most [`room`](Self::room) of them.
    pub fn push(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.room(), "more than the head limit");
        self.bytes.extend_from_slice(bytes);
    }

    /// The next request, if its head is complete; its bytes leave the buffer.
    pub fn take(&mut self) -> Next {
        // Empty lines before a request line are ignored (RFC 9112, section 2.2): some clients
        // send a CRLF after a request's body.
        let blank = self
            .bytes
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            self.bytes.drain(..blank);
            self.scanned = self.scanned.saturating_sub(blank);
        }
        match head_end(&self.bytes, self.scanned.saturating_sub(2)) {
            Some(end) => {
                let parsed = parse_head(&self.bytes[..end]);
                self.bytes.drain(..end);
                self.scanned = 0;
                match parsed {
                    Ok(request) => Next::Request(request),
                    Err(e) => Next::Error(e),
                }
            }
            None if self.bytes.len() >= MAX_HEAD_BYTES => Next::Error(HeadError::TooLarge),
            None => {
                self.scanned = self.bytes.len();
                Next::Incomplete
            }
        }
    }
}

/// The index just past the empty line that ends a head (`\n\r\n` or `\n\n`), searching from
/// `from`.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// A token character of RFC 9110 (methods and header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// Parses a complete head (its final empty line included).
pub fn parse_head(head: &[u8]) -> Result<Request, HeadError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "the request line is not METHOD TARGET VERSION",
        ));
    };
    if !is_token(method) {
        return Err(HeadError::Malformed("bad method"));
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HeadError::Version);
        }
        _ => return Err(HeadError::Malformed("bad version")),
    };
    let path = path_of(target)?;

    let (mut close, mut keep_alive_token, mut has_body) = (false, false, false);
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HeadError::Malformed("obsolete line folding"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HeadError::Malformed("a header line without a colon"));
        };
        let name = &line[..colon];
        if !is_token(name) {
            return Err(HeadError::Malformed("bad header name"));
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::Malformed("bad Content-Length"))?;
            has_body |= length > 0;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_body = true;
        }
    }
    Ok(Request {
        method,
        path,
        keep_alive: !close && (http11 || keep_alive_token),
        has_body,
    })
}

/// The path of a request target: origin form (`/metrics?x`), absolute form
/// (`http://host/metrics`) or `*`; without query or fragment.
fn path_of(target: &[u8]) -> Result<String, HeadError> {
    if !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::Malformed("bad request target"));
    }
    // Graphic ASCII: valid UTF-8.
    let target = std::str::from_utf8(target).map_err(|_| HeadError::Malformed("bad target"))?;
    let path = if target == "*" || target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |slash| &rest[slash..])
    } else {
        return Err(HeadError::Malformed("bad request target"));
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Ok(path[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, keep_alive: bool) -> Next {
        Next::Request(Request {
            method: Method::Get,
            path: path.into(),
            keep_alive,
            has_body: false,
        })
    }

    fn take_all(input: &[u8]) -> Next {
        let mut buffer = HeadBuffer::new();
        buffer.push(input);
        buffer.take()
    }

    #[test]
    fn a_complete_head_is_one_request() {
        assert_eq!(
            take_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"),
            request("/metrics", true)
        );
        assert_eq!(
            take_all(b"GET /healthz HTTP/1.0\r\n\r\n"),
            request("/healthz", false)
        );
        // Bare line feeds, a query string, an absolute target.
        assert_eq!(
            take_all(b"GET /readyz?probe=1 HTTP/1.1\n\n"),
            request("/readyz", true)
        );
        assert_eq!(
            take_all(b"GET http://relay:9898/metrics HTTP/1.1\r\n\r\n"),
            request("/metrics", true)
        );
        assert_eq!(
            take_all(b"HEAD / HTTP/1.1\r\n\r\n"),
            Next::Request(Request {
                method: Method::Head,
                path: "/".into(),
                keep_alive: true,
                has_body: false
            })
        );
    }

    #[test]
    fn connection_headers_decide_keep_alive() {
        assert_eq!(
            take_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
            request("/", false)
        );
        assert_eq!(
            take_all(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n"),
            request("/", true)
        );
        assert_eq!(
            take_all(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"),
            request("/", false)
        );
    }

    #[test]
    fn a_declared_body_is_noted() {
        let Next::Request(r) = take_all(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        else {
            panic!()
        };
        assert_eq!((r.method, r.has_body), (Method::Other, true));
        let Next::Request(r) = take_all(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        else {
            panic!()
        };
        assert!(r.has_body);
        let Next::Request(r) = take_all(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") else {
            panic!()
        };
        assert!(!r.has_body);
    }

    #[test]
    fn a_head_split_across_reads_is_found_once_complete() {
        let text = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut buffer = HeadBuffer::new();
        for (i, byte) in text.iter().enumerate() {
            assert_eq!(buffer.take(), Next::Incomplete, "after {i} bytes");
            buffer.push(&[*byte]);
        }
        assert_eq!(buffer.take(), request("/metrics", true));
        assert!(buffer.is_empty());
        assert_eq!(buffer.take(), Next::Incomplete);
    }

    #[test]
    fn the_end_of_a_head_split_between_reads_is_found() {
        for split in 1..4 {
            let mut buffer = HeadBuffer::new();
            let text = b"GET / HTTP/1.1\r\n\r\n";
            let at = text.len() - split;
            buffer.push(&text[..at]);
            assert_eq!(buffer.take(), Next::Incomplete);
            buffer.push(&text[at..]);
            assert_eq!(
                buffer.take(),
                request("/", true),
                "split {split} from the end"
            );
        }
    }

    #[test]
    fn pipelined_requests_stay_for_the_next_take() {
        let mut buffer = HeadBuffer::new();
        buffer.push(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\nGET /met");
        assert_eq!(buffer.take(), request("/healthz", true));
        assert_eq!(buffer.take(), request("/readyz", true));
        assert_eq!(buffer.take(), Next::Incomplete);
        assert_eq!(buffer.room(), MAX_HEAD_BYTES - b"GET /met".len());
        buffer.push(b"rics HTTP/1.1\r\n\r\n");
        assert_eq!(buffer.take(), request("/metrics", true));
    }

    #[test]
    fn empty_lines_before_a_request_are_ignored() {
        assert_eq!(
            take_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            request("/", true)
        );
        let mut buffer = HeadBuffer::new();
        buffer.push(b"\r\n");
        assert_eq!(buffer.take(), Next::Incomplete);
        assert!(buffer.is_empty(), "blank lines are not kept");
    }

    #[test]
    fn a_head_that_does_not_end_within_the_limit_is_too_large() {
        let mut buffer = HeadBuffer::new();
        buffer.push(b"GET / HTTP/1.1\r\nX: ");
        while buffer.room() > 0 {
            assert_eq!(buffer.take(), Next::Incomplete);
            let n = buffer.room().min(1000);
            buffer.push(&vec![b'a'; n]);
        }
        assert_eq!(buffer.take(), Next::Error(HeadError::TooLarge));
        // A head ending exactly at the limit is served.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(MAX_HEAD_BYTES - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(take_all(&exact), request("/", true));
    }

    #[test]
    #[should_panic(expected = "more than the head limit")]
    fn the_buffer_never_grows_past_the_limit() {
        let mut buffer = HeadBuffer::new();
        buffer.push(&vec![b'a'; MAX_HEAD_BYTES + 1]);
    }

    #[test]
    fn bad_request_lines_and_headers_are_malformed() {
        for bad in [
            &b"BROKEN\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            assert!(
                matches!(take_all(bad), Next::Error(HeadError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                take_all(bad)
            );
        }
        assert_eq!(
            take_all(b"GET / HTTP/2.0\r\n\r\n"),
            Next::Error(HeadError::Version)
        );
    }
}
