//! `--workload connect`: many new connections, each sending one request (the echo hello line
//! and `message_bytes` in one write), reading the answer and closing. `concurrency` client
//! threads take the next connection from a shared counter. Each is timed from just before
//! connect(2) to just after the whole answer has been read.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use sha2::{Digest as _, Sha256};

use crate::client::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::data::fill_pseudo_random;
use crate::latency::Latencies;
use crate::progress::Progress;
use crate::protocol::Hello;
use crate::round_trips::Exchanges;

/// Makes `requests` connections to `addr`, `concurrency` at a time.
pub(crate) fn run(
    addr: SocketAddr,
    requests: u64,
    message_bytes: usize,
    concurrency: u32,
    progress: &Progress,
) -> anyhow::Result<Exchanges> {
    let next = &AtomicU64::new(0);
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<(Latencies, bool)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..concurrency)
            .map(|_| {
                let share = requests / u64::from(concurrency) + 1;
                scope.spawn(move || client(addr, requests, message_bytes, share, next, progress))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let finished = Instant::now();
    let mut latencies = Latencies::with_capacity(usize::try_from(requests).unwrap_or(0));
    let mut intact = true;
    for outcome in outcomes {
        let (thread_latencies, thread_intact) = outcome?;
        latencies.merge(thread_latencies);
        intact &= thread_intact;
    }
    Ok(Exchanges {
        started,
        finished,
        latencies,
        bytes_sent: requests * message_bytes as u64,
        intact,
    })
}

/// One client thread: connections until the shared counter reaches `requests` (about
/// `expected_share` of them). Returns its latencies and whether every answer hashed like its
/// request.
fn client(
    addr: SocketAddr,
    requests: u64,
    message_bytes: usize,
    expected_share: u64,
    next: &AtomicU64,
    progress: &Progress,
) -> anyhow::Result<(Latencies, bool)> {
    let hello = Hello::Echo.line();
    let mut request = hello.clone().into_bytes();
    request.resize(hello.len() + message_bytes, 0);
    let mut answer = vec![0u8; message_bytes];
    let mut latencies = Latencies::with_capacity(usize::try_from(expected_share).unwrap_or(0));
    let mut intact = true;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= requests {
            return Ok((latencies, intact));
        }
        fill_pseudo_random(&mut request[hello.len()..], i);
        let before = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connection {}: connecting to {addr}", i + 1))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream
            .write_all(&request)
            .with_context(|| format!("connection {}: sending to {addr}", i + 1))?;
        stream
            .read_exact(&mut answer)
            .with_context(|| format!("connection {}: reading the answer from {addr}", i + 1))?;
        latencies.record(before.elapsed());
        drop(stream);
        intact &= Sha256::digest(&request[hello.len()..]) == Sha256::digest(&answer);
        progress.advance(1);
    }
}
