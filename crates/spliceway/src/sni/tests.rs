use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// A real ClientHello: what `openssl s_client -connect 127.0.0.1:PORT -servername
/// Example.COM -alpn h2,http/1.1` (OpenSSL 3.0.19) sent, captured on loopback. One record
/// (`16 0301 014a`) holding one ClientHello (`01 000146`): version 0303, random, a 32-byte
/// session id, 31 cipher suites, null compression, then 0xbf bytes of extensions:
/// server_name (`0000 0010 000e 00 000b "Example.COM"`), ec_point_formats, supported_groups,
/// session_ticket, ALPN (`0010 000e 000c 02 "h2" 08 "http/1.1"`), encrypt_then_mac,
/// extended_master_secret, signature_algorithms, supported_versions, psk_key_exchange_modes
/// and key_share (X25519).
const OPENSSL_HELLO_HEX: &str = concat!(
    "160301014a010001460303840debd7a242f445d03379c158bbb1622f733c8bca",
    "ce8cb92488514726aaeb9a20300f72ea5bcd18e6a0466eeb376d37c840f6fa30",
    "fb02fbd5a61506cbcc925980003e130213031301c02cc030009fcca9cca8ccaa",
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
    "009c003d003c0035002f00ff010000bf00000010000e00000b4578616d706c65",
    "2e434f4d000b000403000102000a00160014001d0017001e0019001801000101",
    "010201030104002300000010000e000c02683208687474702f312e3100160000",
    "00170000000d002a0028040305030603080708080809080a080b080408050806",
    "040105010601030303010302040205020602002b000908030403030302030100",
    "2d00020101003300260024001d00208036903780c1420898e68dc2a73e530d03",
    "dde164e3c7711d4536a218bf52e44d",
);

fn openssl_hello() -> Vec<u8> {
    (0..OPENSSL_HELLO_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&OPENSSL_HELLO_HEX[i..i + 2], 16).unwrap())
        .collect()
}

// A tiny ClientHello builder, so that tests can vary names, extensions and record splits.

fn be16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend(be16(data.len()));
    out.extend(data);
    out
}

/// A `server_name` extension with the given (name type, name) entries.
fn server_name_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend(be16(name.len()));
        list.extend(*name);
    }
    let mut data = be16(list.len()).to_vec();
    data.extend(list);
    extension(EXTENSION_SERVER_NAME, &data)
}

fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for protocol in protocols {
        list.push(u8::try_from(protocol.len()).unwrap());
        list.extend(*protocol);
    }
    let mut data = be16(list.len()).to_vec();
    data.extend(list);
    extension(EXTENSION_ALPN, &data)
}

/// A ClientHello handshake message (header included); `None` leaves out the extensions
/// block entirely, as a TLS 1.0-1.2 client may.
fn hello_message(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([0x11; RANDOM_LEN]);
    body.push(32);
    body.extend([0x22; 32]);
    body.extend([0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    body.extend([1, 0]);
    if let Some(extensions) = extensions {
        let block = extensions.concat();
        body.extend(be16(block.len()));
        body.extend(block);
    }
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut message = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
    message.extend(body);
    message
}

/// Wraps `message` in handshake records, starting a new record at each offset in `cuts`
/// (strictly increasing, inside the message).
fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([message.len()].iter()) {
        out.extend([CONTENT_TYPE_HANDSHAKE, 3, 1]);
        out.extend(be16(end - start));
        out.extend(&message[start..end]);
        start = end;
    }
    out
}

/// A typical modern hello for `name`: SNI, supported_versions, ALPN.
fn named_message(name: &str) -> Vec<u8> {
    hello_message(Some(&[
        server_name_ext(&[(NAME_TYPE_HOST_NAME, name.as_bytes())]),
        extension(43, &[2, 3, 4]),
        alpn_ext(&[b"h2", b"http/1.1"]),
    ]))
}

fn complete(input: &[u8]) -> ClientHello {
    match parse_client_hello(input) {
        Ok(Peek::Complete(hello)) => hello,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

fn name_of(input: &[u8]) -> Option<String> {
    complete(input).server_name
}

fn error_of(input: &[u8]) -> SniError {
    match parse_client_hello(input) {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn sni_message(name: &[u8]) -> Vec<u8> {
    hello_message(Some(&[server_name_ext(&[(NAME_TYPE_HOST_NAME, name)])]))
}

/// Every proper prefix of `full` must be Incomplete, with a `needed` that is more than the
/// prefix and no more than the whole hello (it is a lower bound).
fn assert_prefixes_incomplete(full: &[u8]) {
    for n in 0..full.len() {
        match parse_client_hello(&full[..n]) {
            Ok(Peek::Incomplete { needed }) => assert!(
                needed > n && needed <= full.len(),
                "prefix {n} of {}: needed {needed}",
                full.len()
            ),
            other => panic!("prefix {n} of {}: {other:?}", full.len()),
        }
    }
}

#[test]
fn openssl_hello_parses() {
    let hello = complete(&openssl_hello());
    assert_eq!(hello.server_name.as_deref(), Some("example.com"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
}

#[test]
fn every_prefix_of_openssl_hello_is_incomplete() {
    assert_prefixes_incomplete(&openssl_hello());
}

#[test]
fn openssl_hello_split_across_two_and_three_records() {
    let message = &openssl_hello()[RECORD_HEADER_LEN..];
    for cuts in [
        &[100][..],
        &[1],
        &[3],
        &[4],
        &[message.len() - 1],
        &[2, 200],
        &[60, 61],
        &[1, 2],
    ] {
        let input = records(message, cuts);
        assert_eq!(name_of(&input).as_deref(), Some("example.com"), "{cuts:?}");
        assert_prefixes_incomplete(&input);
    }
}

#[test]
fn builder_hello_split_across_records() {
    let message = named_message("a.example.net");
    assert_eq!(
        name_of(&records(&message, &[10])).as_deref(),
        Some("a.example.net")
    );
    assert_eq!(
        name_of(&records(&message, &[2, 50])).as_deref(),
        Some("a.example.net")
    );
    let one_byte_records: Vec<usize> = (1..message.len()).collect();
    let input = records(&message, &one_byte_records);
    assert_eq!(complete(&input).alpn, ["h2", "http/1.1"]);
    assert_prefixes_incomplete(&input);
}

#[test]
fn incomplete_needed_values() {
    let needed = |input: &[u8]| match parse_client_hello(input) {
        Ok(Peek::Incomplete { needed }) => needed,
        other => panic!("{other:?}"),
    };
    // Record header and handshake header.
    assert_eq!(needed(b""), 9);
    assert_eq!(needed(&[0x16, 3, 1]), 9);
    // Once the handshake header is known: the whole single-record hello.
    let full = records(&sni_message(b"example.com"), &[]);
    assert_eq!(needed(&full[..9]), full.len());
    assert_eq!(needed(&full[..full.len() - 1]), full.len());
}

#[test]
fn no_server_name_extension() {
    let hello = complete(&records(
        &hello_message(Some(&[alpn_ext(&[b"http/1.1"])])),
        &[],
    ));
    assert_eq!(hello.server_name, None);
    assert_eq!(hello.alpn, ["http/1.1"]);
    // No extensions block at all, and an empty one.
    assert_eq!(name_of(&records(&hello_message(None), &[])), None);
    assert_eq!(name_of(&records(&hello_message(Some(&[])), &[])), None);
    // A server_name extension with only an unknown name type.
    let message = hello_message(Some(&[server_name_ext(&[(7, b"whatever")])]));
    assert_eq!(name_of(&records(&message, &[])), None);
}

#[test]
fn not_tls() {
    assert_eq!(error_of(b"GET / HTTP/1.1\r\n"), SniError::NotTls);
    assert_eq!(error_of(b"G"), SniError::NotTls);
    assert_eq!(error_of(b"SSH-2.0-OpenSSH_9.6\r\n"), SniError::NotTls);
    // SSLv2-compatible hello.
    assert_eq!(error_of(&[0x80, 0x2e, 0x01, 0x03, 0x01]), SniError::NotTls);
    // An alert record, and handshake records with implausible versions.
    assert_eq!(error_of(&[0x15, 3, 3, 0, 2, 2, 40]), SniError::NotTls);
    assert_eq!(error_of(&[0x16, 2]), SniError::NotTls);
    assert_eq!(error_of(&[0x16, 3, 5]), SniError::NotTls);
    assert_eq!(error_of(&[0x16, 0xfe, 0xfd]), SniError::NotTls);
}

#[test]
fn not_a_client_hello() {
    // A ServerHello (type 2), detected from its first byte.
    assert_eq!(error_of(&[0x16, 3, 3, 0, 60, 2]), SniError::NotClientHello);
    let mut message = sni_message(b"example.com");
    message[0] = 2;
    assert_eq!(error_of(&records(&message, &[])), SniError::NotClientHello);
}

#[test]
fn bad_record_lengths() {
    assert!(matches!(
        error_of(&[0x16, 3, 1, 0, 0]),
        SniError::Malformed(_)
    ));
    assert!(matches!(
        error_of(&[0x16, 3, 1, 0x40, 0x01, 1]),
        SniError::Malformed(_)
    ));
    // An empty continuation record.
    let message = sni_message(b"example.com");
    let mut input = records(&message[..20], &[]);
    input.extend([0x16, 3, 1, 0, 0]);
    assert!(matches!(error_of(&input), SniError::Malformed(_)));
}

#[test]
fn handshake_length_out_of_step_with_the_body() {
    let message = sni_message(b"example.com");
    // Handshake length one short: the extensions block then overruns the message.
    let mut short = message.clone();
    short[3] -= 1;
    assert!(matches!(
        error_of(&records(&short, &[])),
        SniError::Malformed(_)
    ));
    // One too long: the hello continues past its record, so more is needed ...
    let mut long = message.clone();
    long[3] += 1;
    let mut input = records(&long, &[]);
    assert_eq!(
        parse_client_hello(&input),
        Ok(Peek::Incomplete {
            needed: input.len() + RECORD_HEADER_LEN + 1
        })
    );
    // ... and what follows is an alert, not the rest of the handshake.
    input.extend([0x15, 3, 3, 0, 2, 2, 40]);
    assert!(matches!(error_of(&input), SniError::Malformed(_)));
}

#[test]
fn overlong_inner_lengths_are_malformed() {
    let name = b"example.com";
    let message = sni_message(name);
    // Offsets inside the message: 4 header, 2 version, 32 random, then the session id.
    let session_id_len = 4 + 2 + RANDOM_LEN;
    let suites_len = session_id_len + 1 + 32;
    let compression_len = suites_len + 2 + 6;
    let extensions_len = compression_len + 2;
    let sni_ext_len = extensions_len + 2 + 2;
    let sni_list_len = sni_ext_len + 2;
    let sni_name_len = sni_list_len + 2 + 1;
    let cases: &[(usize, i8)] = &[
        (session_id_len, 1),
        (session_id_len, -1),
        (suites_len + 1, 1),
        (suites_len + 1, -2),
        (compression_len, 1),
        (extensions_len + 1, 1),
        (extensions_len + 1, -1),
        (sni_ext_len + 1, 1),
        (sni_ext_len + 1, -1),
        (sni_list_len + 1, 1),
        (sni_list_len + 1, -1),
        (sni_name_len + 1, 1),
        (sni_name_len + 1, -1),
    ];
    for &(offset, delta) in cases {
        let mut bad = message.clone();
        bad[offset] = bad[offset].wrapping_add_signed(delta);
        let result = parse_client_hello(&records(&bad, &[]));
        assert!(
            matches!(result, Err(SniError::Malformed(_))),
            "offset {offset} {delta:+}: {result:?}"
        );
    }
}

#[test]
fn structural_rules() {
    let malformed = |message: &[u8]| {
        let result = parse_client_hello(&records(message, &[]));
        assert!(matches!(result, Err(SniError::Malformed(_))), "{result:?}");
    };
    let sni = server_name_ext(&[(NAME_TYPE_HOST_NAME, b"example.com")]);
    // Duplicate extensions, duplicate host names, empty lists.
    malformed(&hello_message(Some(&[sni.clone(), sni.clone()])));
    malformed(&hello_message(Some(&[
        extension(43, &[2, 3, 4]),
        extension(43, &[2, 3, 4]),
    ])));
    malformed(&hello_message(Some(&[server_name_ext(&[
        (NAME_TYPE_HOST_NAME, b"a.example"),
        (NAME_TYPE_HOST_NAME, b"b.example"),
    ])])));
    malformed(&hello_message(Some(&[server_name_ext(&[])])));
    malformed(&hello_message(Some(&[extension(
        EXTENSION_SERVER_NAME,
        &[],
    )])));
    malformed(&hello_message(Some(&[alpn_ext(&[])])));
    malformed(&hello_message(Some(&[alpn_ext(&[b""])])));
    // A client version that is not 3.x.
    let mut message = sni_message(b"example.com");
    message[4] = 4;
    malformed(&message);
}

#[test]
fn host_name_validation() {
    let parse = |name: &[u8]| parse_client_hello(&records(&sni_message(name), &[]));
    let is_malformed = |name: &[u8]| matches!(parse(name), Err(SniError::Malformed(_)));
    let name = |name: &[u8]| name_of(&records(&sni_message(name), &[]));

    assert_eq!(name(b"Example.COM").as_deref(), Some("example.com"));
    assert_eq!(name(b"example.com.").as_deref(), Some("example.com"));
    assert_eq!(
        name(b"_acme.my-host1.example").as_deref(),
        Some("_acme.my-host1.example")
    );
    assert_eq!(name(b"localhost").as_deref(), Some("localhost"));
    assert_eq!(name(b"1.2.3.example").as_deref(), Some("1.2.3.example"));
    let label = "a".repeat(63);
    let longest = [&label[..], &label, &label, &label[..61]].join(".");
    assert_eq!(longest.len(), 253);
    assert_eq!(name(longest.as_bytes()), Some(longest.clone()));
    assert_eq!(
        name(format!("{longest}.").as_bytes()),
        Some(longest.clone())
    );

    for bad in [
        &b""[..],
        b".",
        b"..",
        b"a..b",
        b".example.com",
        b"example.com..",
        b"exa mple.com",
        b"exa*mple.com",
        b"example.com:443",
        b"caf\xc3\xa9.example",
        b"nul\0.example",
        b"192.0.2.1",
        b"192.0.2.1.",
        b"127.1",
        b"0x7f000001",
        b"example.0x7F",
        b"::1",
        b"[::1]",
        b"2001:db8::1",
    ] {
        assert!(is_malformed(bad), "{:?}", String::from_utf8_lossy(bad));
    }
    assert!(is_malformed(format!("{longest}a").as_bytes()));
    assert!(is_malformed(
        format!("{}.example", "a".repeat(64)).as_bytes()
    ));
}

#[test]
fn alpn_skips_non_utf8_protocols() {
    let message = hello_message(Some(&[alpn_ext(&[b"\xfa\xfa", b"h2"])]));
    assert_eq!(complete(&records(&message, &[])).alpn, ["h2"]);
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    // A change_cipher_spec record after the hello (TLS 1.3 middlebox compatibility mode).
    let mut input = openssl_hello();
    input.extend([0x14, 3, 3, 0, 1, 1]);
    assert_eq!(name_of(&input).as_deref(), Some("example.com"));
    // Extra bytes inside the hello's last record: complete as soon as the hello is there.
    let message = sni_message(b"example.com");
    let mut input = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
    input.extend(be16(message.len() + 10));
    input.extend(&message);
    assert_eq!(name_of(&input).as_deref(), Some("example.com"));
}

#[test]
fn too_large() {
    // A handshake length that cannot fit in one maximal record.
    assert_eq!(
        error_of(&[0x16, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfd]),
        SniError::TooLarge
    );
    // One that just fits is waited for.
    assert_eq!(
        parse_client_hello(&[0x16, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfc]),
        Ok(Peek::Incomplete {
            needed: MAX_CLIENT_HELLO_BYTES
        })
    );
    // The same split over two records needs 5 more bytes than the relay peeks.
    assert_eq!(
        error_of(&[0x16, 3, 1, 0, 100, 1, 0, 0x3f, 0xfc]),
        SniError::TooLarge
    );
    assert_eq!(
        error_of(&[0x16, 3, 1, 0, 100, 1, 0xff, 0xff, 0xff]),
        SniError::TooLarge
    );
}

#[test]
fn name_patterns() {
    let table: &[(&str, &str, bool)] = &[
        ("example.com", "example.com", true),
        ("example.com", "EXAMPLE.com", true),
        ("example.com", "example.com.", true),
        ("Example.COM.", "example.com", true),
        ("example.com", "www.example.com", false),
        ("example.com", "example.co", false),
        ("example.com", "example.com..", false),
        ("example.com", "xexample.com", false),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "bucket.s3.ap-northeast-1.amazonaws.com",
            true,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "a.b.s3.ap-northeast-1.amazonaws.com",
            true,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "Bucket.S3.AP-Northeast-1.amazonaws.com.",
            true,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "s3.ap-northeast-1.amazonaws.com",
            false,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            ".s3.ap-northeast-1.amazonaws.com",
            false,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "a..s3.ap-northeast-1.amazonaws.com",
            false,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "bucket-s3.ap-northeast-1.amazonaws.com",
            false,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "bucket.xs3.ap-northeast-1.amazonaws.com",
            false,
        ),
        (
            "*.s3.ap-northeast-1.amazonaws.com",
            "bucket.s3.ap-northeast-1.amazonaws.com.evil",
            false,
        ),
        ("*.example.com", "", false),
        ("*.example.com", ".", false),
        ("*.example.com", "é.example.com", false),
        ("*.example.com", "*.example.com", false),
        ("*.example.com", "a b.example.com", false),
        ("*.example.com", "x_1.y-2.example.com", true),
        ("example.com", "", false),
    ];
    for &(pattern, name, expected) in table {
        let parsed = NamePattern::parse(pattern).unwrap();
        assert_eq!(parsed.matches(name), expected, "{pattern} vs {name:?}");
    }
}

#[test]
fn name_pattern_parsing() {
    for bad in [
        "",
        "*",
        "*.",
        ".",
        "**.example.com",
        "*example.com",
        "f*.example.com",
        "a.*.example.com",
        "example.*",
        "*.*.example.com",
        "exa mple.com",
        "example.com:443",
        "a..b",
        "192.0.2.1",
        "*.10",
        "café.example",
        " example.com",
    ] {
        assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
    }
    for (pattern, shown, wildcard) in [
        ("example.com", "example.com", false),
        ("Example.COM.", "example.com", false),
        ("*.S3.Example.com", "*.s3.example.com", true),
        ("*.com", "*.com", true),
        ("_srv.example", "_srv.example", false),
    ] {
        let parsed: NamePattern = pattern.parse().unwrap();
        assert_eq!(parsed.to_string(), shown);
        assert_eq!(parsed.is_wildcard(), wildcard);
        assert_eq!(NamePattern::parse(shown).unwrap(), parsed);
    }
}

/// Host names the builder can put in a hello: up to 5 labels, the last not numeric.
fn host_name() -> impl Strategy<Value = String> {
    (
        vec("[a-zA-Z0-9_-]{1,20}", 0..5),
        "[a-zA-Z][a-zA-Z0-9-]{0,10}",
    )
        .prop_map(|(mut labels, last)| {
            labels.push(last);
            labels.join(".")
        })
}

/// Distinct, sorted cut offsets inside a message of `len` bytes.
fn cut_points(picks: &[Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|pick| 1 + pick.index(len - 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// What the fuzz target checks: a complete hello's name is valid.
fn check_invariants(input: &[u8]) {
    if let Ok(Peek::Complete(hello)) = parse_client_hello(input)
        && let Some(name) = hello.server_name
    {
        assert!(!name.is_empty() && name.len() <= MAX_HOST_NAME_LEN);
        assert!(name.is_ascii());
        assert_eq!(name, name.to_ascii_lowercase());
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        check_invariants(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_valid_headers_never_panic(
        record_len in 0u16..600,
        body_len in 0u32..600,
        bytes in vec(any::<u8>(), 0..600),
    ) {
        let mut input = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
        input.extend(record_len.to_be_bytes());
        input.push(HANDSHAKE_CLIENT_HELLO);
        input.extend(&body_len.to_be_bytes()[1..]);
        input.extend(bytes);
        check_invariants(&input);
    }

    #[test]
    fn mutated_hellos_never_panic(
        name in host_name(),
        edits in vec((any::<Index>(), any::<u8>()), 1..6),
    ) {
        let mut input = records(&named_message(&name), &[]);
        for (at, byte) in edits {
            let at = at.index(input.len());
            input[at] = byte;
        }
        check_invariants(&input);
    }

    #[test]
    fn built_names_round_trip(name in host_name()) {
        let hello = complete(&records(&named_message(&name), &[]));
        prop_assert_eq!(hello.server_name, Some(name.to_ascii_lowercase()));
        prop_assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn random_record_splits_parse(name in host_name(), picks in vec(any::<Index>(), 0..6)) {
        let message = named_message(&name);
        let input = records(&message, &cut_points(&picks, message.len()));
        prop_assert_eq!(name_of(&input), Some(name.to_ascii_lowercase()));
        assert_prefixes_incomplete(&input);
    }
}
