//! Socket helpers of the soak's load and servers: a stream with a read-ahead buffer (a request
//! line and the payload behind it arrive together), resets on purpose (SO_LINGER 0), and the
//! words an error is reported in.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use sha2::{Digest as _, Sha256};

use super::payload::{Corruptor, KIB, MIB};
use crate::protocol::Answer;

/// The longest request or answer line.
const MAX_LINE_BYTES: usize = 256;

/// What ended an exchange that was not planned to end so.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The socket failed (a reset, a timeout, a refused connection).
    Io(io::Error),
    /// The peer said something the protocol does not allow.
    Protocol(String),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Io(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(error) => f.write_str(&describe_io(error)),
            Failure::Protocol(text) => f.write_str(text),
        }
    }
}

pub(crate) fn protocol(text: impl Into<String>) -> Failure {
    Failure::Protocol(text.into())
}

/// An error in a few words, e.g. `ConnectionReset (ECONNRESET)`.
pub(crate) fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "timed out (no reset, no end)".to_owned()
        }
        kind => match error.raw_os_error() {
            Some(code) => format!("{kind:?} ({:?})", nix::errno::Errno::from_raw(code)),
            None => format!("{kind:?}: {error}"),
        },
    }
}

/// A connection to 127.0.0.1:`port` with read and write timeouts of `timeout`.
pub(crate) fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let sock = TcpStream::connect_timeout(&address, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    Ok(sock)
}

/// Closes with SO_LINGER 0: the kernel sends a reset instead of a FIN.
pub(crate) fn reset_close(sock: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&sock, sockopt::Linger, &linger);
    drop(sock);
}

/// A socket and the bytes read ahead of what was consumed.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) sock: TcpStream,
    pending: Vec<u8>,
    /// The last request line read, for error messages.
    pub(crate) request: Option<String>,
}

impl Stream {
    pub(crate) fn new(sock: TcpStream) -> Stream {
        Stream {
            sock,
            pending: Vec::new(),
            request: None,
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Reads what is pending, or else what the socket has (0: end of stream).
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        loop {
            match self.sock.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// One `\n`-terminated line without its end; None at a clean end before any byte.
    pub(crate) fn read_line(&mut self) -> Result<Option<String>, Failure> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                self.pending.drain(..=end);
                return Ok(Some(line));
            }
            if self.pending.len() > MAX_LINE_BYTES {
                return Err(protocol(format!("line longer than {MAX_LINE_BYTES} bytes")));
            }
            let n = loop {
                match self.sock.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n == 0 {
                return if self.pending.is_empty() {
                    Ok(None)
                } else {
                    Err(protocol("end of stream inside a line"))
                };
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads up to `n` bytes into `hasher`; returns how many came (fewer: end of stream).
    /// `pace` (chunk, pause) makes a slow reader.
    pub(crate) fn read_hashing(
        &mut self,
        n: u64,
        hasher: &mut Sha256,
        corrupt: &Corruptor,
        pace: Option<(usize, Duration)>,
    ) -> io::Result<u64> {
        let (chunk, pause) = pace.unwrap_or((MIB, Duration::ZERO));
        let mut buf = vec![0u8; chunk];
        let mut got = 0u64;
        while got < n {
            let want = chunk.min((n - got) as usize);
            let read = self.recv(&mut buf[..want])?;
            if read == 0 {
                break;
            }
            corrupt.apply(&mut buf[..read]);
            hasher.update(&buf[..read]);
            got += read as u64;
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        Ok(got)
    }

    /// Reads until end of stream; returns the number of bytes that still came.
    pub(crate) fn read_to_end(&mut self) -> io::Result<u64> {
        let mut buf = vec![0u8; 64 * KIB];
        let mut extra = 0u64;
        loop {
            let n = self.recv(&mut buf)?;
            if n == 0 {
                return Ok(extra);
            }
            extra += n as u64;
        }
    }

    /// For a writer whose peer sends nothing: has a FIN (true) or a reset (an error) arrived?
    /// Polled between chunks, so that a clean end cannot hide behind the reset that data
    /// written after it would provoke.
    pub(crate) fn fin_seen_or_reset(&mut self) -> Result<bool, Failure> {
        self.sock.set_nonblocking(true)?;
        let mut buf = [0u8; 4096];
        let result = self.sock.read(&mut buf);
        self.sock.set_nonblocking(false)?;
        match result {
            Ok(0) => Ok(true),
            Ok(n) => Err(protocol(format!(
                "{n} unexpected bytes from a peer that should send nothing"
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(Failure::Io(e)),
        }
    }

    /// Sends `bytes` in 256 KiB pieces, asking `fin_seen_or_reset` between them; false when
    /// the peer ended first.
    pub(crate) fn send_watching(&mut self, bytes: &[u8]) -> Result<bool, Failure> {
        for piece in bytes.chunks(256 * KIB) {
            if self.fin_seen_or_reset()? {
                return Ok(false);
            }
            self.send(piece)?;
        }
        Ok(true)
    }
}

/// SHA-256 as lowercase hex.
pub(crate) fn hex_of(hasher: Sha256) -> String {
    crate::protocol::hex(&hasher.finalize())
}

/// The protocol's answer line for `bytes` hashed by `hasher`, newline included.
pub(crate) fn answer_line(bytes: u64, hasher: Sha256) -> String {
    Answer {
        bytes,
        sha256: hasher.finalize().into(),
    }
    .to_string()
}

/// Whether an answer line says `bytes` whose SHA-256 is `digest` (hex).
pub(crate) fn answers(line: Option<&str>, bytes: usize, digest: &str) -> bool {
    line.and_then(|l| Answer::parse(l).ok())
        .is_some_and(|a| a.bytes == bytes as u64 && a.sha256_hex() == digest)
}
