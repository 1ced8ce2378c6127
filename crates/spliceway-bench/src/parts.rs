//! The `parts` workload at a sink (`SPLICEWAY-BENCH parts {part_bytes}`, see
//! [`crate::protocol`]): each part hashed as it arrives and answered as soon as it is
//! complete, like S3's answer to one request of a multipart upload.
//!
//! Both sinks serve it the same way. The in-process sink otherwise keeps its hash out of the
//! timed transfer; here it cannot, since the answer carries the part's hash and the client
//! waits for it. What it avoids is any other work: one read buffer per connection, one hasher
//! reset after each part, the answer formatted into a stack buffer, nothing allocated per part.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};

use sha2::{Digest as _, Sha256};

use crate::protocol::{Answer, MAX_ANSWER_BYTES};

/// Size of the read buffer (one per connection).
const READ_BYTES: usize = 256 * 1024;

/// What one connection of parts delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Served {
    /// Answers written (complete parts, plus a trailing partial one).
    pub(crate) parts: u64,
    /// Payload bytes received, the hello line not counted.
    pub(crate) bytes: u64,
}

/// The state of the part being received.
struct Part {
    part_bytes: u64,
    hasher: Sha256,
    received: u64,
    served: Served,
}

impl Part {
    /// Takes `data` (which may end a part and begin the next), answering each completed part.
    fn take(&mut self, stream: &mut TcpStream, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = usize::try_from(self.part_bytes - self.received).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.hasher.update(now);
            self.received += now.len() as u64;
            data = rest;
            if self.received == self.part_bytes {
                self.answer(stream)?;
            }
        }
        Ok(())
    }

    /// Writes the answer of the part so far and starts the next.
    fn answer(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let answer = Answer {
            bytes: self.received,
            sha256: self.hasher.finalize_reset().into(),
        };
        let mut line = [0u8; MAX_ANSWER_BYTES];
        let len = answer.encode(&mut line);
        stream.write_all(&line[..len])?;
        self.served.parts += 1;
        self.served.bytes += self.received;
        self.received = 0;
        Ok(())
    }

    /// Bytes the next read may take without crossing into the next part.
    fn room(&self, buffer: usize) -> usize {
        usize::try_from(self.part_bytes - self.received).map_or(buffer, |room| room.min(buffer))
    }
}

/// Serves a connection of parts of `part_bytes` whose first bytes after the hello line,
/// `already`, have been read; at end of stream answers a trailing partial part and closes.
/// Answers go out at once (TCP_NODELAY), as a request/response server's would.
pub(crate) fn serve(
    stream: &mut TcpStream,
    already: &[u8],
    part_bytes: u64,
) -> std::io::Result<Served> {
    stream.set_nodelay(true)?;
    let mut part = Part {
        part_bytes: part_bytes.max(1),
        hasher: Sha256::new(),
        received: 0,
        served: Served { parts: 0, bytes: 0 },
    };
    part.take(stream, already)?;
    let mut buffer = vec![0u8; READ_BYTES];
    loop {
        let room = part.room(buffer.len());
        let n = match stream.read(&mut buffer[..room]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            break;
        }
        part.take(stream, &buffer[..n])?;
    }
    if part.received > 0 {
        part.answer(stream)?;
    }
    stream.shutdown(Shutdown::Both)?;
    Ok(part.served)
}
