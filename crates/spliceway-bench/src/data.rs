//! The payload: pseudo-random bytes generated (and hashed) before any timing starts, and the
//! pre-faulted buffers the in-process sink reads into.

use sha2::{Digest as _, Sha256};

use crate::protocol::DIGEST_BYTES;

/// Seed of the payload generator: every run of every path sends the same bytes.
const PAYLOAD_SEED: u64 = 0x5EED_5B1C_E0A1_2024;

/// Memory page size used to touch every page of a fresh buffer.
const PAGE_BYTES: usize = 4096;

/// The bytes every upload sends, with their SHA-256.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: [u8; DIGEST_BYTES],
}

impl Payload {
    /// Generates `len` pseudo-random bytes (splitmix64; incompressible enough for a network
    /// path, fast to make) and hashes them.
    pub(crate) fn generate(len: usize) -> Payload {
        let mut bytes = vec![0u8; len];
        fill_pseudo_random(&mut bytes, PAYLOAD_SEED);
        let sha256 = sha256(&bytes);
        Payload { bytes, sha256 }
    }
}

/// Fills `out` with the splitmix64 sequence from `seed`.
pub(crate) fn fill_pseudo_random(out: &mut [u8], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut words = out.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&next().to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = next().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// SHA-256 of some bytes.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; DIGEST_BYTES] {
    Sha256::digest(bytes).into()
}

/// A zeroed buffer whose pages have all been touched, so reading into it does not fault.
pub(crate) fn prefaulted(len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    for page in buffer.chunks_mut(PAGE_BYTES) {
        page[0] = 1;
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_not_constant() {
        let mut a = vec![0u8; 1003];
        let mut b = vec![0u8; 1003];
        fill_pseudo_random(&mut a, 7);
        fill_pseudo_random(&mut b, 7);
        assert_eq!(a, b);
        assert!(a.windows(2).any(|w| w[0] != w[1]));
        fill_pseudo_random(&mut b, 8);
        assert_ne!(a, b);
    }

    #[test]
    fn payload_hash_matches_its_bytes() {
        let payload = Payload::generate(4096 + 5);
        assert_eq!(payload.bytes.len(), 4101);
        assert_eq!(payload.sha256, sha256(&payload.bytes));
    }

    #[test]
    fn prefaulted_buffer_has_the_right_length() {
        assert_eq!(prefaulted(10_000).len(), 10_000);
        assert!(prefaulted(0).is_empty());
    }
}
