//! Looking at what a client has sent without taking it: the PROXY header and the CONNECT
//! request are parsed from a peek, and only a whole one is read off the socket.

use std::io;

use mio::net::TcpStream;

use crate::end::CloseReason;
use crate::transfer::direction_io::is_reset;

/// What a peek found.
pub(super) enum Peeked {
    /// This many bytes are waiting (at least one).
    Bytes(usize),
    /// The client ended its side with nothing waiting.
    Ended,
    /// Nothing yet: wait for the next readable event.
    NotYet,
}

/// Peeks at most `buf.len()` bytes of what `client` sent.
pub(super) fn peek_client(client: &TcpStream, buf: &mut [u8]) -> Result<Peeked, CloseReason> {
    match client.peek(buf) {
        Ok(0) => Ok(Peeked::Ended),
        Ok(n) => Ok(Peeked::Bytes(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(Peeked::NotYet)
        }
        Err(e) => Err(client_error(&e)),
    }
}

/// How a failed read or write on the client's socket ends the connection.
pub(super) fn client_error(e: &io::Error) -> CloseReason {
    if is_reset(e) {
        CloseReason::ClientReset
    } else {
        CloseReason::ClientError(e.to_string())
    }
}
