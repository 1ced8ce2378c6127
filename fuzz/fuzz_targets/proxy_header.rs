//! Fuzzes the PROXY protocol header parser, which reads the first bytes of every connection on
//! a route behind a load balancer, before anything else is known about the client.
//!
//! Beyond "never panics", it checks the promises the relay relies on: a complete header is no
//! longer than the input nor the limits, parsing just its bytes gives the same answer (nothing
//! past its end was looked at), every prefix of it is `Incomplete` or the same error, and an
//! address-carrying header encodes and parses back to the same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spliceway::internal::proxy_protocol::{
    MAX_V1_HEADER_BYTES, MAX_V2_HEADER_BYTES, Parsed, encode, parse,
};
use spliceway::proxy_protocol::{Accept, Version};

fuzz_target!(|data: &[u8]| {
    for accept in [Accept::V1, Accept::V2, Accept::Any] {
        match parse(data, accept) {
            Ok(Parsed::Complete(header)) => {
                assert!(header.length <= data.len(), "header past the input");
                let limit = match header.version {
                    Version::V1 => MAX_V1_HEADER_BYTES,
                    Version::V2 => MAX_V2_HEADER_BYTES,
                };
                assert!(header.length <= limit, "header past its limit");
                let alone = parse(&data[..header.length], accept);
                assert_eq!(alone, Ok(Parsed::Complete(header.clone())), "looked past the end");
                for cut in 0..header.length {
                    match parse(&data[..cut], accept) {
                        Ok(Parsed::Incomplete) => {}
                        other => panic!("prefix of {cut} bytes gave {other:?}"),
                    }
                }
                if let Some((source, destination)) = header.addresses {
                    let mut out = Vec::new();
                    encode(header.version, source, destination, &mut out);
                    match parse(&out, Accept::Any) {
                        Ok(Parsed::Complete(back)) => {
                            assert_eq!(back.addresses, Some((source, destination)));
                            assert_eq!(back.length, out.len());
                        }
                        other => panic!("encoded header gave {other:?}"),
                    }
                }
            }
            Ok(Parsed::Incomplete) => {
                assert!(data.len() < MAX_V2_HEADER_BYTES, "Incomplete past the limit");
            }
            Err(_) => {}
        }
    }
});
