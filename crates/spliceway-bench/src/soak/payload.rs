//! The block every payload is a slice of, so both ends know what a transfer's hash must be.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::{fill_pseudo_random, sha256};
use crate::protocol::hex;

pub(crate) const KIB: usize = 1 << 10;
pub(crate) const MIB: usize = 1 << 20;

/// Size of the block (every offset and length of the load stays inside it).
pub(crate) const DATA_SIZE: usize = 64 * MIB;

/// Digests kept before the cache is emptied (offsets and sizes repeat; memory stays bounded).
const MAX_CACHED_DIGESTS: usize = 4096;

/// Pseudo-random bytes and a cache of the SHA-256 of their slices.
#[derive(Debug)]
pub(crate) struct Block {
    bytes: Vec<u8>,
    digests: Mutex<HashMap<(usize, usize), String>>,
}

impl Block {
    pub(crate) fn generate(seed: u64) -> Block {
        let mut bytes = vec![0u8; DATA_SIZE];
        fill_pseudo_random(&mut bytes, seed);
        Block {
            bytes,
            digests: Mutex::default(),
        }
    }

    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        &self.bytes[offset..offset + len]
    }

    /// SHA-256 of `slice(offset, len)` as lowercase hex.
    pub(crate) fn digest(&self, offset: usize, len: usize) -> String {
        let lock = || self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = lock().get(&(offset, len)) {
            return hit.clone();
        }
        let digest = hex(&sha256(self.slice(offset, len)));
        let mut cache = lock();
        if cache.len() >= MAX_CACHED_DIGESTS {
            cache.clear();
        }
        cache.insert((offset, len), digest.clone());
        digest
    }
}

/// SOAK_CORRUPT=1: flips one byte of the first downloaded chunk (after it was received), to
/// show that the hash check fails when data is damaged. Never set otherwise.
#[derive(Debug, Default)]
pub(crate) struct Corruptor {
    armed: AtomicBool,
}

impl Corruptor {
    pub(crate) fn new(armed: bool) -> Corruptor {
        Corruptor {
            armed: AtomicBool::new(armed),
        }
    }

    pub(crate) fn apply(&self, chunk: &mut [u8]) {
        if !chunk.is_empty() && self.armed.swap(false, Ordering::SeqCst) {
            chunk[0] ^= 0x01;
        }
    }
}
