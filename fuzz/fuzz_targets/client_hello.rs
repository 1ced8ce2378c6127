//! Fuzzes the TLS ClientHello / SNI parser, which reads bytes straight from untrusted clients,
//! and the server name patterns it is matched against.
//!
//! Beyond "never panics", it checks the promises the relay relies on: a parsed name is a
//! non-empty, lower-case ASCII host name of at most 253 bytes, and `Incomplete` always asks
//! for more bytes than it was given, within the peek limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spliceway::internal::sni::{MAX_CLIENT_HELLO_BYTES, Peek, parse_client_hello};
use spliceway::sni::NamePattern;

fuzz_target!(|data: &[u8]| {
    match parse_client_hello(data) {
        Ok(Peek::Complete(hello)) => {
            if let Some(name) = &hello.server_name {
                assert!(!name.is_empty(), "empty server name");
                assert!(name.len() <= 253, "server name longer than 253 bytes");
                assert!(name.is_ascii(), "non-ASCII server name");
                assert_eq!(
                    *name,
                    name.to_ascii_lowercase(),
                    "server name not lower-cased"
                );
                let exact = NamePattern::parse(name).expect("a parsed name is a valid pattern");
                assert!(exact.matches(name), "a name does not match itself");
            }
        }
        Ok(Peek::Incomplete { needed }) => {
            assert!(needed > data.len(), "Incomplete asks for no more bytes");
            assert!(
                needed <= MAX_CLIENT_HELLO_BYTES,
                "Incomplete asks past the peek limit"
            );
        }
        Err(_) => {}
    }

    // The same bytes as a configured pattern and as a name to match.
    let text = String::from_utf8_lossy(data);
    if let Ok(pattern) = NamePattern::parse(&text) {
        let shown = pattern.to_string();
        assert_eq!(
            NamePattern::parse(&shown).as_ref(),
            Ok(&pattern),
            "Display does not round-trip"
        );
        let _ = pattern.matches(&text);
        if !pattern.is_wildcard() {
            assert!(
                pattern.matches(&text),
                "an exact pattern does not match its own text"
            );
        }
    }
    if let Ok(pattern) = NamePattern::parse("*.s3.ap-northeast-1.amazonaws.com") {
        let _ = pattern.matches(&text);
    }
});
