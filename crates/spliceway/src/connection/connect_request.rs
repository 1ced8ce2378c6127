//! Routes with `upstream = "http-connect"`: reading the client's CONNECT request, and its
//! answers.
//!
//! The request is peeked at until it is whole (`http_connect::request`, sans-I/O), exactly its
//! bytes are read off the socket, and its target is checked against `connect_allow`: what
//! the client sent after it (early data, typically its TLS ClientHello) stays queued and is the
//! first thing spliced to the upstream once the relay has answered `200`.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use super::peek::{Peeked, client_error, peek_client};
use crate::end::CloseReason;
use crate::http_connect::Answer;
use crate::http_connect::request::{ConnectTarget, MAX_REQUEST_BYTES, Parsed, parse_request};
use crate::route::ConnectTable;

/// How many reads may take the peeked request off the socket (one does it; the bound only
/// keeps a kernel that returns less than asked from looping forever).
const CONSUME_READS: usize = 4;

/// What the client has sent of its request so far.
#[derive(Debug)]
pub(crate) enum RequestRead {
    /// Not the whole request yet: wait for more bytes.
    Incomplete,
    /// A whole request for an allowed target, now consumed.
    Allowed(ConnectTarget),
}

/// Peeks at the client's first bytes and, once a whole request is there, reads exactly its
/// bytes off the socket and checks its target against `table`. `read_closed`: the client has
/// ended its side, so a request still incomplete will never be whole.
pub(crate) fn read_connect_request(
    client: &TcpStream,
    table: &ConnectTable,
    scratch: &mut [u8],
    read_closed: bool,
) -> Result<RequestRead, CloseReason> {
    let limit = scratch.len().min(MAX_REQUEST_BYTES);
    let n = match peek_client(client, &mut scratch[..limit])? {
        Peeked::Bytes(n) => n,
        Peeked::Ended => return Err(CloseReason::ClientLeft),
        Peeked::NotYet => return Ok(RequestRead::Incomplete),
    };
    let (target, length) = match parse_request(&scratch[..n]) {
        Ok(Parsed::Complete { target, length }) => (target, length),
        Ok(Parsed::Incomplete) if read_closed => {
            return Err(CloseReason::BadRequest(
                "the client ended its side before its request was whole".into(),
            ));
        }
        Ok(Parsed::Incomplete) => return Ok(RequestRead::Incomplete),
        Err(e) => return Err(CloseReason::BadRequest(e.to_string())),
    };
    let mut consumed = 0;
    for _ in 0..CONSUME_READS {
        match (&*client).read(&mut scratch[consumed..length]) {
            Ok(0) => return Err(CloseReason::ClientLeft),
            Ok(n) => consumed += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(client_error(&e)),
        }
        if consumed == length {
            // Checked once the request is consumed, so that a refused client's socket holds
            // nothing unread when it closes: it then ends with FIN after the 403, not a reset.
            if !table.allows(&target.host, target.port) {
                return Err(CloseReason::ConnectRefused(format!(
                    "{target} is not in connect_allow"
                )));
            }
            return Ok(RequestRead::Allowed(target));
        }
    }
    Err(CloseReason::ClientError(
        "the peeked CONNECT request could not be read off the socket".into(),
    ))
}

/// Writes `answer` to the client. It is a few dozen bytes on a socket that has sent nothing
/// yet, so it fits its send buffer whole; anything less is the client's failure.
pub(crate) fn write_answer(client: &TcpStream, answer: Answer) -> Result<(), CloseReason> {
    let response = answer.response();
    match (&*client).write(response) {
        Ok(n) if n == response.len() => Ok(()),
        Ok(_) => Err(CloseReason::ClientError(
            "the CONNECT answer did not fit the client's send buffer".into(),
        )),
        Err(e) => Err(client_error(&e)),
    }
}
