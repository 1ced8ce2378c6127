//! Routes that accept PROXY protocol: reading the header a load balancer put in front of the
//! client's bytes, and writing the one this relay puts in front of them for its upstream.
//!
//! The header is peeked at (like a ClientHello) until it is whole, then exactly its bytes are
//! read off the socket: what follows it, the payload, stays queued for the ClientHello peek or
//! the splice, untouched.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::peek::{Peeked, client_error, peek_client};
use crate::end::CloseReason;
use crate::proxy_protocol::{self, Accept, Parsed, ProxyHeader, ProxyHeaderError, Version};
use crate::transfer::direction_io::is_reset;

/// How many reads may take the peeked header off the socket. One does it (the bytes are
/// queued); the bound only keeps a kernel that returns less than asked from looping forever.
const CONSUME_READS: usize = 4;

/// What the client has sent of its header so far.
#[derive(Debug)]
pub(crate) enum HeaderRead {
    /// Not the whole header yet: wait for more bytes.
    Incomplete,
    /// The whole header, now consumed.
    Complete(ProxyHeader),
}

/// Peeks at the client's first bytes and, once a whole header of a version `accept` takes is
/// there, reads exactly its bytes off the socket. `read_closed`: the client has ended its side,
/// so a header still incomplete will never be whole.
pub(crate) fn read_proxy_header(
    client: &TcpStream,
    accept: Accept,
    scratch: &mut [u8],
    read_closed: bool,
) -> Result<HeaderRead, CloseReason> {
    let refuse = |e| Err(CloseReason::ProxyHeader(e));
    let limit = scratch.len().min(proxy_protocol::MAX_V2_HEADER_BYTES);
    let n = match peek_client(client, &mut scratch[..limit])? {
        Peeked::Bytes(n) => n,
        Peeked::Ended => return refuse(ProxyHeaderError::Truncated),
        Peeked::NotYet => return Ok(HeaderRead::Incomplete),
    };
    let header = match proxy_protocol::parse(&scratch[..n], accept) {
        Ok(Parsed::Complete(header)) => header,
        Ok(Parsed::Incomplete) if read_closed => return refuse(ProxyHeaderError::Truncated),
        Ok(Parsed::Incomplete) => return Ok(HeaderRead::Incomplete),
        Err(e) => return refuse(e),
    };
    let mut consumed = 0;
    for _ in 0..CONSUME_READS {
        match (&*client).read(&mut scratch[consumed..header.length]) {
            Ok(0) => return refuse(ProxyHeaderError::Truncated),
            Ok(n) => consumed += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(client_error(&e)),
        }
        if consumed == header.length {
            return Ok(HeaderRead::Complete(header));
        }
    }
    Err(CloseReason::ClientError(
        "the peeked PROXY header could not be read off the socket".into(),
    ))
}

/// Writes the PROXY header for `source` (the client) and `destination` (where it connected)
/// to a just-connected upstream, before any payload: no round trip is added, and the bytes
/// are not the client's, so they are not counted as relayed.
pub(crate) fn write_proxy_header(
    upstream: &TcpStream,
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
) -> Result<(), CloseReason> {
    let mut header = Vec::with_capacity(proxy_protocol::MAX_V1_HEADER_BYTES);
    proxy_protocol::encode(version, source, destination, &mut header);
    // A fresh connection's send buffer is empty: the header (at most 107 bytes) fits whole.
    match (&*upstream).write(&header) {
        Ok(n) if n == header.len() => Ok(()),
        Ok(n) => Err(CloseReason::UpstreamError(format!(
            "wrote {n} of the PROXY header's {} bytes",
            header.len()
        ))),
        Err(e) if is_reset(&e) => Err(CloseReason::UpstreamReset),
        Err(e) => Err(CloseReason::UpstreamError(format!(
            "cannot write the PROXY header: {e}"
        ))),
    }
}
