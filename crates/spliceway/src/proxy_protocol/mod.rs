//! The PROXY protocol (versions 1 and 2, HAProxy's `proxy-protocol.txt`): the header a load
//! balancer puts in front of a connection to say who the client really is, read from the
//! client's first bytes, and the header the relay writes to its upstream.
//!
//! The public part is what a route is configured with: [`Accept`]
//! ([`ConnectionOptions::accept_proxy`](crate::ConnectionOptions::accept_proxy)) and [`Version`]
//! ([`ConnectionOptions::send_proxy`](crate::ConnectionOptions::send_proxy)). The parser and
//! writer described below are not part of the stable interface.
//!
//! A load balancer (an AWS Network Load Balancer, HAProxy, a Kubernetes Service on EKS) that
//! terminates nothing but TCP hides the client's address: the relay sees the balancer's. With
//! PROXY protocol the balancer sends one header first, and the relay takes the client's address
//! from it for its access lists, its logs and the header it sends on.
//!
//! - `parse` reads a header from the bytes peeked so far: `Parsed::Incomplete` until it
//!   has arrived (it may span segments), `Parsed::Complete` with its exact length, so the
//!   relay consumes the header and not one byte of the payload after it, or a
//!   `ProxyHeaderError` naming what is wrong. It never reads past the header's end: a v1
//!   header ends at its CRLF (at most `MAX_V1_HEADER_BYTES`), a v2 header 16 bytes plus the
//!   length it states (at most `MAX_V2_HEADER_BYTES` in all).
//! - `encode` writes a header (v1 text or v2 binary) for a client and the address it
//!   connected to.
//!
//! The parser is written for hostile input like the ClientHello parser beside it: it never
//! panics, allocates nothing unless a v2 header carries an AWS VPC endpoint id, and refuses
//! early, as soon as the bytes so far cannot begin a valid header (a client that sends TLS to a
//! route expecting PROXY protocol is refused on its first byte, not after a timeout).
//!
//! Accepted: v1 `TCP4`, `TCP6` and `UNKNOWN`; v2 `PROXY` over TCP (IPv4, IPv6, or the
//! unspecified family) and `LOCAL` (what an NLB's health checks send). `LOCAL`, `UNKNOWN` and
//! the unspecified family carry no client address: the connection keeps the socket's own peer
//! address. Refused as unsupported: v2 over UDP or UNIX sockets, other commands and versions.
//! TLVs are skipped (their structure is checked), except the AWS one (`0xEA`), whose VPC
//! endpoint id is kept for the log.

pub(crate) mod encode;
pub(crate) mod header;
pub(crate) mod parse;

#[cfg(test)]
mod tests;

#[allow(unused_imports)]
pub(crate) use encode::encode;
pub use header::{Accept, Version};
#[allow(unused_imports)]
pub(crate) use header::{
    MAX_V1_HEADER_BYTES, MAX_V2_HEADER_BYTES, Parsed, ProxyHeader, ProxyHeaderError, V1_PREFIX,
    V2_SIGNATURE,
};
#[allow(unused_imports)]
pub(crate) use parse::parse;
