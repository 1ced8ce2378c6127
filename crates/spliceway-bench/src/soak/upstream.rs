//! The soak's upstream servers: a thread per connection, serving the soak's requests
//! ([`SoakRequest`], in the bench's one protocol module). Knowing the planned ending, the
//! server checks the ending it sees (a planned client reset must arrive as ECONNRESET) and
//! resets on purpose when the plan says so.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::payload::{Block, Corruptor, DATA_SIZE, KIB};
use super::tally::Tally;
use super::wire::{Failure, Stream, answer_line, protocol, reset_close};
use crate::protocol::{SoakEnd, SoakRequest};

/// Generous: a slow moment of this shared machine must not look like a relay failure.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One upstream server on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    tally: Arc<Tally>,
    block: Arc<Block>,
    active: AtomicUsize,
    stopping: AtomicBool,
}

impl Upstream {
    pub(crate) fn start(
        name: &str,
        tally: Arc<Tally>,
        block: Arc<Block>,
    ) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            tally,
            block,
            active: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || serve(&listener, &serving))?;
        Ok(Upstream {
            port,
            shared,
            thread: Some(thread),
        })
    }

    /// Connections still being served.
    pub(crate) fn busy(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    /// Stops accepting: the flag, then a connection that wakes the blocked accept.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lets the upstreams finish checking the endings they are still waiting for (at most 30 s).
pub(crate) fn wait_idle(servers: &[&Upstream]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.iter().any(|s| s.busy() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok((conn, _)) = accepted else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
        let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
        shared.active.fetch_add(1, Ordering::SeqCst);
        let handling = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("upstream-conn".into())
            .spawn(move || {
                handle(&handling, conn);
                handling.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared
                .tally
                .problem("exchange_failed", "upstream: could not start a thread");
        }
    }
}

/// Runs one connection; an unplanned error is counted, never swallowed.
fn handle(shared: &Shared, conn: TcpStream) {
    let mut stream = Stream::new(conn);
    if let Err(failure) = dispatch(shared, &mut stream) {
        let request = stream.request.as_deref().unwrap_or("before any request");
        shared.tally.problem(
            "exchange_failed",
            &format!("upstream {}, {request}: {failure}", shared.name),
        );
    }
}

/// Reads requests until the client ends cleanly between them (`up` may repeat).
fn dispatch(shared: &Shared, stream: &mut Stream) -> Result<(), Failure> {
    loop {
        let Some(line) = stream.read_line()? else {
            return Ok(());
        };
        stream.request = Some(line.clone());
        match SoakRequest::parse(&line).map_err(protocol)? {
            SoakRequest::Up { bytes, end } => {
                if !serve_up(shared, stream, bytes, end)? {
                    return Ok(());
                }
            }
            SoakRequest::Down { bytes, offset, end } => {
                return serve_down(shared, stream, bytes as usize, offset as usize, end);
            }
            SoakRequest::Echo { end } => return serve_echo(shared, stream, end),
            SoakRequest::Half { bytes, offset, end } => {
                return serve_half(shared, stream, bytes as usize, offset as usize, end);
            }
        }
    }
}

/// An upload (a part): answer with the SHA-256 of what came. True: more may follow.
fn serve_up(shared: &Shared, stream: &mut Stream, n: u64, end: SoakEnd) -> Result<bool, Failure> {
    let none = Corruptor::default();
    let mut hasher = Sha256::new();
    match end {
        SoakEnd::Clean => {
            let got = stream.read_hashing(n, &mut hasher, &none, None)?;
            if got < n {
                return Err(protocol(format!(
                    "upload ended cleanly after {got} of {n} bytes"
                )));
            }
            stream.send(answer_line(got, hasher).as_bytes())?;
            Ok(true)
        }
        SoakEnd::ClientReset => {
            // The client resets only once we know the plan.
            stream.send(b"GO\n")?;
            let what = "upload, client reset, seen by the upstream";
            match stream.read_hashing(n, &mut hasher, &none, None) {
                Err(e) => shared.tally.abort_seen(what, &e, false),
                Ok(got) => {
                    let how = if got < n {
                        "clean end of stream"
                    } else {
                        "all bytes arrived"
                    };
                    shared.tally.abort_missed(what, how);
                }
            }
            Ok(false)
        }
        SoakEnd::UpstreamReset { after } => {
            stream.read_hashing(after, &mut hasher, &none, None)?;
            reset_close(stream.sock.try_clone()?);
            Ok(false)
        }
    }
}

/// A download of the block's `offset..offset + n`, ended as planned.
fn serve_down(
    shared: &Shared,
    stream: &mut Stream,
    n: usize,
    offset: usize,
    end: SoakEnd,
) -> Result<(), Failure> {
    if offset.saturating_add(n) > DATA_SIZE {
        return Err(protocol("download beyond the block"));
    }
    let view = shared.block.slice(offset, n);
    match end {
        SoakEnd::Clean => {
            stream.send(view)?;
            stream.sock.shutdown(std::net::Shutdown::Write)?;
            if stream.read_to_end()? > 0 {
                return Err(protocol("bytes from a downloading client"));
            }
            Ok(())
        }
        SoakEnd::ClientReset => {
            let what = "download, client reset, seen by the upstream";
            let ended = (|| -> Result<(), Failure> {
                if !stream.send_watching(view)? {
                    return Ok(());
                }
                stream.sock.shutdown(std::net::Shutdown::Write)?;
                stream.read_to_end()?;
                Ok(())
            })();
            match ended {
                Ok(()) => shared.tally.abort_missed(what, "clean end of stream"),
                Err(Failure::Io(e)) => shared.tally.abort_seen(what, &e, false),
                Err(other) => return Err(other),
            }
            Ok(())
        }
        SoakEnd::UpstreamReset { after } => {
            stream.send(&view[..(after as usize).min(n)])?;
            reset_close(stream.sock.try_clone()?);
            Ok(())
        }
    }
}

/// Echoes until the client's end; or resets after the first message (upstream-reset).
fn serve_echo(shared: &Shared, stream: &mut Stream, end: SoakEnd) -> Result<(), Failure> {
    let mut buf = vec![0u8; 64 * KIB];
    if let SoakEnd::UpstreamReset { .. } = end {
        if stream.recv(&mut buf)? > 0 {
            reset_close(stream.sock.try_clone()?);
        }
        return Ok(());
    }
    let what = "echo, client reset, seen by the upstream";
    let echoed = (|| -> std::io::Result<()> {
        loop {
            let n = stream.recv(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.send(&buf[..n])?;
        }
    })();
    match (echoed, end) {
        (Ok(()), SoakEnd::ClientReset) => shared.tally.abort_missed(what, "clean end of stream"),
        (Err(e), SoakEnd::ClientReset) => shared.tally.abort_seen(what, &e, false),
        (Err(e), _) => return Err(Failure::Io(e)),
        (Ok(()), _) => {}
    }
    Ok(())
}

/// Half-close: read to the client's end, answer with its SHA-256 and then m bytes.
fn serve_half(
    shared: &Shared,
    stream: &mut Stream,
    m: usize,
    offset: usize,
    end: SoakEnd,
) -> Result<(), Failure> {
    if offset.saturating_add(m) > DATA_SIZE {
        return Err(protocol("answer beyond the block"));
    }
    let mut hasher = Sha256::new();
    let got = stream.read_hashing(DATA_SIZE as u64, &mut hasher, &Corruptor::default(), None)?;
    stream.send(answer_line(got, hasher).as_bytes())?;
    let answer = shared.block.slice(offset, m);
    match end {
        SoakEnd::Clean => Ok(stream.send(answer)?),
        SoakEnd::UpstreamReset { .. } => Err(protocol("half: an upstream reset is not planned")),
        SoakEnd::ClientReset => {
            let what = "half-closed client reset, seen by the upstream (already at end of stream)";
            let sent = answer
                .chunks(256 * KIB)
                .try_for_each(|piece| stream.send(piece));
            match sent {
                Err(e) => shared.tally.abort_seen(what, &e, true),
                Ok(()) => shared
                    .tally
                    .abort_missed(what, &format!("all {m} bytes went out without a reset")),
            }
            Ok(())
        }
    }
}
