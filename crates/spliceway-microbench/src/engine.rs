//! The engine benchmark's body: a fixed payload from a client, through an in-process relay
//! (splice or copy mode), to a server that discards it.
//!
//! The client and the server are as cheap as Linux allows, so that the relay is what is
//! measured: the client `sendfile`s the payload from a memfd, the server splices it into
//! `/dev/null`. The relay runs one worker on a named thread whose CPU time is read before and
//! after each transfer ([`InProcessRelay::cpu_time`](crate::InProcessRelay::cpu_time)).

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::sendfile::sendfile;
use spliceway::{ConnectionOptions, Mode, Route, UpstreamAddr};

use crate::InProcessRelay;

/// Pipe sizes (splice) and buffer sizes (copy) the benchmark compares.
pub const SIZES_BYTES: [usize; 5] = [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20];

/// Longest wait for one transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// What one transfer cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transfer {
    /// Bytes that reached the server.
    pub bytes: u64,
    /// From connecting to the server having read end of stream.
    pub elapsed: Duration,
    /// CPU time of the relay's worker thread meanwhile.
    pub relay_cpu: Duration,
}

impl Transfer {
    /// Adds another transfer's figures.
    pub fn add(&mut self, other: Transfer) {
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
        self.relay_cpu += other.relay_cpu;
    }

    /// Bytes per second.
    pub fn throughput(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Relay CPU seconds per GiB moved.
    pub fn cpu_seconds_per_gib(&self) -> f64 {
        self.relay_cpu.as_secs_f64() / (self.bytes as f64 / crate::GIB as f64).max(1e-12)
    }
}

/// A relay, a discarding server and a payload, ready to run transfers.
#[derive(Debug)]
pub struct EngineBench {
    relay: InProcessRelay,
    sink: Sink,
    payload: File,
    payload_bytes: u64,
}

impl EngineBench {
    /// A relay in `mode` with pipes (or copy buffers) of `size` bytes, and a payload of
    /// `payload_bytes`.
    pub fn start(mode: Mode, size: usize, payload_bytes: u64) -> io::Result<EngineBench> {
        let sink = Sink::start()?;
        let mut options = ConnectionOptions::default();
        options.mode = mode;
        options.pipe_size = size;
        options.copy_buffer_size = size;
        let route = Route::new("bench", UpstreamAddr::Ip(sink.addr))
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .options(options);
        let relay = InProcessRelay::start(vec![route])?;
        Ok(EngineBench {
            relay,
            sink,
            payload: payload_file(payload_bytes)?,
            payload_bytes,
        })
    }

    /// Moves the payload once through the relay.
    pub fn transfer(&self) -> io::Result<Transfer> {
        let cpu_before = self.relay.cpu_time()?;
        let start = Instant::now();
        let stream = TcpStream::connect(self.relay.addr())?;
        stream.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
        let mut offset: i64 = 0;
        while (offset as u64) < self.payload_bytes {
            let left = (self.payload_bytes - offset as u64) as usize;
            sendfile(&stream, &self.payload, Some(&mut offset), left).map_err(io::Error::from)?;
        }
        stream.shutdown(Shutdown::Write)?;
        let received = self
            .sink
            .done
            .recv_timeout(TRANSFER_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the sink never finished"))??;
        let elapsed = start.elapsed();
        let relay_cpu = self.relay.cpu_time()?.saturating_sub(cpu_before);
        if received != self.payload_bytes {
            return Err(io::Error::other(format!(
                "the sink received {received} of {} bytes",
                self.payload_bytes
            )));
        }
        Ok(Transfer {
            bytes: received,
            elapsed,
            relay_cpu,
        })
    }
}

/// A memfd holding `len` bytes (a repeating non-zero pattern).
fn payload_file(len: u64) -> io::Result<File> {
    let fd: OwnedFd = memfd_create("spliceway-bench-payload", MFdFlags::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    let block: Vec<u8> = (0..crate::MIB).map(|i| (i % 251) as u8).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(file)
}

/// A server that splices each connection, one at a time, into `/dev/null` and reports how many
/// bytes it received.
#[derive(Debug)]
struct Sink {
    addr: SocketAddr,
    done: mpsc::Receiver<io::Result<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start() -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("swb-sink".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = stream.and_then(|s| discard(&s));
                    if tx.send(result).is_err() {
                        return; // the bench is gone
                    }
                }
            })?;
        Ok(Sink {
            addr,
            done,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Splices `stream` to `/dev/null` until end of stream; returns the bytes received.
fn discard(stream: &TcpStream) -> io::Result<u64> {
    stream.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    let null = File::options().write(true).open("/dev/null")?;
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer splices; the default 64 KiB also works.
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(1 << 20));
    let mut total = 0u64;
    loop {
        let n = splice(
            stream,
            None,
            &pipe_w,
            None,
            1 << 20,
            SpliceFFlags::SPLICE_F_MOVE,
        )?;
        if n == 0 {
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            left -= splice(
                &pipe_r,
                None,
                &null,
                None,
                left,
                SpliceFFlags::SPLICE_F_MOVE,
            )?;
        }
        total += n as u64;
    }
}
