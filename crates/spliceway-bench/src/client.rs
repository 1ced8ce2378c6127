//! The uploading side: one connection, the whole payload in large writes, end of stream, then
//! the sink's answer.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use crate::progress::Progress;
use crate::protocol::{Answer, MAX_ANSWER_BYTES};

/// Bytes handed to the kernel per write call.
pub(crate) const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Time allowed to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a write may block, or the wait for the answer may last, before the run fails.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// What one upload saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upload {
    /// Just before connect(2).
    pub(crate) started: Instant,
    /// When the answer line had been read.
    pub(crate) answered: Instant,
    /// What the sink said it received.
    pub(crate) answer: Answer,
}

/// Sends `data` to `addr`, shuts down the sending side and reads the sink's answer.
pub(crate) fn upload(addr: SocketAddr, data: &[u8], progress: &Progress) -> anyhow::Result<Upload> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut sent = 0usize;
    for chunk in data.chunks(WRITE_CHUNK_BYTES) {
        stream
            .write_all(chunk)
            .with_context(|| format!("sending to {addr} after {sent} bytes"))?;
        sent += chunk.len();
        progress.advance(chunk.len() as u64);
    }
    stream
        .shutdown(Shutdown::Write)
        .with_context(|| format!("ending the stream to {addr}"))?;
    let mut line = Vec::with_capacity(MAX_ANSWER_BYTES);
    (&mut stream)
        .take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut line)
        .with_context(|| format!("reading the sink's answer from {addr}"))?;
    let answered = Instant::now();
    let text = String::from_utf8_lossy(&line);
    if text.is_empty() {
        return Err(anyhow!(
            "{addr} closed without an answer (is a `spliceway sink` behind it?)"
        ));
    }
    let answer = Answer::parse(&text).map_err(|e| anyhow!(e))?;
    Ok(Upload {
        started,
        answered,
        answer,
    })
}
