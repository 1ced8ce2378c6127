//! The in-process sink used by `bench` on loopback and in the emulated topology.
//!
//! It speaks the sink protocol (see [`crate::protocol`]) like `spliceway sink`, but keeps its
//! SHA-256 out of the measured transfer: it reads into a pre-faulted buffer as large as the
//! payload, records the instant of end of stream, and only then hashes and answers. On a
//! 2-core machine a hash running alongside the relay and the client would compete with them
//! for CPU. Connections that send nothing are readiness probes: answered, not recorded.
//! Connections that open with a hello line get that workload (see [`crate::protocol`]); the
//! `parts` workload hashes each part before answering it (see [`crate::parts`]).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::data::prefaulted;
use crate::echo;
use crate::netns::Netns;
use crate::opening;
use crate::parts;
use crate::protocol::{Answer, Hello, Opening};

/// Spare room after the payload, so a correct upload never fills the buffer.
const SPARE_BYTES: usize = 1 << 20;

/// One upload as the sink saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkRecord {
    /// When read(2) returned end of stream.
    pub(crate) eof: Instant,
}

/// A listening in-process sink; stops on drop.
#[derive(Debug)]
pub(crate) struct LocalSink {
    addr: SocketAddr,
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
    records: Receiver<SinkRecord>,
}

impl LocalSink {
    /// Listens on `bind` (inside `ns` when given) with `buffers` receive buffers (one per
    /// concurrent upload) for `upload_len` bytes each, faulted in now so the timed reads do
    /// not page-fault.
    pub(crate) fn start(
        bind: SocketAddr,
        ns: Option<&Netns>,
        upload_len: usize,
        buffers: usize,
    ) -> anyhow::Result<Self> {
        let ns = ns.map(Netns::try_clone).transpose()?;
        let pool = (0..buffers)
            .map(|_| prefaulted(upload_len + SPARE_BYTES))
            .collect();
        let pool = Arc::new(Mutex::new(pool));
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<TcpListener>>();
        let (record_tx, records) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                let listener = ns.as_ref().map(Netns::enter).transpose().and_then(|_| {
                    TcpListener::bind(bind).with_context(|| format!("sink: binding {bind}"))
                });
                let listener = match listener {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let clone = listener.try_clone().map_err(anyhow::Error::from);
                let _ = ready_tx.send(clone);
                accept_loop(&listener, &pool, &record_tx);
            })?;
        let listener = ready_rx.recv().context("sink thread failed")??;
        Ok(LocalSink {
            addr: listener.local_addr()?,
            listener,
            thread: Some(thread),
            records,
        })
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Forgets records of earlier connections (a failed run's late arrival).
    pub(crate) fn clear_records(&self) {
        while self.records.try_recv().is_ok() {}
    }

    /// The record of an upload whose answer has just been read (it is sent before the
    /// answer is written, so it is already there); call once per upload.
    pub(crate) fn take_record(&self) -> Option<SinkRecord> {
        self.records
            .recv_timeout(std::time::Duration::from_secs(5))
            .ok()
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept(2) with EINVAL.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    pool: &Arc<Mutex<Vec<Vec<u8>>>>,
    records: &Sender<SinkRecord>,
) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let pool = Arc::clone(pool);
                let records = records.clone();
                let _ = std::thread::Builder::new()
                    .name("bench-sink-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &pool, &records);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(_) => return, // shut down
        }
    }
}

fn serve(
    mut stream: TcpStream,
    pool: &Mutex<Vec<Vec<u8>>>,
    records: &Sender<SinkRecord>,
) -> std::io::Result<()> {
    let first = opening::read(&mut stream)?;
    match first.opening {
        Opening::Upload => {}
        Opening::Hello(Hello::Echo, _) => return echo::serve(&mut stream, first.data()).map(drop),
        Opening::Hello(Hello::Parts { part_bytes }, _) => {
            return parts::serve(&mut stream, first.data(), part_bytes).map(drop);
        }
        Opening::NeedMore | Opening::Refused(_) => return Ok(()),
    }
    let first = first.data();
    let n = first.len();
    let (eof, answer) = if n == 0 {
        let answer = Answer {
            bytes: 0,
            sha256: Sha256::digest([]).into(),
        };
        (None, answer)
    } else {
        let mut buffer = pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| prefaulted(opening::FIRST_READ_BYTES + SPARE_BYTES));
        let result = receive(&mut stream, first, &mut buffer);
        pool.lock().unwrap_or_else(|e| e.into_inner()).push(buffer);
        let (eof, answer) = result?;
        (Some(eof), answer)
    };
    if let Some(eof) = eof {
        let _ = records.send(SinkRecord { eof });
    }
    stream.write_all(answer.to_string().as_bytes())?;
    stream.shutdown(Shutdown::Both)
}

/// Reads to end of stream into `buffer` (after `first`), hashing only when the buffer fills
/// (never, for a correct upload) and at the end.
fn receive(
    stream: &mut TcpStream,
    first: &[u8],
    buffer: &mut [u8],
) -> std::io::Result<(Instant, Answer)> {
    let mut hasher = Sha256::new();
    let mut total = first.len() as u64;
    buffer[..first.len()].copy_from_slice(first);
    let mut filled = first.len();
    loop {
        if filled == buffer.len() {
            hasher.update(&buffer[..filled]);
            filled = 0;
        }
        let n = read_retrying(stream, &mut buffer[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
        total += n as u64;
    }
    let eof = Instant::now();
    hasher.update(&buffer[..filled]);
    let answer = Answer {
        bytes: total,
        sha256: hasher.finalize().into(),
    };
    Ok((eof, answer))
}

fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
