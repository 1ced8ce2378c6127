//! Writing the PROXY protocol header the relay sends its upstream.

use std::net::{IpAddr, SocketAddr};

use super::header::{V2_COMMAND_PROXY, V2_SIGNATURE, V2_TCP4, V2_TCP6, V2_VERSION, Version};

/// Appends to `out` a PROXY protocol header of `version` saying that the connection comes from
/// `source` and was made to `destination`. When one is IPv4 and the other IPv6, both are
/// written as IPv6 (the IPv4 one as an IPv4-mapped address), since a header has one family.
///
/// ```
/// use spliceway::internal::proxy_protocol::encode;
/// use spliceway::proxy_protocol::Version;
///
/// let mut out = Vec::new();
/// encode(Version::V1, "192.0.2.7:51000".parse().unwrap(), "198.51.100.1:443".parse().unwrap(), &mut out);
/// assert_eq!(out, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n");
/// ```
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (source_ip, destination_ip) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    match version {
        Version::V1 => {
            let protocol = if source_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {protocol} {source_ip} {destination_ip} {} {}\r\n",
                source.port(),
                destination.port()
            );
            out.extend_from_slice(line.as_bytes());
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(V2_VERSION | V2_COMMAND_PROXY);
            match (source_ip, destination_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(V2_TCP4);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(V2_TCP6);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
