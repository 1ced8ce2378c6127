//! HTTP CONNECT, for routes with `upstream = "http-connect"` (stone's `proxy` relay type).
//!
//! A client that honours `HTTPS_PROXY` (the AWS CLI and SDKs, curl) opens a connection to the
//! relay and sends `CONNECT host:port HTTP/1.1` and its headers; the relay checks the target
//! against the route's [`ConnectPattern`]s (names with a port, before resolving) and its
//! `upstream_allow` ranges (after resolving), connects, answers `200 Connection established`
//! and from then on relays the bytes with splice like any other connection: TLS stays end to
//! end. Bytes the client sent after its request (early data) are never read by the relay: only
//! the request's own bytes are taken off the socket, so the rest is the first thing spliced.
//!
//! The public part is [`ConnectPattern`], an entry of a route's
//! [`ConnectTable`](crate::ConnectTable); the request parser (`request.rs`, on `httparse`) and
//! the answers (`answer.rs`) are sans-I/O and not part of the stable interface.

pub(crate) mod answer;
mod pattern;
pub(crate) mod request;

pub use answer::Answer;
pub use pattern::{ConnectPattern, ConnectPatternError};

#[cfg(test)]
mod tests;
