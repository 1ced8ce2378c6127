//! Fuzzes the HTTP CONNECT request parser, which reads the first bytes of every connection on
//! an `upstream = "http-connect"` route, from any client the route admits.
//!
//! Beyond "never panics", it checks what the relay relies on: a complete request is no longer
//! than the input nor the 8 KiB limit, parsing just its bytes gives the same answer (nothing
//! past its end was looked at, so early data stays the client's), every prefix of it is
//! `Incomplete`, and `Incomplete` never comes past the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spliceway::internal::http_connect::{MAX_REQUEST_BYTES, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Parsed::Complete { target, length }) => {
            assert!(length <= data.len() && length <= MAX_REQUEST_BYTES);
            assert_eq!(
                parse_request(&data[..length]),
                Ok(Parsed::Complete {
                    target: target.clone(),
                    length
                }),
                "looked past the end"
            );
            for cut in 0..length {
                assert_eq!(
                    parse_request(&data[..cut]),
                    Ok(Parsed::Incomplete),
                    "prefix {cut}"
                );
            }
            assert!(target.port > 0);
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_REQUEST_BYTES),
        Err(_) => {}
    }
});
