//! What a PROXY protocol header is: the versions, a header read, the reasons one is refused,
//! and the format's constants.

use std::fmt;
use std::net::SocketAddr;

/// The v1 header's most bytes, CRLF included (the specification's bound: 107).
pub const MAX_V1_HEADER_BYTES: usize = 107;
/// The v2 header's most bytes the relay accepts: the 16-byte fixed part and up to 2,032 bytes
/// of addresses and TLVs. The format allows 65,551; no balancer sends more than a few hundred
/// (an NLB's addresses and VPC endpoint id are under 100), and a longer one is refused
/// ([`ProxyHeaderError::TooLong`]) rather than held in the socket's receive buffer.
pub const MAX_V2_HEADER_BYTES: usize = 2048;
/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's first bytes.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The v2 header's fixed part: signature, version and command, family and transport, length.
pub(crate) const V2_FIXED_BYTES: usize = 16;
pub(crate) const V2_VERSION: u8 = 0x20;
pub(crate) const V2_COMMAND_LOCAL: u8 = 0x0;
pub(crate) const V2_COMMAND_PROXY: u8 = 0x1;
pub(crate) const V2_TCP4: u8 = 0x11;
pub(crate) const V2_TCP6: u8 = 0x21;
pub(crate) const V2_TCP4_ADDRESS_BYTES: usize = 12;
pub(crate) const V2_TCP6_ADDRESS_BYTES: usize = 36;
/// PP2_TYPE_AWS, whose subtype 0x01 (PP2_SUBTYPE_AWS_VPCE_ID) is the VPC endpoint id.
pub(crate) const TLV_AWS: u8 = 0xEA;
pub(crate) const TLV_AWS_SUBTYPE_VPCE_ID: u8 = 0x01;
/// The PROXY protocol versions a route accepts from its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accept {
    /// Version 1 only (text).
    V1,
    /// Version 2 only (binary; what an AWS NLB sends).
    V2,
    /// Either version, told apart by the first byte.
    Any,
}

impl Accept {
    pub(crate) fn takes(self, version: Version) -> bool {
        matches!(
            (self, version),
            (Accept::Any, _) | (Accept::V1, Version::V1) | (Accept::V2, Version::V2)
        )
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accept::V1 => "v1",
            Accept::V2 => "v2",
            Accept::Any => "any",
        })
    }
}

impl std::str::FromStr for Accept {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Accept::V1),
            "v2" => Ok(Accept::V2),
            "any" => Ok(Accept::Any),
            other => Err(format!(
                "unknown PROXY protocol version {other:?} (expected v1, v2 or any)"
            )),
        }
    }
}

/// A PROXY protocol version, for the header the relay sends upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1: one line of text.
    V1,
    /// Version 2: binary.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!(
                "unknown PROXY protocol version {other:?} (expected v1 or v2)"
            )),
        }
    }
}

/// A header that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// Which version it was.
    pub version: Version,
    /// Its length in bytes: what the relay consumes before the payload.
    pub length: usize,
    /// The client's address and the address it connected to (`source`, `destination`);
    /// `None` for v2 `LOCAL`, v1 `UNKNOWN` and the unspecified family, which relay with the
    /// socket's own addresses.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// The AWS VPC endpoint id (TLV `0xEA`, subtype `0x01`) of traffic that came through
    /// PrivateLink.
    pub vpc_endpoint_id: Option<String>,
}

/// What `parse` found in the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning of a header: wait for more bytes.
    Incomplete,
    /// A whole header.
    Complete(ProxyHeader),
}

/// Why a connection's PROXY protocol header was refused; [`ProxyHeaderError::reason`] is the
/// `reason` label of `spliceway_proxy_header_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The first bytes are no PROXY protocol signature (a client that sent no header).
    Signature,
    /// A header of a version the route does not accept.
    Version,
    /// The client ended its side before the whole header arrived.
    Truncated,
    /// No whole header arrived within the route's PROXY timeout.
    Timeout,
    /// Longer than allowed ([`MAX_V1_HEADER_BYTES`], [`MAX_V2_HEADER_BYTES`]).
    TooLong,
    /// Well-formed, but for something a TCP relay cannot take (UDP, UNIX sockets, an unknown
    /// command or version).
    Unsupported(&'static str),
    /// Not well-formed (a bad address, port or separator, an address block too short for its
    /// family, a TLV running past the header).
    Malformed(&'static str),
}

impl ProxyHeaderError {
    /// Every reason label, in the order of the variants.
    pub const REASONS: [&'static str; 7] = [
        "signature",
        "version",
        "truncated",
        "timeout",
        "too_long",
        "unsupported",
        "malformed",
    ];

    /// The reason as a metric label: one of [`ProxyHeaderError::REASONS`].
    #[must_use]
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// The position of [`ProxyHeaderError::reason`] in [`ProxyHeaderError::REASONS`].
    #[must_use]
    pub fn index(&self) -> usize {
        match self {
            ProxyHeaderError::Signature => 0,
            ProxyHeaderError::Version => 1,
            ProxyHeaderError::Truncated => 2,
            ProxyHeaderError::Timeout => 3,
            ProxyHeaderError::TooLong => 4,
            ProxyHeaderError::Unsupported(_) => 5,
            ProxyHeaderError::Malformed(_) => 6,
        }
    }
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Signature => f.write_str("no PROXY protocol signature"),
            ProxyHeaderError::Version => {
                f.write_str("a PROXY protocol version the route does not accept")
            }
            ProxyHeaderError::Truncated => {
                f.write_str("the client closed before the whole PROXY header")
            }
            ProxyHeaderError::Timeout => f.write_str("no whole PROXY header in time"),
            ProxyHeaderError::TooLong => f.write_str("PROXY header longer than allowed"),
            ProxyHeaderError::Unsupported(what) => write!(f, "unsupported PROXY header: {what}"),
            ProxyHeaderError::Malformed(what) => write!(f, "malformed PROXY header: {what}"),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}
