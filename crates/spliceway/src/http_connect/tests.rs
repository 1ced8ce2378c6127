use proptest::prelude::*;

use super::request::*;
use crate::address::UpstreamAddr;

fn complete(bytes: &[u8]) -> (ConnectTarget, usize) {
    match parse_request(bytes) {
        Ok(Parsed::Complete { target, length }) => (target, length),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn a_connect_request_gives_its_target_and_length() {
    let request = b"CONNECT bucket.s3.ap-northeast-1.amazonaws.com:443 HTTP/1.1\r\n\
                    Host: bucket.s3.ap-northeast-1.amazonaws.com:443\r\n\
                    User-Agent: aws-cli/2\r\n\r\n";
    let (target, length) = complete(request);
    assert_eq!(target.host, "bucket.s3.ap-northeast-1.amazonaws.com");
    assert_eq!(target.port, 443);
    assert_eq!(length, request.len());
    assert_eq!(
        target.to_string(),
        "bucket.s3.ap-northeast-1.amazonaws.com:443"
    );
}

#[test]
fn bytes_after_the_request_are_not_part_of_it() {
    let mut bytes = b"CONNECT Example.COM.:8443 HTTP/1.0\r\n\r\n".to_vec();
    let request_len = bytes.len();
    bytes.extend_from_slice(b"\x16\x03\x01\x02\x00early data");
    let (target, length) = complete(&bytes);
    assert_eq!(length, request_len);
    assert_eq!(target.host, "example.com");
    assert_eq!(target.port, 8443);
}

#[test]
fn ip_literal_targets() {
    let (v4, _) = complete(b"CONNECT 10.0.2.2:443 HTTP/1.1\r\n\r\n");
    assert_eq!(v4.upstream().to_string(), "10.0.2.2:443");
    let (v6, _) = complete(b"CONNECT [fd00::2]:443 HTTP/1.1\r\n\r\n");
    assert_eq!(v6.host, "fd00::2");
    assert_eq!(v6.to_string(), "[fd00::2]:443");
    assert_eq!(v6.upstream().to_string(), "[fd00::2]:443");
    let (name, _) = complete(b"CONNECT s3.amazonaws.com:443 HTTP/1.1\r\n\r\n");
    assert!(matches!(name.upstream(), UpstreamAddr::Name { .. }));
}

#[test]
fn every_prefix_of_a_request_is_incomplete() {
    let request = b"CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:443\r\n\r\n";
    for cut in 0..request.len() {
        assert_eq!(
            parse_request(&request[..cut]),
            Ok(Parsed::Incomplete),
            "{cut}"
        );
    }
}

#[test]
fn refusals_say_why() {
    for (bytes, says) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "method \"GET\""),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "no port"),
        (b"CONNECT example.com:0 HTTP/1.1\r\n\r\n", "1 to 65535"),
        (b"CONNECT example.com:+443 HTTP/1.1\r\n\r\n", "1 to 65535"),
        (b"CONNECT example.com:0443 HTTP/1.1\r\n\r\n", "1 to 65535"),
        (b"CONNECT example.com:65536 HTTP/1.1\r\n\r\n", "1 to 65535"),
        (b"CONNECT fd00::2:443 HTTP/1.1\r\n\r\n", "[address]:port"),
        (b"CONNECT [zz]:443 HTTP/1.1\r\n\r\n", "invalid IPv6"),
        (b"CONNECT ex ample.com:443 HTTP/1.1\r\n\r\n", "malformed"),
        (b"CONNECT a..b:443 HTTP/1.1\r\n\r\n", "empty label"),
        (
            b"CONNECT example.com:443 HTTP/2.0\r\n\r\n",
            "HTTP/1.0 or HTTP/1.1",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "malformed"),
    ] {
        let e = parse_request(bytes).unwrap_err().to_string();
        assert!(
            e.contains(says),
            "{:?}: {e}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn a_request_past_the_limit_is_too_long() {
    let mut bytes = b"CONNECT example.com:443 HTTP/1.1\r\n".to_vec();
    bytes.extend_from_slice(b"X-Padding: ");
    bytes.resize(MAX_REQUEST_BYTES, b'a');
    assert_eq!(parse_request(&bytes), Err(RequestError::TooLong));
    // Just under the limit, ended: accepted.
    let mut fits = b"CONNECT example.com:443 HTTP/1.1\r\nX-Padding: ".to_vec();
    fits.resize(MAX_REQUEST_BYTES - 4, b'a');
    fits.extend_from_slice(b"\r\n\r\n");
    assert_eq!(complete(&fits).1, MAX_REQUEST_BYTES);
    let mut many = b"CONNECT example.com:443 HTTP/1.1\r\n".to_vec();
    for _ in 0..MAX_HEADERS + 1 {
        many.extend_from_slice(b"A: b\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert!(
        parse_request(&many)
            .unwrap_err()
            .to_string()
            .contains("too many")
    );
}

proptest! {
    /// Never panics; a complete request is within the input and the limit, parses alone to the
    /// same answer (nothing past it was looked at), and every prefix of it is incomplete.
    #[test]
    fn any_bytes_give_an_answer_within_the_input(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Parsed::Complete { length, target }) = parse_request(&bytes) {
            prop_assert!(length <= bytes.len() && length <= MAX_REQUEST_BYTES);
            prop_assert_eq!(
                parse_request(&bytes[..length]),
                Ok(Parsed::Complete { target, length })
            );
        }
    }

    /// A request split anywhere, with anything after it, gives the same target and length.
    #[test]
    fn a_request_with_any_tail_parses_the_same(
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9]{0,10}){1,3}",
        port in 1u16..,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        cut in 0usize..200,
    ) {
        let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
        let mut bytes = request.clone().into_bytes();
        bytes.extend_from_slice(&tail);
        let cut = cut.min(request.len() - 1);
        prop_assert_eq!(parse_request(&bytes[..cut]), Ok(Parsed::Incomplete));
        prop_assert_eq!(
            parse_request(&bytes),
            Ok(Parsed::Complete {
                target: ConnectTarget { host, port },
                length: request.len(),
            })
        );
    }
}
