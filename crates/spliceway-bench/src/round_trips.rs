//! `--workload rtt`: one connection, many request/response round trips through the path to an
//! echoing sink. Each round trip is timed from just before the request is written to just
//! after the whole answer has been read; what went out and what came back are hashed outside
//! the timed part and compared at the end.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use sha2::{Digest as _, Sha256};

use crate::client::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::data::fill_pseudo_random;
use crate::latency::Latencies;
use crate::progress::Progress;
use crate::protocol::Hello;

/// What one run of request/response exchanges saw (rtt and connect workloads).
#[derive(Debug)]
pub(crate) struct Exchanges {
    /// Just before the first request (rtt) or the first connect (connect).
    pub(crate) started: Instant,
    /// When the last answer had been read.
    pub(crate) finished: Instant,
    pub(crate) latencies: Latencies,
    /// Bytes sent as requests (the hello lines not counted).
    pub(crate) bytes_sent: u64,
    /// The SHA-256 of every answer equalled that of every request, in order.
    pub(crate) intact: bool,
}

/// Makes `requests` round trips of `message_bytes` over one connection to `addr`.
pub(crate) fn run(
    addr: SocketAddr,
    requests: u64,
    message_bytes: usize,
    progress: &Progress,
) -> anyhow::Result<Exchanges> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream
        .write_all(Hello::Echo.line().as_bytes())
        .with_context(|| format!("greeting {addr}"))?;
    let mut request = vec![0u8; message_bytes];
    let mut answer = vec![0u8; message_bytes];
    let mut sent = Sha256::new();
    let mut received = Sha256::new();
    let mut latencies = Latencies::with_capacity(usize::try_from(requests).unwrap_or(0));
    let started = Instant::now();
    for i in 0..requests {
        fill_pseudo_random(&mut request, i);
        let before = Instant::now();
        stream
            .write_all(&request)
            .with_context(|| format!("sending request {} to {addr}", i + 1))?;
        stream
            .read_exact(&mut answer)
            .with_context(|| format!("reading answer {} from {addr}", i + 1))?;
        latencies.record(before.elapsed());
        sent.update(&request);
        received.update(&answer);
        progress.advance(1);
    }
    let finished = Instant::now();
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    (&mut stream)
        .take(1)
        .read_to_end(&mut rest)
        .with_context(|| format!("reading end of stream from {addr}"))?;
    if !rest.is_empty() {
        return Err(anyhow!("{addr} sent more than it was sent"));
    }
    Ok(Exchanges {
        started,
        finished,
        latencies,
        bytes_sent: requests * message_bytes as u64,
        intact: sent.finalize() == received.finalize(),
    })
}
