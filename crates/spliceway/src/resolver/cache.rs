//! The answer cache: addresses until their TTL, failures until their negative TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::target::{Key, Target};

#[derive(Debug, Clone)]
pub(super) enum CacheEntry {
    Resolved {
        targets: Arc<[Target]>,
        expires: Instant,
    },
    Failed {
        error: String,
        expires: Instant,
    },
}

impl CacheEntry {
    pub(super) fn fresh(&self, now: Instant) -> Option<Result<Arc<[Target]>, String>> {
        match self {
            CacheEntry::Resolved { targets, expires } if *expires > now => {
                Some(Ok(Arc::clone(targets)))
            }
            CacheEntry::Failed { error, expires } if *expires > now => Some(Err(error.clone())),
            _ => None,
        }
    }

    pub(super) fn expires(&self) -> Instant {
        match self {
            CacheEntry::Resolved { expires, .. } | CacheEntry::Failed { expires, .. } => *expires,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Cache {
    pub(super) entries: HashMap<Key, CacheEntry>,
    /// Size at which expired entries are next dropped (doubles with the live entries, so
    /// purging costs O(1) per insert).
    pub(super) purge_at: usize,
}
