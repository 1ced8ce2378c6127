//! The first bytes of a connection at a sink: read until they say which workload it is.

use std::io::Read as _;
use std::net::TcpStream;

use crate::protocol::{MAX_HELLO_BYTES, Opening};

/// Size of the first read, which tells a probe from an upload or a hello line.
pub(crate) const FIRST_READ_BYTES: usize = 64 * 1024;

/// The opening of a connection: the bytes read so far and what they are.
#[derive(Debug)]
pub(crate) struct First {
    /// Up to [`FIRST_READ_BYTES`] bytes; `len` of them were read.
    pub(crate) bytes: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) opening: Opening,
}

impl First {
    /// What came after the hello line (or everything, for an upload).
    pub(crate) fn data(&self) -> &[u8] {
        match self.opening {
            Opening::Hello(_, used) => &self.bytes[used..self.len],
            _ => &self.bytes[..self.len],
        }
    }
}

/// Reads until the opening is clear: one read for nearly every connection, more only while
/// the bytes so far are the start of a hello line split across segments. End of stream before
/// that (a probe sends nothing) classifies what was read as an upload.
pub(crate) fn read(stream: &mut TcpStream) -> std::io::Result<First> {
    let mut bytes = vec![0u8; FIRST_READ_BYTES];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut bytes[len..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        len += n;
        let opening = match Opening::classify(&bytes[..len]) {
            Opening::NeedMore if n > 0 && len < MAX_HELLO_BYTES => continue,
            Opening::NeedMore => Opening::Upload,
            other => other,
        };
        return Ok(First {
            bytes,
            len,
            opening,
        });
    }
}
