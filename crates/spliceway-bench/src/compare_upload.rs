//! The transfer of `--compare --workload upload`: the payload sent through a variant to the
//! sink over `--streams` connections at once (default 1), connection i sending the i-th of N
//! contiguous shares as one plain upload, each share's byte count and SHA-256 checked against
//! the sink's answer. Several connections are what a shared limit (`route_rate_limit`) is
//! measured with: the total rate says whether the route holds its limit, each connection's rate
//! whether it is shared fairly.
//!
//! Every connection is opened (and, through a CONNECT proxy, tunnelled) before the clock
//! starts, so one stream times what one upload timed before `--streams` was accepted here. A
//! connection's time runs from that common start to the sink's answer on it.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::client::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::data::{Payload, sha256};
use crate::protocol::{Answer, DIGEST_BYTES, MAX_ANSWER_BYTES};

/// The payload cut into one share per connection, with their digests (computed before any
/// timing).
#[derive(Debug)]
pub(crate) struct Shares {
    shares: Vec<(Range<usize>, [u8; DIGEST_BYTES])>,
}

impl Shares {
    pub(crate) fn new(payload: &Payload, streams: u32) -> Shares {
        let len = payload.bytes.len();
        let n = streams.max(1) as usize;
        let shares = (0..n)
            .map(|i| {
                let range = i * len / n..(i + 1) * len / n;
                let digest = if n == 1 {
                    payload.sha256
                } else {
                    sha256(&payload.bytes[range.clone()])
                };
                (range, digest)
            })
            .collect();
        Shares { shares }
    }

    pub(crate) fn count(&self) -> usize {
        self.shares.len()
    }

    /// The bytes of each share, in stream order.
    pub(crate) fn bytes(&self) -> impl Iterator<Item = usize> + '_ {
        self.shares.iter().map(|(range, _)| range.len())
    }
}

/// Opens one connection per share to `listen` (through a CONNECT tunnel to `tunnel_to`, an
/// address or a name with its port, when given): what [`send`] then times.
pub(crate) fn open(
    listen: SocketAddr,
    tunnel_to: Option<&str>,
    shares: &Shares,
) -> anyhow::Result<Vec<TcpStream>> {
    (0..shares.count())
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&listen, CONNECT_TIMEOUT)
                .with_context(|| format!("connecting to {listen}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            if let Some(to) = tunnel_to {
                tunnel(&mut s, to)?;
            }
            Ok(s)
        })
        .collect()
}

/// Sends each share on its connection at once, checks every answer, and returns each
/// connection's time from the common start to its answer.
pub(crate) fn send(
    streams: Vec<TcpStream>,
    payload: &Payload,
    shares: &Shares,
) -> anyhow::Result<Vec<Duration>> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .zip(&shares.shares)
            .map(|(mut s, (range, digest))| {
                let bytes = &payload.bytes[range.clone()];
                scope.spawn(move || {
                    upload_one(&mut s, bytes, digest)?;
                    anyhow::Ok(start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join()
                    .map_err(|_| anyhow!("stream {i}'s thread panicked"))?
                    .with_context(|| format!("stream {i}"))
            })
            .collect()
    })
}

/// Asks an HTTP CONNECT proxy for a tunnel to `to`, reading its answer byte by byte so that
/// nothing past the head is consumed.
pub(crate) fn tunnel(s: &mut TcpStream, to: &str) -> anyhow::Result<()> {
    write!(s, "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n")?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            bail!("the proxy closed before answering CONNECT");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("the proxy's answer to CONNECT has no end");
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "the proxy refused the tunnel: {:?}",
            String::from_utf8_lossy(&head)
        );
    }
    Ok(())
}

/// Sends `bytes`, ends the stream and checks the sink's answer.
fn upload_one(s: &mut TcpStream, bytes: &[u8], digest: &[u8; DIGEST_BYTES]) -> anyhow::Result<()> {
    s.write_all(bytes)?;
    s.shutdown(Shutdown::Write)?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER_BYTES as u64).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let got = Answer::parse(text.trim_end()).map_err(|e| anyhow!("the sink's answer: {e}"))?;
    if got.bytes != bytes.len() as u64 || &got.sha256 != digest {
        bail!(
            "integrity check failed: the sink received {} bytes with SHA-256 {}",
            got.bytes,
            got.sha256_hex()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_payload_once_in_order() {
        let payload = Payload::generate(1000);
        for streams in [1, 3, 7, 10] {
            let shares = Shares::new(&payload, streams);
            assert_eq!(shares.count(), streams as usize);
            assert_eq!(shares.bytes().sum::<usize>(), 1000);
            let mut next = 0;
            for (range, digest) in &shares.shares {
                assert_eq!(range.start, next);
                next = range.end;
                assert_eq!(*digest, sha256(&payload.bytes[range.clone()]));
            }
        }
        assert_eq!(Shares::new(&payload, 1).shares[0].1, payload.sha256);
    }
}
