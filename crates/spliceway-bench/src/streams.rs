//! Uploads spread over several connections and sent in parts: `--streams N`,
//! `--part-size SIZE` and `--pattern aws-cli`, what `aws s3 cp` does with a large file (a
//! multipart upload of 8 MiB parts over 10 connections, each part a request whose short
//! answer comes back before that connection sends its next part).
//!
//! The single upload of one connection without parts stays in [`crate::client`], unchanged;
//! this module runs every other shape:
//!
//! - **Parts** (`--part-size`): the payload is cut into parts of that size (the last one
//!   shorter) and the parts form one queue, as in the AWS CLI's transfer manager: each of the
//!   N connections takes the next part when its previous one has been answered, so a slow
//!   connection sends fewer parts and none sits idle while parts remain. A connection opens
//!   with `SPLICEWAY-BENCH parts {part_bytes}` (see [`crate::protocol`]); one that takes the
//!   short last part shuts down its sending side after it (the protocol's rule), one that finds
//!   the queue empty shuts down without sending more. No more connections are opened than
//!   there are parts.
//! - **Streams without parts**: connection i sends the i-th of N contiguous shares as one
//!   plain upload (there is nothing to queue).
//!
//! Every part's (or share's) SHA-256 is computed before any timing; the sink's answer for each
//! is checked against it, and the upload as a whole is intact when every part was answered
//! exactly once, correctly, and the bytes add up to the payload.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};

use crate::args::{BenchArgs, Pattern};
use crate::client::{CONNECT_TIMEOUT, IO_TIMEOUT, WRITE_CHUNK_BYTES};
use crate::data::{Payload, sha256};
use crate::error::usage;
use crate::local_sink::LocalSink;
use crate::netns::Netns;
use crate::progress::Progress;
use crate::protocol::{Answer, DIGEST_BYTES, Hello, MAX_ANSWER_BYTES};
use crate::report::{PartCounts, RunResult, mb_per_s};

/// The AWS CLI's defaults: `max_concurrent_requests` = 10, `multipart_chunksize` = 8MB
/// (which the CLI reads as 8 MiB).
const AWS_CLI_STREAMS: u32 = 10;
const AWS_CLI_PART_BYTES: u64 = 8 << 20;

/// How one run's upload is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Concurrent connections.
    pub(crate) streams: u32,
    /// Part size; `None`: each connection one continuous upload.
    pub(crate) part_bytes: Option<usize>,
}

impl Shape {
    /// From `--pattern`, `--streams` and `--part-size`: the pattern sets both, and either flag
    /// given beside it overrides its half (so `--pattern aws-cli --streams 4` is 4 connections
    /// of 8 MiB parts). Errors are usage errors.
    pub(crate) fn from_args(args: &BenchArgs) -> anyhow::Result<Shape> {
        let (streams, part) = match args.pattern {
            Some(Pattern::AwsCli) => (AWS_CLI_STREAMS, Some(AWS_CLI_PART_BYTES)),
            None => (1, None),
        };
        let streams = args.streams.unwrap_or(streams);
        let part = args.part_size.or(part);
        let part_bytes = part
            .map(|p| {
                if p == 0 {
                    return Err(usage(anyhow!("--part-size must be at least 1 byte")));
                }
                usize::try_from(p).map_err(|_| usage(anyhow!("--part-size {p} is too large")))
            })
            .transpose()?;
        Ok(Shape {
            streams,
            part_bytes,
        })
    }

    /// One connection, no parts: the upload [`crate::client`] does.
    pub(crate) fn is_single(&self) -> bool {
        self.streams == 1 && self.part_bytes.is_none()
    }

    /// How many receive buffers, of how many bytes, the in-process sink needs for uploads of
    /// `size` bytes: one per stream for plain uploads, none for parts (they are hashed as they
    /// arrive, through a small buffer per connection).
    pub(crate) fn sink_buffers(&self, size: usize) -> (usize, usize) {
        match self.part_bytes {
            Some(_) => (0, 0),
            None => (size.div_ceil(self.streams as usize), self.streams as usize),
        }
    }

    /// What `seconds` measures for this shape, or `None` for the single upload (whose timing
    /// the runner describes).
    pub(crate) fn timing(&self, remote: bool) -> Option<&'static str> {
        match (self.is_single(), self.part_bytes, remote) {
            (true, _, _) => None,
            (false, Some(_), _) => {
                Some("from the first connect to the last part's answer, at the client")
            }
            (false, None, true) => {
                Some("from the first connect to the last sink answer, at the client")
            }
            (false, None, false) => {
                Some("from the first connect at the client to the last end of stream at the sink")
            }
        }
    }
}

/// One piece of the payload: a part, or a stream's share; what the sink must answer for it.
#[derive(Debug)]
struct Piece {
    range: Range<usize>,
    sha256: [u8; DIGEST_BYTES],
}

/// A shape applied to a payload: its pieces and their hashes, computed before any timing.
#[derive(Debug)]
pub(crate) struct Job {
    shape: Shape,
    pieces: Vec<Piece>,
}

impl Job {
    /// Cuts `payload` into the shape's pieces and hashes each.
    pub(crate) fn new(shape: Shape, payload: &Payload) -> Job {
        let len = payload.bytes.len();
        let ranges: Vec<Range<usize>> = match shape.part_bytes {
            Some(p) => (0..len.div_ceil(p))
                .map(|i| i * p..((i + 1) * p).min(len))
                .collect(),
            None => {
                let n = shape.streams as usize;
                (0..n).map(|i| i * len / n..(i + 1) * len / n).collect()
            }
        };
        let pieces = if shape.is_single() {
            Vec::new()
        } else {
            ranges
                .into_iter()
                .map(|range| Piece {
                    sha256: sha256(&payload.bytes[range.clone()]),
                    range,
                })
                .collect()
        };
        Job { shape, pieces }
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// Uploads `payload` to `addr` from namespace `ns` as the shape says, and turns what
    /// happened into a run's figures (`relay_cpu_seconds` filled in by the caller).
    pub(crate) fn run_once(
        &self,
        run: u32,
        addr: SocketAddr,
        ns: Option<&Netns>,
        payload: &Payload,
        sink: Option<&LocalSink>,
        progress: &Progress,
    ) -> RunResult {
        let size = payload.bytes.len() as u64;
        let outcome = self.upload(addr, ns, payload, progress);
        match outcome {
            Ok(outcome) => {
                // Plain uploads end at the sink's last end of stream, as a single one does.
                let mut end = outcome.answered;
                if let (None, Some(sink)) = (self.shape.part_bytes, sink) {
                    let eofs: Option<Vec<Instant>> = (0..outcome.connections)
                        .map(|_| sink.take_record().map(|r| r.eof))
                        .collect();
                    if let Some(last) = eofs.and_then(|e| e.into_iter().max()) {
                        end = last;
                    }
                }
                let seconds = end.saturating_duration_since(outcome.started).as_secs_f64();
                RunResult {
                    run,
                    seconds: Some(seconds),
                    mb_per_s: Some(mb_per_s(size, seconds)),
                    relay_cpu_seconds: None,
                    bytes_received: Some(outcome.bytes),
                    integrity: outcome.integrity(self.pieces.len(), size),
                    parts: self.shape.part_bytes.map(|_| PartCounts {
                        answered: outcome.answered_pieces,
                        failed: outcome.failed_pieces,
                    }),
                    ..RunResult::default()
                }
            }
            Err(error) => RunResult::failed(run, &error, None),
        }
    }

    /// The upload itself: a thread per connection, all in namespace `ns`.
    fn upload(
        &self,
        addr: SocketAddr,
        ns: Option<&Netns>,
        payload: &Payload,
        progress: &Progress,
    ) -> anyhow::Result<Outcome> {
        let connections = (self.shape.streams as usize).min(self.pieces.len()).max(1);
        let next = AtomicUsize::new(0);
        let results: Vec<anyhow::Result<Connection>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..connections)
                .map(|i| {
                    let next = &next;
                    scope.spawn(move || -> anyhow::Result<Connection> {
                        if let Some(ns) = ns {
                            ns.enter()?;
                        }
                        match self.shape.part_bytes {
                            Some(p) => self.send_parts(addr, p, payload, next, progress),
                            None => self.send_share(addr, i, payload, progress),
                        }
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow!("an upload thread panicked")))
                })
                .collect()
        });
        let connections_seen: Vec<Connection> =
            results.into_iter().collect::<anyhow::Result<_>>()?;
        let (Some(started), Some(answered)) = (
            connections_seen.iter().map(|c| c.started).min(),
            connections_seen.iter().map(|c| c.answered).max(),
        ) else {
            bail!("no connection was made");
        };
        let mut outcome = Outcome {
            started,
            answered,
            connections,
            bytes: 0,
            answered_pieces: 0,
            failed_pieces: 0,
            answers_per_piece: vec![0u32; self.pieces.len()],
        };
        for connection in connections_seen {
            for (piece, ok, bytes) in connection.answers {
                outcome.answers_per_piece[piece] += 1;
                outcome.answered_pieces += 1;
                outcome.bytes += bytes;
                if !ok {
                    outcome.failed_pieces += 1;
                }
            }
        }
        Ok(outcome)
    }

    /// One connection of parts: takes parts from the queue `next` until it is empty.
    fn send_parts(
        &self,
        addr: SocketAddr,
        part_bytes: usize,
        payload: &Payload,
        next: &AtomicUsize,
        progress: &Progress,
    ) -> anyhow::Result<Connection> {
        let (mut stream, started) = connect(addr)?;
        let hello = Hello::Parts {
            part_bytes: part_bytes as u64,
        };
        stream
            .write_all(hello.line().as_bytes())
            .with_context(|| format!("sending the hello line to {addr}"))?;
        let mut answers = Vec::new();
        let mut answered = Instant::now();
        let mut shut = false;
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(piece) = self.pieces.get(index) else {
                break;
            };
            send(
                &mut stream,
                addr,
                &payload.bytes[piece.range.clone()],
                progress,
            )?;
            if piece.range.len() < part_bytes {
                // The short last part: end of stream tells the sink it is complete.
                end_stream(&stream, addr)?;
                shut = true;
            }
            let answer = read_answer(&mut stream, addr)?
                .ok_or_else(|| anyhow!("{addr} closed without answering part {index}"))?;
            answered = Instant::now();
            answers.push(check(index, piece, &answer));
            if shut {
                break;
            }
        }
        if !shut {
            end_stream(&stream, addr)?;
        }
        if let Some(extra) = read_answer(&mut stream, addr)? {
            bail!("{addr} answered a part that was not sent: {extra:?}");
        }
        Ok(Connection {
            started,
            answered,
            answers,
        })
    }

    /// One connection sending share `index` as a plain upload.
    fn send_share(
        &self,
        addr: SocketAddr,
        index: usize,
        payload: &Payload,
        progress: &Progress,
    ) -> anyhow::Result<Connection> {
        let piece = &self.pieces[index];
        let (mut stream, started) = connect(addr)?;
        send(
            &mut stream,
            addr,
            &payload.bytes[piece.range.clone()],
            progress,
        )?;
        end_stream(&stream, addr)?;
        let answer = read_answer(&mut stream, addr)?.ok_or_else(|| {
            anyhow!("{addr} closed without an answer (is a `spliceway sink` behind it?)")
        })?;
        Ok(Connection {
            started,
            answered: Instant::now(),
            answers: vec![check(index, piece, &answer)],
        })
    }
}

/// What one connection saw: (piece, answer correct, bytes the sink counted) per answer.
struct Connection {
    started: Instant,
    answered: Instant,
    answers: Vec<(usize, bool, u64)>,
}

/// What all connections of one run saw together.
struct Outcome {
    /// The first connect.
    started: Instant,
    /// The last answer.
    answered: Instant,
    connections: usize,
    bytes: u64,
    answered_pieces: u64,
    failed_pieces: u64,
    answers_per_piece: Vec<u32>,
}

impl Outcome {
    /// Every piece answered once and correctly, and the counts add up to the payload.
    fn integrity(&self, pieces: usize, size: u64) -> bool {
        self.failed_pieces == 0
            && self.answers_per_piece.len() == pieces
            && self.answers_per_piece.iter().all(|&n| n == 1)
            && self.bytes == size
    }
}

fn connect(addr: SocketAddr) -> anyhow::Result<(TcpStream, Instant)> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok((stream, started))
}

fn send(
    stream: &mut TcpStream,
    addr: SocketAddr,
    data: &[u8],
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut sent = 0usize;
    for chunk in data.chunks(WRITE_CHUNK_BYTES) {
        stream
            .write_all(chunk)
            .with_context(|| format!("sending to {addr} after {sent} bytes of a part"))?;
        sent += chunk.len();
        progress.advance(chunk.len() as u64);
    }
    Ok(())
}

fn end_stream(stream: &TcpStream, addr: SocketAddr) -> anyhow::Result<()> {
    stream
        .shutdown(Shutdown::Write)
        .with_context(|| format!("ending the stream to {addr}"))
}

/// Reads one answer line, or `None` at end of stream before any byte. The sink writes a line
/// only after a part the client has finished sending, and nothing after it until the next
/// part, so reading up to the newline never takes bytes of a later answer.
fn read_answer(stream: &mut TcpStream, addr: SocketAddr) -> anyhow::Result<Option<Answer>> {
    let mut line = [0u8; MAX_ANSWER_BYTES];
    let mut len = 0;
    loop {
        if len == line.len() {
            bail!("{addr} sent an answer longer than {MAX_ANSWER_BYTES} bytes");
        }
        let n = match stream.read(&mut line[len..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.with_context(|| format!("reading the sink's answer from {addr}"))?,
        };
        if n == 0 {
            if len == 0 {
                return Ok(None);
            }
            bail!("{addr} closed in the middle of an answer");
        }
        len += n;
        if line[len - 1] == b'\n' {
            let text = std::str::from_utf8(&line[..len])
                .map_err(|_| anyhow!("{addr} sent an answer that is not ASCII"))?;
            return Answer::parse(text).map(Some).map_err(|e| anyhow!(e));
        }
        if line[..len].contains(&b'\n') {
            bail!("{addr} sent more than one answer at once");
        }
    }
}

/// (piece, correct, bytes counted) for one answer.
fn check(index: usize, piece: &Piece, answer: &Answer) -> (usize, bool, u64) {
    let ok = answer.bytes == piece.range.len() as u64 && answer.sha256 == piece.sha256;
    (index, ok, answer.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(streams: u32, part_bytes: Option<usize>, len: usize) -> Job {
        Job::new(
            Shape {
                streams,
                part_bytes,
            },
            &Payload::generate(len),
        )
    }

    #[test]
    fn parts_cover_the_payload_once() {
        let job = job(10, Some(1000), 10_500);
        let ranges: Vec<_> = job.pieces.iter().map(|p| p.range.clone()).collect();
        assert_eq!(ranges.len(), 11);
        assert_eq!(ranges[0], 0..1000);
        assert_eq!(ranges[10], 10_000..10_500);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn shares_cover_the_payload_once() {
        let job = job(3, None, 10);
        let ranges: Vec<_> = job.pieces.iter().map(|p| p.range.clone()).collect();
        assert_eq!(ranges, [0..3, 3..6, 6..10]);
        assert!(
            self::job(1, None, 10).pieces.is_empty(),
            "single: client.rs"
        );
    }

    #[test]
    fn shapes_describe_themselves() {
        let aws = Shape {
            streams: 10,
            part_bytes: Some(8 << 20),
        };
        assert_eq!(aws.sink_buffers(1 << 20), (0, 0));
        let plain = Shape {
            streams: 4,
            part_bytes: None,
        };
        assert_eq!(plain.sink_buffers(10), (3, 4));
        assert!(!plain.is_single());
    }
}
