//! A small HTTP/1.1 client for S3's REST API, over rustls or plain TCP. Small on purpose: the
//! bench must choose the TCP peer (the endpoint as it resolves, or a `--via` relay) apart from
//! the name TLS verifies and `Host` carries, and must see every byte it times and hashes.
//! Requests are signed before they get here (rusty-s3 presigned URLs, see `ops`).

use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rustls::pki_types::ServerName;

/// How long a connect may take before the endpoint counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read or write may stall: a stuck relay fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes written or read per call, so the progress bar moves during a part.
const CHUNK: usize = 256 * 1024;

/// The largest response header block accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Where a connection goes: the TCP peer, and the name TLS checks and `Host` carries.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Addresses to try, in order (the endpoint's resolved addresses, or one relay).
    pub(crate) addrs: Vec<SocketAddr>,
    /// `host[:port]` as in the request URL (the `Host` header).
    pub(crate) host_header: String,
    /// The TLS server name (SNI and certificate check); None for plain http endpoints.
    pub(crate) tls_name: Option<ServerName<'static>>,
    /// A `--via` relay's name, for error messages.
    pub(crate) via: Option<String>,
}

/// One HTTP request, already signed.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'static str,
    /// Path and query, as signed.
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: &'a [u8],
}

/// A response with its whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A client that keeps one connection open between requests when the server allows it, as
/// the AWS CLI's connection pool does for each of its threads.
pub(crate) struct Client {
    peer: Peer,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<BufReader<Stream>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.peer).finish()
    }
}

impl Client {
    pub(crate) fn new(peer: Peer, tls: Arc<rustls::ClientConfig>) -> Client {
        Client {
            peer,
            tls,
            conn: None,
        }
    }

    /// Sends a request and reads the whole answer; `progress` is told of body bytes sent and
    /// received. A kept-alive connection the server closed meanwhile is replaced once.
    pub(crate) fn send(
        &mut self,
        request: &Request<'_>,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_send(request, progress) {
            Err(error) if reused && error.downcast_ref::<Stale>().is_some() => {
                self.conn = None;
                self.try_send(request, progress)
            }
            other => other,
        }
    }

    fn try_send(
        &mut self,
        request: &Request<'_>,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<Response> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::with_capacity(CHUNK, self.connect()?));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let outcome = exchange(conn, &self.peer, request, progress);
        match &outcome {
            Ok((_, keep)) if *keep => {}
            _ => self.conn = None,
        }
        outcome.map(|(response, _)| response)
    }

    fn connect(&self) -> anyhow::Result<Stream> {
        let mut last = None;
        let mut tcp = None;
        for addr in &self.peer.addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(tcp), _) => tcp,
            (None, Some((addr, e))) => {
                return Err(anyhow!(
                    "{} unreachable: connecting to {addr}: {e}",
                    self.what()
                ));
            }
            (None, None) => bail!("{} has no address", self.what()),
        };
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let Some(name) = &self.peer.tls_name else {
            return Ok(Stream::Plain(tcp));
        };
        let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name.clone())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Handshake now, so that a certificate error is told as one, not as a failed write.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| self.tls_error(name, e))?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    fn what(&self) -> String {
        match &self.peer.via {
            Some(via) => via.clone(),
            None => format!("S3 endpoint {}", self.peer.host_header),
        }
    }

    fn tls_error(&self, name: &ServerName<'_>, error: io::Error) -> anyhow::Error {
        let name = name.to_str();
        let certificate = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        match (&self.peer.via, certificate) {
            (Some(via), true) => anyhow!(
                "through {via}: the certificate is not valid for {name} ({error}); the \
                 relay must pass TLS through untouched (TCP or SNI routing, not TLS \
                 termination)"
            ),
            (Some(via), false) => anyhow!(
                "through {via}: TLS with {name} failed ({error}); the relay must pass \
                 TLS through untouched to the S3 endpoint"
            ),
            (None, true) => anyhow!(
                "the certificate of {} is not valid for {name} ({error}); a private CA is \
                 given with AWS_CA_BUNDLE or ca_bundle in the profile",
                self.peer.host_header
            ),
            (None, false) => anyhow!("TLS with {} failed: {error}", self.peer.host_header),
        }
    }
}

/// The server closed a kept-alive connection before answering: worth one retry.
#[derive(Debug)]
struct Stale;

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection was closed before an answer")
    }
}

impl std::error::Error for Stale {}

/// Writes the request, reads the response; returns it and whether the connection stays open.
fn exchange(
    conn: &mut BufReader<Stream>,
    peer: &Peer,
    request: &Request<'_>,
    progress: &dyn Fn(u64),
) -> anyhow::Result<(Response, bool)> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nUser-Agent: spliceway-bench/{}\r\n",
        request.method,
        request.target,
        peer.host_header,
        request.body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in &request.headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let stream = conn.get_mut();
    let written = stream
        .write_all(head.as_bytes())
        .map_err(|e| anyhow::Error::new(e).context(Stale));
    written?;
    for chunk in request.body.chunks(CHUNK) {
        stream
            .write_all(chunk)
            .context("sending the request body")?;
        progress(chunk.len() as u64);
    }
    stream.flush()?;

    let mut status_line = String::new();
    let n = conn
        .read_line(&mut status_line)
        .context("reading the answer")?;
    if n == 0 {
        return Err(anyhow::Error::new(Stale));
    }
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {:?}", status_line.trim_end()))?;
    let mut headers = Vec::new();
    let mut head_bytes = n;
    loop {
        let mut line = String::new();
        let n = conn.read_line(&mut line).context("reading the answer")?;
        head_bytes += n;
        if n == 0 {
            bail!("the answer ended inside its header");
        }
        if head_bytes > MAX_HEAD_BYTES {
            bail!("the answer's header is over {MAX_HEAD_BYTES} bytes");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || (version == "HTTP/1.0"
            && !find("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
    let no_body = request.method == "HEAD" || status == 204 || status == 304 || status < 200;
    let chunked =
        find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    let mut keep = !close;
    if no_body {
    } else if chunked {
        read_chunked(conn, &mut body, progress)?;
    } else if let Some(length) = length {
        body.reserve_exact(length);
        read_exact_into(conn, &mut body, length, progress)?;
    } else {
        conn.read_to_end(&mut body).context("reading the answer")?;
        progress(body.len() as u64);
        keep = false;
    }
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep,
    ))
}

fn read_exact_into(
    conn: &mut BufReader<Stream>,
    body: &mut Vec<u8>,
    length: usize,
    progress: &dyn Fn(u64),
) -> anyhow::Result<()> {
    let start = body.len();
    body.resize(start + length, 0);
    let mut at = start;
    while at < start + length {
        let end = (at + CHUNK).min(start + length);
        let n = conn
            .read(&mut body[at..end])
            .context("reading the answer's body")?;
        if n == 0 {
            bail!(
                "the connection closed after {} of {length} body bytes",
                at - start
            );
        }
        at += n;
        progress(n as u64);
    }
    Ok(())
}

fn read_chunked(
    conn: &mut BufReader<Stream>,
    body: &mut Vec<u8>,
    progress: &dyn Fn(u64),
) -> anyhow::Result<()> {
    // Bounded: each round reads a chunk or ends; a stream of empty lines fails the size parse.
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("the connection closed inside a chunked body");
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| anyhow!("bad chunk size {:?}", line.trim()))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                if conn.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact_into(conn, body, size, progress)?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf)?;
    }
}
