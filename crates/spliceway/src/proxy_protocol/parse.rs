//! Reading a PROXY protocol header from the bytes peeked so far.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{
    Accept, MAX_V1_HEADER_BYTES, MAX_V2_HEADER_BYTES, Parsed, ProxyHeader, ProxyHeaderError,
    TLV_AWS, TLV_AWS_SUBTYPE_VPCE_ID, V1_PREFIX, V2_COMMAND_LOCAL, V2_COMMAND_PROXY,
    V2_FIXED_BYTES, V2_SIGNATURE, V2_TCP4, V2_TCP4_ADDRESS_BYTES, V2_TCP6, V2_TCP6_ADDRESS_BYTES,
    V2_VERSION, Version,
};

/// The longest VPC endpoint id kept for the log (`vpce-` and 17 hex digits in practice).
const MAX_VPC_ENDPOINT_ID_BYTES: usize = 64;

type Result<T> = std::result::Result<T, ProxyHeaderError>;

/// Reads a PROXY protocol header (of a version `accept` takes) from the start of `bytes`, the
/// client's first bytes as peeked so far. Bytes after the header are never looked at: the
/// header's [`length`](ProxyHeader::length) is where the payload starts.
///
/// ```
/// use spliceway::internal::proxy_protocol::{Parsed, parse};
/// use spliceway::proxy_protocol::Accept;
///
/// let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n\x16\x03\x01";
/// let Ok(Parsed::Complete(header)) = parse(bytes, Accept::Any) else { panic!() };
/// assert_eq!(header.length, bytes.len() - 3);
/// assert_eq!(header.addresses.unwrap().0, "192.0.2.7:51000".parse().unwrap());
/// assert_eq!(parse(b"PROXY TCP4 192.0", Accept::Any), Ok(Parsed::Incomplete));
/// assert!(parse(b"\x16\x03\x01", Accept::Any).is_err()); // TLS without a header
/// ```
///
/// # Errors
///
/// The bytes so far cannot begin a header the route takes: see [`ProxyHeaderError`] (never
/// `Truncated` or `Timeout`, which the connection decides).
pub fn parse(bytes: &[u8], accept: Accept) -> Result<Parsed> {
    let Some(&first) = bytes.first() else {
        return Ok(Parsed::Incomplete);
    };
    let version = if first == V1_PREFIX[0] {
        Version::V1
    } else if first == V2_SIGNATURE[0] {
        Version::V2
    } else {
        return Err(ProxyHeaderError::Signature);
    };
    let signature: &[u8] = match version {
        Version::V1 => V1_PREFIX,
        Version::V2 => &V2_SIGNATURE,
    };
    let seen = bytes.len().min(signature.len());
    if bytes[..seen] != signature[..seen] {
        return Err(ProxyHeaderError::Signature);
    }
    if !accept.takes(version) {
        return Err(ProxyHeaderError::Version);
    }
    if seen < signature.len() {
        return Ok(Parsed::Incomplete);
    }
    match version {
        Version::V1 => parse_v1(bytes),
        Version::V2 => parse_v2(bytes),
    }
}

/// `PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(bytes: &[u8]) -> Result<Parsed> {
    let window = &bytes[..bytes.len().min(MAX_V1_HEADER_BYTES)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() == MAX_V1_HEADER_BYTES {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if window[newline - 1] != b'\r' {
        return Err(ProxyHeaderError::Malformed("v1 line not ended by CRLF"));
    }
    let length = newline + 1;
    let line = &window[V1_PREFIX.len()..newline - 1];
    let complete = |addresses| {
        Ok(Parsed::Complete(ProxyHeader {
            version: Version::V1,
            length,
            addresses,
            vpc_endpoint_id: None,
        }))
    };
    // UNKNOWN: the receiver ignores whatever follows, up to the CRLF.
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return complete(None);
    }
    let text =
        std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("v1 line not ASCII"))?;
    let mut fields = text.split(' ');
    let protocol = fields.next().unwrap_or_default();
    let v6 = match protocol {
        "TCP4" => false,
        "TCP6" => true,
        "" => return Err(ProxyHeaderError::Malformed("v1 protocol missing")),
        _ => {
            return Err(ProxyHeaderError::Unsupported(
                "v1 protocol other than TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = |what| fields.next().ok_or(ProxyHeaderError::Malformed(what));
    let source = v1_address(next("v1 source address missing")?, v6)?;
    let destination = v1_address(next("v1 destination address missing")?, v6)?;
    let source_port = v1_port(next("v1 source port missing")?)?;
    let destination_port = v1_port(next("v1 destination port missing")?)?;
    if fields.next().is_some() {
        return Err(ProxyHeaderError::Malformed(
            "v1 line has more than six fields",
        ));
    }
    complete(Some((
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
    )))
}

fn v1_address(text: &str, v6: bool) -> Result<IpAddr> {
    let parsed = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    parsed.map_err(|_| ProxyHeaderError::Malformed("v1 address not of its protocol's family"))
}

fn v1_port(text: &str) -> Result<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse::<u16>() {
        Ok(port) if digits && !leading_zero => Ok(port),
        _ => Err(ProxyHeaderError::Malformed(
            "v1 port not a number from 0 to 65535",
        )),
    }
}

/// The 16-byte fixed part, then the addresses and TLVs. Each field is checked as soon as it
/// has arrived, so a bad header is refused without waiting for the rest of it.
fn parse_v2(bytes: &[u8]) -> Result<Parsed> {
    let Some(&version_command) = bytes.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if version_command & 0xF0 != V2_VERSION {
        return Err(ProxyHeaderError::Unsupported(
            "v2 header of a version other than 2",
        ));
    }
    let command = version_command & 0x0F;
    if command != V2_COMMAND_LOCAL && command != V2_COMMAND_PROXY {
        return Err(ProxyHeaderError::Unsupported(
            "v2 command other than LOCAL or PROXY",
        ));
    }
    let Some(&family) = bytes.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    if command == V2_COMMAND_PROXY {
        check_family(family)?;
    }
    if bytes.len() < V2_FIXED_BYTES {
        return Ok(Parsed::Incomplete);
    }
    let stated = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let length = V2_FIXED_BYTES + stated;
    if length > MAX_V2_HEADER_BYTES {
        return Err(ProxyHeaderError::TooLong);
    }
    let needed_for_addresses = match (command, family) {
        (V2_COMMAND_PROXY, V2_TCP4) => V2_TCP4_ADDRESS_BYTES,
        (V2_COMMAND_PROXY, V2_TCP6) => V2_TCP6_ADDRESS_BYTES,
        _ => 0,
    };
    if stated < needed_for_addresses {
        return Err(ProxyHeaderError::Malformed(
            "v2 length too short for the addresses of its family",
        ));
    }
    if bytes.len() < length {
        return Ok(Parsed::Incomplete);
    }
    let block = &bytes[V2_FIXED_BYTES..length];
    let complete = |addresses, vpc_endpoint_id| {
        Ok(Parsed::Complete(ProxyHeader {
            version: Version::V2,
            length,
            addresses,
            vpc_endpoint_id,
        }))
    };
    // LOCAL (health checks, the balancer's own connections) and the unspecified family: the
    // receiver ignores the addresses and TLVs and uses the socket's own.
    if command == V2_COMMAND_LOCAL || needed_for_addresses == 0 {
        return complete(None, None);
    }
    let (addresses, tlvs) = block.split_at(needed_for_addresses);
    let addresses = v2_addresses(addresses);
    let vpc_endpoint_id = walk_tlvs(tlvs)?;
    complete(Some(addresses), vpc_endpoint_id)
}

fn check_family(family: u8) -> Result<()> {
    match (family >> 4, family & 0x0F) {
        (_, transport) if transport > 2 => {
            Err(ProxyHeaderError::Malformed("v2 transport byte unknown"))
        }
        (family, _) if family > 3 => Err(ProxyHeaderError::Malformed("v2 family byte unknown")),
        (_, 2) => Err(ProxyHeaderError::Unsupported("v2 over UDP")),
        (3, _) => Err(ProxyHeaderError::Unsupported("v2 for UNIX sockets")),
        (1 | 2, 0) => Err(ProxyHeaderError::Unsupported(
            "v2 with an unspecified transport",
        )),
        _ => Ok(()),
    }
}

/// Source and destination of a TCP4 (12 bytes) or TCP6 (36 bytes) address block: the two
/// addresses, then the two ports.
fn v2_addresses(block: &[u8]) -> (SocketAddr, SocketAddr) {
    let size = (block.len() - 4) / 2;
    let ip = |at: usize| -> IpAddr {
        let bytes = &block[at..at + size];
        match <[u8; 4]>::try_from(bytes) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => {
                let mut v6 = [0; 16];
                v6.copy_from_slice(bytes);
                IpAddr::from(v6)
            }
        }
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    (
        SocketAddr::new(ip(0), port(2 * size)),
        SocketAddr::new(ip(size), port(2 * size + 2)),
    )
}

/// Checks the TLVs' structure and returns the AWS VPC endpoint id if one is there; every
/// other TLV is skipped.
fn walk_tlvs(mut tlvs: &[u8]) -> Result<Option<String>> {
    let mut vpc_endpoint_id = None;
    while !tlvs.is_empty() {
        let [kind, high, low, rest @ ..] = tlvs else {
            return Err(ProxyHeaderError::Malformed(
                "v2 TLV header past the header's end",
            ));
        };
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if rest.len() < length {
            return Err(ProxyHeaderError::Malformed(
                "v2 TLV value past the header's end",
            ));
        }
        let (value, after) = rest.split_at(length);
        if *kind == TLV_AWS
            && let [TLV_AWS_SUBTYPE_VPCE_ID, id @ ..] = value
            && !id.is_empty()
            && id.len() <= MAX_VPC_ENDPOINT_ID_BYTES
            && id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            vpc_endpoint_id = Some(String::from_utf8_lossy(id).into_owned());
        }
        tlvs = after;
    }
    Ok(vpc_endpoint_id)
}
