//! One client connection of the metrics server: read a request head, write its answer, and
//! again while the client keeps the connection open, each phase under its deadline.
//!
//! At most one answer exists per connection, and nothing more is read from a connection while
//! its answer is unsent: a client that pipelines requests and never reads stalls only itself
//! (its requests wait in its own kernel buffer) and is closed at the write deadline (issue 24,
//! finding 2). Each call to [`Connection::drive`] produces at most one answer, so that a
//! client pipelining `/metrics` as fast as it reads cannot keep the server from the others.

use std::io::{self, Read as _, Write as _};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use spliceway::RelayHandle;

use super::request::{HeadBuffer, MAX_HEAD_BYTES, Method, Next};
use super::response::Response;

/// How long a request head may take to arrive, from its first byte (or from the connection's
/// accept, for its first request). A slow loris is closed then.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to be written. A client that does not read is closed then.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer buffer above this size is freed rather than kept for the next answer.
const KEEP_OUTPUT_BYTES: usize = 64 * 1024;

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting for a request; no byte of one has arrived.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// Writing an answer.
    Answer,
}

/// What the server should do with a connection after [`Connection::drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Wait for its next readiness event (or its deadline).
    Wait,
    /// It answered and may have more to do: drive it again on the next turn.
    Again,
    /// Close it.
    Close,
}

/// A client connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    head: HeadBuffer,
    output: Vec<u8>,
    written: usize,
    phase: Phase,
    /// When the phase began (the oldest idle connection is closed first).
    since: Instant,
    /// When the phase must end.
    deadline: Instant,
    /// Close once the answer is written.
    close_after: bool,
}

impl Connection {
    /// A connection just accepted: its first request must arrive within [`HEAD_TIMEOUT`].
    pub fn new(stream: TcpStream, now: Instant) -> Connection {
        Connection {
            stream,
            head: HeadBuffer::new(),
            output: Vec::new(),
            written: 0,
            phase: Phase::Idle,
            since: now,
            deadline: now + HEAD_TIMEOUT,
            close_after: false,
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn enter(&mut self, phase: Phase, now: Instant, timeout: Duration) {
        self.phase = phase;
        self.since = now;
        self.deadline = now + timeout;
    }

    /// Reads, answers and writes as far as the socket allows, producing at most one answer.
    /// `closing`: the server no longer accepts (an upgrade), so every answer closes its
    /// connection.
    pub fn drive(&mut self, now: Instant, handle: &RelayHandle, closing: bool) -> Progress {
        let mut answered = false;
        loop {
            if self.phase == Phase::Answer {
                match self.flush() {
                    Ok(false) => return Progress::Wait,
                    Ok(true) if self.close_after => return Progress::Close,
                    Ok(true) => {
                        self.written = 0;
                        self.output.clear();
                        if self.output.capacity() > KEEP_OUTPUT_BYTES {
                            self.output = Vec::new();
                        }
                        if self.head.is_empty() {
                            self.enter(Phase::Idle, now, IDLE_TIMEOUT);
                        } else {
                            self.enter(Phase::Head, now, HEAD_TIMEOUT);
                        }
                    }
                    Err(_) => return Progress::Close,
                }
            }
            if answered {
                // Pipelined requests, or bytes that arrived while answering: next turn.
                return Progress::Again;
            }
            match self.head.take() {
                Next::Request(request) => {
                    let close = !request.keep_alive || request.has_body || closing;
                    let response = Response::to(&request, handle);
                    self.answer(&response, request.method == Method::Head, close, now);
                    answered = true;
                    continue;
                }
                Next::Error(error) => {
                    self.answer(&Response::refusal(error), false, true, now);
                    answered = true;
                    continue;
                }
                Next::Incomplete => {}
            }
            let mut chunk = [0u8; MAX_HEAD_BYTES];
            let room = self.head.room();
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Progress::Close,
                Ok(n) => {
                    if self.phase == Phase::Idle {
                        self.enter(Phase::Head, now, HEAD_TIMEOUT);
                    }
                    self.head.push(&chunk[..n]);
                }
                // Once the server stops accepting, a connection with no request under way is
                // closed: its client's next request goes to the process that accepts now.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if closing && self.phase == Phase::Idle {
                        Progress::Close
                    } else {
                        Progress::Wait
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Close,
            }
        }
    }

    fn answer(&mut self, response: &Response, head_only: bool, close: bool, now: Instant) {
        self.output.clear();
        self.written = 0;
        response.write_to(&mut self.output, head_only, close);
        self.close_after = close;
        self.enter(Phase::Answer, now, WRITE_TIMEOUT);
    }

    /// Writes what is left of the answer; whether all of it is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The connection's deadline has passed: a head still arriving gets a 408 if the socket
    /// takes it at once; an answer the client does not read is reset (its unsent bytes would
    /// otherwise linger in the kernel).
    pub fn expire(mut self) {
        match self.phase {
            Phase::Idle => {}
            Phase::Head => {
                let mut out = Vec::new();
                Response::timeout().write_to(&mut out, false, true);
                let _ = self.stream.write(&out);
            }
            Phase::Answer => self.reset(),
        }
    }

    /// Closes with a reset (`SO_LINGER` 0): the kernel drops what is unsent at once.
    pub fn reset(self) {
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ =
            nix::sys::socket::setsockopt(&self.stream, nix::sys::socket::sockopt::Linger, &linger);
    }
}
