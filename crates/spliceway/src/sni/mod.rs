//! TLS ClientHello parsing for SNI routing.
//!
//! The public part is [`NamePattern`], an entry of an [`SniTable`](crate::SniTable); the parser
//! itself is not part of the stable interface.
//!
//! To route a TLS connection by the name the client asked for, the relay looks at the client's
//! first bytes with `MSG_PEEK`: nothing is consumed, so after the routing decision the very same
//! bytes are spliced to the upstream and TLS stays end to end (the relay never holds a key or a
//! certificate). This module turns those peeked bytes into a routing answer:
//!
//! - `parse_client_hello` reads the TLS record layer and the ClientHello handshake message
//!   and returns the `server_name` (SNI) host name and the ALPN protocols, or
//!   `Peek::Incomplete` when the hello has not fully arrived yet (it may come in several TCP
//!   segments and, rarely, in several TLS records), or an `SniError` when the bytes are not a
//!   ClientHello the relay can route.
//! - [`NamePattern`] is one entry of a table of allowed names (`example.com`,
//!   `*.s3.ap-northeast-1.amazonaws.com`) to match the parsed name against.
//!
//! The parser is written for hostile input: it never panics, never reads outside the lengths
//! that the record and handshake headers give, allocates only once the whole hello is present
//! (and then at most the size of the input), and bounds everything by
//! `MAX_CLIENT_HELLO_BYTES`. It checks the structure it walks through (lengths, the host
//! name's syntax, duplicate extensions) but does not judge cryptographic content such as cipher
//! suites or key shares: that is the upstream server's job, which still sees every byte.
//!
//! With Encrypted Client Hello the name seen here is the outer, public name; the relay can only
//! route on that.

pub(crate) mod client_hello;
pub(crate) mod host_name;
mod pattern;

#[allow(unused_imports)]
pub(crate) use client_hello::{
    ClientHello, MAX_CLIENT_HELLO_BYTES, Peek, SniError, parse_client_hello,
};
pub use pattern::{NamePattern, NamePatternError};

#[cfg(test)]
use client_hello::{
    CONTENT_TYPE_HANDSHAKE, EXTENSION_ALPN, EXTENSION_SERVER_NAME, HANDSHAKE_CLIENT_HELLO,
    NAME_TYPE_HOST_NAME, RANDOM_LEN, RECORD_HEADER_LEN,
};
#[cfg(test)]
use host_name::MAX_HOST_NAME_LEN;

#[cfg(test)]
mod tests;
