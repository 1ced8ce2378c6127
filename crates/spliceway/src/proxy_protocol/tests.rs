use std::net::SocketAddr;

use proptest::prelude::*;

use super::header::{TLV_AWS, TLV_AWS_SUBTYPE_VPCE_ID};
use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn complete(bytes: &[u8], accept: Accept) -> ProxyHeader {
    match parse(bytes, accept) {
        Ok(Parsed::Complete(header)) => header,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

/// A v2 header with the given version/command, family and block (length from the block).
fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

fn tcp4_block(tlvs: &[u8]) -> Vec<u8> {
    let mut block = vec![192, 0, 2, 7, 198, 51, 100, 1];
    block.extend_from_slice(&51000u16.to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    block.extend_from_slice(tlvs);
    block
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Valid headers of every kind the relay accepts.
fn valid_headers() -> Vec<Vec<u8>> {
    let mut aws = vec![TLV_AWS_SUBTYPE_VPCE_ID];
    aws.extend_from_slice(b"vpce-08d2bf15fac5001c9");
    let mut tlvs = tlv(0x04, b"\0\0\0"); // NOOP
    tlvs.extend(tlv(TLV_AWS, &aws));
    tlvs.extend(tlv(0x01, b"h2")); // ALPN
    let mut tcp6 = Vec::new();
    tcp6.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    tcp6.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    tcp6.extend_from_slice(&[0xC7, 0x38, 0x01, 0xBB]);
    vec![
        b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
        v2(0x21, 0x11, &tcp4_block(&[])),
        v2(0x21, 0x11, &tcp4_block(&tlvs)),
        v2(0x21, 0x21, &tcp6),
        v2(0x20, 0x00, &[]),                // LOCAL, as an NLB health check sends
        v2(0x20, 0x11, &tcp4_block(&tlvs)), // LOCAL with addresses: ignored
        v2(0x21, 0x00, &[]),                // PROXY, unspecified family
    ]
}

#[test]
fn v1_gives_the_client_and_the_address_it_connected_to() {
    let header = complete(
        b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\nGET / HTTP/1.1\r\n",
        Accept::V1,
    );
    assert_eq!(header.version, Version::V1);
    assert_eq!(header.length, 45);
    assert_eq!(
        header.addresses,
        Some((addr("192.0.2.7:51000"), addr("198.51.100.1:443")))
    );
    let header = complete(b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n", Accept::Any);
    assert_eq!(
        header.addresses,
        Some((addr("[2001:db8::7]:1"), addr("[::1]:65535")))
    );
    let header = complete(b"PROXY UNKNOWN\r\n\x16\x03", Accept::Any);
    assert_eq!((header.length, header.addresses), (15, None));
}

#[test]
fn v2_gives_addresses_and_the_vpc_endpoint_id_and_skips_other_tlvs() {
    let headers = valid_headers();
    let with_tlvs = &headers[5];
    let mut bytes = with_tlvs.clone();
    bytes.extend_from_slice(b"payload");
    let header = complete(&bytes, Accept::V2);
    assert_eq!(header.length, with_tlvs.len());
    assert_eq!(
        header.addresses,
        Some((addr("192.0.2.7:51000"), addr("198.51.100.1:443")))
    );
    assert_eq!(
        header.vpc_endpoint_id.as_deref(),
        Some("vpce-08d2bf15fac5001c9")
    );
    let header = complete(&headers[6], Accept::Any);
    assert_eq!(
        header.addresses,
        Some((addr("[2001:db8::7]:51000"), addr("[2001:db8::1]:443")))
    );
}

#[test]
fn local_unknown_and_unspecified_carry_no_address() {
    let headers = valid_headers();
    for bytes in [
        &headers[2],
        &headers[3],
        &headers[7],
        &headers[8],
        &headers[9],
    ] {
        let header = complete(bytes, Accept::Any);
        assert_eq!(header.addresses, None, "{bytes:?}");
        assert_eq!(header.length, bytes.len());
    }
}

#[test]
fn every_truncation_point_is_incomplete_and_the_whole_is_complete() {
    for header in valid_headers() {
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut], Accept::Any),
                Ok(Parsed::Incomplete),
                "{header:?} cut at {cut}"
            );
        }
        let mut with_payload = header.clone();
        with_payload.extend_from_slice(&[0x16, 0x03, 0x01, b'\n', b'\r']);
        assert_eq!(complete(&with_payload, Accept::Any).length, header.len());
    }
}

#[test]
fn a_route_refuses_the_version_it_does_not_take() {
    let headers = valid_headers();
    assert_eq!(
        parse(&headers[0], Accept::V2),
        Err(ProxyHeaderError::Version)
    );
    assert_eq!(
        parse(&headers[4], Accept::V1),
        Err(ProxyHeaderError::Version)
    );
    // On the first byte already.
    assert_eq!(parse(b"P", Accept::V2), Err(ProxyHeaderError::Version));
    assert_eq!(parse(b"\r", Accept::V1), Err(ProxyHeaderError::Version));
}

#[test]
fn no_header_is_refused_on_the_first_byte_that_cannot_be_one() {
    for bytes in [
        &b"\x16\x03\x01\x02\x00"[..],
        b"GET / HTTP/1.1\r\n",
        b"PROXZ",
        b"\r\n\r\n\0\r\nQUIX",
        b"proxy TCP4",
    ] {
        assert_eq!(
            parse(bytes, Accept::Any),
            Err(ProxyHeaderError::Signature),
            "{bytes:?}"
        );
    }
}

#[test]
fn every_malformed_field_is_named() {
    use ProxyHeaderError::{Malformed, TooLong, Unsupported};
    let kind = |e: &ProxyHeaderError| std::mem::discriminant(e);
    let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7  198.51.100.1 51000 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443 9\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.300 198.51.100.1 51000 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 2001:db8::7 198.51.100.1 51000 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP6 192.0.2.7 2001:db8::1 51000 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 051000 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +80 443\r\n".to_vec(),
            Malformed(""),
        ),
        (
            b"PROXY  TCP4 192.0.2.7 198.51.100.1 1 2\r\n".to_vec(),
            Malformed(""),
        ),
        (b"PROXY \r\n".to_vec(), Malformed("")),
        (
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n".to_vec(),
            Unsupported(""),
        ),
        ([&b"PROXY UNKNOWN "[..], &[b'x'; 100]].concat(), TooLong),
        (v2(0x11, 0x11, &tcp4_block(&[])), Unsupported("")), // version 1 in binary
        (v2(0x22, 0x11, &tcp4_block(&[])), Unsupported("")), // command 2
        (v2(0x21, 0x12, &tcp4_block(&[])), Unsupported("")), // UDP
        (v2(0x21, 0x31, &[0; 216]), Unsupported("")),        // UNIX
        (v2(0x21, 0x10, &tcp4_block(&[])), Unsupported("")), // no transport
        (v2(0x21, 0x41, &tcp4_block(&[])), Malformed("")),   // family 4
        (v2(0x21, 0x13, &tcp4_block(&[])), Malformed("")),   // transport 3
        (v2(0x21, 0x11, &[0; 11]), Malformed("")),           // too short for IPv4
        (v2(0x21, 0x21, &[0; 35]), Malformed("")),           // too short for IPv6
        (v2(0x21, 0x11, &tcp4_block(&[0xEA, 0])), Malformed("")), // TLV header cut
        (
            v2(0x21, 0x11, &tcp4_block(&[0x01, 0, 5, b'h'])),
            Malformed(""),
        ), // TLV value cut
        (v2(0x21, 0x11, &vec![0; MAX_V2_HEADER_BYTES - 15]), TooLong),
    ];
    for (bytes, expected) in cases {
        let got = parse(&bytes, Accept::Any);
        match &got {
            Err(e) if kind(e) == kind(&expected) => {}
            _ => panic!(
                "{:?}: expected {expected:?}, got {got:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}

#[test]
fn a_v2_length_over_the_limit_is_refused_before_the_header_arrives() {
    let mut fixed = V2_SIGNATURE.to_vec();
    fixed.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
    assert_eq!(parse(&fixed, Accept::Any), Err(ProxyHeaderError::TooLong));
    // The largest allowed is waited for.
    let stated = (MAX_V2_HEADER_BYTES - 16) as u16;
    fixed.truncate(14);
    fixed.extend_from_slice(&stated.to_be_bytes());
    fixed.extend_from_slice(&[0; 12]);
    assert_eq!(parse(&fixed, Accept::Any), Ok(Parsed::Incomplete));
}

#[test]
fn a_malformed_vpc_endpoint_id_is_not_kept() {
    for id in [&b""[..], b"vpce-1\n", &[b'a'; 65]] {
        let value = [&[TLV_AWS_SUBTYPE_VPCE_ID][..], id].concat();
        let header = complete(
            &v2(0x21, 0x11, &tcp4_block(&tlv(TLV_AWS, &value))),
            Accept::Any,
        );
        assert_eq!(header.vpc_endpoint_id, None, "{id:?}");
    }
}

#[test]
fn every_reason_has_its_label() {
    let errors = [
        ProxyHeaderError::Signature,
        ProxyHeaderError::Version,
        ProxyHeaderError::Truncated,
        ProxyHeaderError::Timeout,
        ProxyHeaderError::TooLong,
        ProxyHeaderError::Unsupported("x"),
        ProxyHeaderError::Malformed("x"),
    ];
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert_eq!(e.reason(), ProxyHeaderError::REASONS[i]);
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    #[test]
    fn what_is_encoded_parses_back_and_the_payload_is_left(
        source in socket_addr(),
        destination in socket_addr(),
        v1 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let version = if v1 { Version::V1 } else { Version::V2 };
        let mut bytes = Vec::new();
        encode(version, source, destination, &mut bytes);
        let header_len = bytes.len();
        prop_assert!(header_len <= MAX_V1_HEADER_BYTES.max(16 + 36));
        for cut in 0..header_len {
            prop_assert_eq!(parse(&bytes[..cut], Accept::Any), Ok(Parsed::Incomplete));
        }
        bytes.extend_from_slice(&payload);
        let header = complete(&bytes, Accept::Any);
        prop_assert_eq!(header.length, header_len);
        prop_assert_eq!(header.version, version);
        let (s, d) = header.addresses.unwrap();
        let mixed = source.is_ipv4() != destination.is_ipv4();
        let unmap = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V6(v6) if mixed => match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), a.port()),
                None => a,
            },
            _ => a,
        };
        prop_assert_eq!((unmap(s), unmap(d)), (unmap(source), unmap(destination)));
        if !mixed {
            prop_assert_eq!((s, d), (source, destination));
        }
    }

    #[test]
    fn any_bytes_give_an_answer_within_the_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        v2_prefix in any::<bool>(),
    ) {
        let mut input = if v2_prefix { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
        input.extend_from_slice(&bytes);
        for accept in [Accept::V1, Accept::V2, Accept::Any] {
            match parse(&input, accept) {
                Ok(Parsed::Complete(header)) => {
                    prop_assert!(header.length <= input.len());
                    prop_assert!(header.length <= MAX_V2_HEADER_BYTES);
                    // The same header parses alone, to the same answer: nothing past its
                    // end was looked at.
                    prop_assert_eq!(
                        parse(&input[..header.length], accept),
                        Ok(Parsed::Complete(header))
                    );
                }
                Ok(Parsed::Incomplete) => {
                    prop_assert!(input.len() < MAX_V2_HEADER_BYTES);
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn one_changed_byte_never_panics_and_never_reads_past_the_header(
        which in 0usize..10,
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = valid_headers()[which].clone();
        let i = at.index(bytes.len());
        bytes[i] = value;
        if let Ok(Parsed::Complete(header)) = parse(&bytes, Accept::Any) {
            prop_assert!(header.length <= bytes.len());
        }
    }
}
