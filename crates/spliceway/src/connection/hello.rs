//! The client's TLS ClientHello, peeked at without consuming it, so the whole hello still
//! reaches the upstream through the splice: SNI routes choose their upstream from it; fixed
//! routes only note the server name for the log (`sni=`), so an operator can see which names
//! clients asked for.

use std::io;

use mio::net::TcpStream;

use crate::address::UpstreamAddr;
use crate::end::CloseReason;
use crate::route::{NameOrigin, SniTable};
use crate::sni::{self, Peek};
use crate::transfer::direction_io::is_reset;

/// What the client has sent so far.
#[derive(Debug)]
pub(crate) enum Hello {
    /// Not the whole ClientHello yet: wait for more bytes.
    Incomplete,
    /// The server name, and where the SNI table sends it.
    Routed {
        /// The name the client asked for.
        name: String,
        /// The upstream chosen for it.
        upstream: UpstreamAddr,
        /// Whether that upstream's name is the entry's or the client's.
        origin: NameOrigin,
    },
    /// A name no entry allows: refused, the name kept for the log line of the connection.
    Refused {
        /// The name the client asked for.
        name: String,
        /// The refusal.
        reason: CloseReason,
    },
}

/// Looks at the client's first bytes without consuming them (`MSG_PEEK`) and, once the whole
/// ClientHello is there, chooses the upstream from its server name.
pub(crate) fn read_hello(
    client: &TcpStream,
    table: &SniTable,
    scratch: &mut [u8],
) -> Result<Hello, CloseReason> {
    let n = match client.peek(scratch) {
        Ok(0) => {
            return Err(CloseReason::SniRefused(
                "the client closed before sending a ClientHello".into(),
            ));
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Hello::Incomplete),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Hello::Incomplete),
        Err(e) => {
            return Err(if is_reset(&e) {
                CloseReason::ClientReset
            } else {
                CloseReason::ClientError(e.to_string())
            });
        }
    };
    let hello = match sni::parse_client_hello(&scratch[..n]) {
        Ok(Peek::Complete(hello)) => hello,
        Ok(Peek::Incomplete { .. }) if n < scratch.len() => return Ok(Hello::Incomplete),
        Ok(Peek::Incomplete { .. }) => {
            return Err(CloseReason::SniRefused(
                "ClientHello larger than the peek buffer".into(),
            ));
        }
        Err(e) => return Err(CloseReason::SniRefused(e.to_string())),
    };
    let Some(name) = hello.server_name else {
        return Err(CloseReason::SniRefused("no server name (SNI)".into()));
    };
    let listen_port = client.local_addr().map(|a| a.port()).unwrap_or(0);
    match table.choose_with_origin(&name, listen_port) {
        Some((upstream, origin)) => Ok(Hello::Routed {
            name,
            upstream,
            origin,
        }),
        None => Ok(Hello::Refused {
            reason: CloseReason::SniRefused(format!("server name {name:?} is not allowed")),
            name,
        }),
    }
}

/// What a peek at a fixed route's client found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NamePeek {
    /// The ClientHello's server name.
    Found(String),
    /// Not all of a ClientHello yet: another look may find it.
    NotYet,
    /// Nothing to find: not TLS, no server name, or the socket had nothing or failed (which
    /// the relaying itself will meet and report).
    Nothing,
}

/// Looks at a fixed route's client's first bytes without consuming them, for the server name
/// alone: never waits, never refuses. One `recv(MSG_PEEK)`.
pub(crate) fn peek_server_name(client: &TcpStream, scratch: &mut [u8]) -> NamePeek {
    let n = match client.peek(scratch) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return NamePeek::NotYet,
        Err(_) => return NamePeek::Nothing,
    };
    match sni::parse_client_hello(&scratch[..n]) {
        Ok(Peek::Complete(hello)) => hello.server_name.map_or(NamePeek::Nothing, NamePeek::Found),
        Ok(Peek::Incomplete { .. }) if n > 0 && n < scratch.len() => NamePeek::NotYet,
        _ => NamePeek::Nothing,
    }
}
