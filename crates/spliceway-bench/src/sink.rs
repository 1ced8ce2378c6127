//! `spliceway sink --listen ADDR`: the far end of a benchmark across real hosts (the "S3 side").
//!
//! Accepts connections, a thread each. Each connection is read to end of stream while a second
//! thread hashes what arrives (SHA-256; the reader hands it filled buffers, so hashing overlaps
//! receiving), then the sink answers one line and closes:
//!
//! ```text
//! {bytes} {sha256hex}\n
//! ```
//!
//! `bytes` in decimal, the hash as 64 lowercase hex digits (see [`crate::protocol`]). A
//! connection that sends nothing gets `0 e3b0c442…b855` like any other; the bench uses such
//! connections as readiness probes. `-v` logs each connection. Connections that open with a
//! hello line get that workload instead: `echo`, or `parts` (an answer per part, for
//! `bench --part-size`; see [`crate::protocol`]).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::echo;
use crate::error::usage;
use crate::opening;
use crate::parts;
use crate::protocol::{Answer, Hello, Opening};

/// Bytes per buffer handed from the reader to the hasher.
const CHUNK_BYTES: usize = 1 << 20;

/// Buffers in flight between reader and hasher (memory per connection: this + 1 chunks).
const CHUNKS_IN_FLIGHT: usize = 4;

/// Arguments of `spliceway sink`, but for the logging flags, which the binary adds.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (on the S3-side host, then `spliceway bench --target HOST:9000` \
                        elsewhere):\n  spliceway sink --listen 0.0.0.0:9000 -v"
)]
pub struct SinkArgs {
    /// Address to listen on: an IP and a port, e.g. 0.0.0.0:9000 (port 0 picks a free port;
    /// the address is logged).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: String,
}

/// Runs the sink until killed. It logs through `tracing` once the caller has set that up: the
/// listen address at info, each connection at info with the `spliceway::conn` target (which the
/// binary shows with `-v`). A bad or unusable listen address is a
/// [`UsageError`](crate::error::UsageError).
pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let listen = spliceway::parse_listen_addr(&args.listen).map_err(usage)?;
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(usage)?;
    tracing::info!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                std::thread::Builder::new()
                    .name("sink-conn".into())
                    .spawn(move || serve(stream, peer))
                    .context("starting a connection thread")?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: wait for connections to finish.
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve(mut stream: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let first = match opening::read(&mut stream) {
        Ok(first) => first,
        Err(e) => return tracing::warn!(target: "spliceway::conn", "{peer}: {e}"),
    };
    match &first.opening {
        Opening::Upload => {}
        Opening::Hello(Hello::Echo, _) => {
            match echo::serve(&mut stream, first.data()) {
                Ok(bytes) => {
                    tracing::info!(target: "spliceway::conn", "{peer}: echoed {bytes} bytes")
                }
                Err(e) => tracing::warn!(target: "spliceway::conn", "{peer}: echo: {e}"),
            }
            return;
        }
        Opening::Hello(Hello::Parts { part_bytes }, _) => {
            match parts::serve(&mut stream, first.data(), *part_bytes) {
                Ok(served) => tracing::info!(
                    target: "spliceway::conn",
                    "{peer}: {} parts of up to {part_bytes} bytes, {} bytes in {:.3} s",
                    served.parts,
                    served.bytes,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => tracing::warn!(target: "spliceway::conn", "{peer}: parts: {e}"),
            }
            return;
        }
        Opening::NeedMore | Opening::Refused(_) => {
            return tracing::warn!(target: "spliceway::conn", "{peer}: refused: {:?}", first.opening);
        }
    }
    match receive_and_answer(stream, first.data()) {
        Ok(answer) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                target: "spliceway::conn",
                "{peer}: {} bytes in {seconds:.3} s ({:.1} MB/s), sha256 {}",
                answer.bytes,
                answer.bytes as f64 / 1e6 / seconds.max(1e-9),
                answer.sha256_hex()
            );
        }
        Err(e) => tracing::warn!(target: "spliceway::conn", "{peer}: {e}"),
    }
}

/// Reads to end of stream (after `first`, the bytes already read), hashing on a second thread,
/// then writes the answer and closes.
fn receive_and_answer(mut stream: TcpStream, first: &[u8]) -> std::io::Result<Answer> {
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..=CHUNKS_IN_FLIGHT {
        let _ = empty_tx.send(vec![0u8; CHUNK_BYTES]);
    }
    let hasher = std::thread::Builder::new()
        .name("sink-hash".into())
        .spawn(move || {
            let mut hasher = Sha256::new();
            for (buffer, len) in full_rx {
                hasher.update(&buffer[..len]);
                let _ = empty_tx.send(buffer);
            }
            <[u8; 32]>::from(hasher.finalize())
        })?;
    let received = if first.is_empty() {
        Ok(0)
    } else {
        full_tx
            .send((first.to_vec(), first.len()))
            .map_err(|_| std::io::Error::other("the hashing thread stopped"))
            .map(|()| first.len() as u64)
    }
    .and_then(|already| Ok(already + read_to_end(&mut stream, &full_tx, &empty_rx)?));
    drop(full_tx);
    let sha256 = hasher
        .join()
        .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
    let answer = Answer {
        bytes: received?,
        sha256,
    };
    stream.write_all(answer.to_string().as_bytes())?;
    stream.shutdown(Shutdown::Both)?;
    Ok(answer)
}

/// Fills buffers from the stream and hands them to the hasher; returns the byte count.
fn read_to_end(
    stream: &mut TcpStream,
    full: &mpsc::SyncSender<(Vec<u8>, usize)>,
    empty: &mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut buffer = empty
            .recv()
            .map_err(|_| std::io::Error::other("the hashing thread stopped"))?;
        let mut len = 0;
        let mut eof = false;
        while len < buffer.len() {
            match stream.read(&mut buffer[len..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        total += len as u64;
        if len > 0 {
            full.send((buffer, len))
                .map_err(|_| std::io::Error::other("the hashing thread stopped"))?;
        }
        if eof {
            return Ok(total);
        }
    }
}
