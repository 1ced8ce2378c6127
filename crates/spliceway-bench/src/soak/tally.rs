//! Counters shared by every load and server thread, and the first few problems in words.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use super::wire::describe_io;

/// How many problems are kept in words (all are counted).
const MAX_PROBLEMS: usize = 40;

/// Counts by name; a name never counted reads 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counts(pub(crate) BTreeMap<String, u64>);

impl Counts {
    pub(crate) fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn add(&mut self, key: &str, n: u64) {
        *self.0.entry(key.to_owned()).or_insert(0) += n;
    }

    pub(crate) fn with(mut self, key: &str, n: u64) -> Counts {
        self.add(key, n);
        self
    }
}

#[derive(Debug, Default)]
struct Inner {
    counts: Counts,
    problems: Vec<String>,
}

/// The soak's counters and problems.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    inner: Mutex<Inner>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, key: &str, n: u64) {
        self.lock().counts.add(key, n);
    }

    /// Counts a failure of kind `kind` and keeps its description for the report.
    pub(crate) fn problem(&self, kind: &str, text: &str) {
        let mut inner = self.lock();
        inner.counts.add(kind, 1);
        if inner.problems.len() < MAX_PROBLEMS {
            inner.problems.push(format!("{kind}: {text}"));
        }
    }

    /// One transfer compared end to end (SHA-256 or byte equality).
    pub(crate) fn hash_check(&self, what: &str, ok: bool, detail: &str) {
        self.add("hash_checked", 1);
        self.add(&format!("checked_{what}"), 1);
        if !ok {
            self.problem("hash_mismatch", &format!("{what} {detail}"));
        }
    }

    /// A planned reset observed by the other side: right only as ECONNRESET (or EPIPE for a
    /// peer that had already received end of stream).
    pub(crate) fn abort_seen(&self, what: &str, error: &io::Error, allow_epipe: bool) {
        self.add("abort_checked", 1);
        match error.kind() {
            io::ErrorKind::ConnectionReset => {}
            io::ErrorKind::BrokenPipe if allow_epipe => {}
            _ => self.problem("wrong_ending", &format!("{what}: {}", describe_io(error))),
        }
    }

    /// A planned reset that the other side saw as something else (a clean end, all data).
    pub(crate) fn abort_missed(&self, what: &str, how: &str) {
        self.add("abort_checked", 1);
        self.problem("wrong_ending", &format!("{what}: {how}"));
    }

    pub(crate) fn snapshot(&self) -> (Counts, Vec<String>) {
        let inner = self.lock();
        (inner.counts.clone(), inner.problems.clone())
    }
}
