//! How connections ended, compared with how their [`Kind`] says they must end, and the hashes
//! of active transfers; kept by each end (clients, upstream) and compared at the end of a run.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::protocol::Kind;

/// How one end saw its connection finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// End of stream (a FIN), or this end closed first as planned.
    Clean,
    /// A reset (`ECONNRESET`, `EPIPE`).
    Reset,
}

impl Seen {
    /// Classifies an I/O error that ended a connection.
    pub fn from_error(error: &io::Error) -> Option<Seen> {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Some(Seen::Reset),
            _ => None,
        }
    }
}

/// The SHA-256 of what one end sent and received on an active connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hashes {
    /// Hash of the bytes written.
    pub sent: String,
    /// Hash of the bytes read.
    pub received: String,
    /// Bytes read.
    pub received_len: u64,
}

/// Endings by kind, and hashes by connection id.
#[derive(Debug, Default)]
pub struct Endings {
    /// `(as expected, otherwise)` per kind.
    pub by_kind: BTreeMap<Kind, (u64, u64)>,
    /// Connections that ended before a header was complete (readiness probes).
    pub headerless: u64,
    /// Connections that failed before being established (connect errors, timeouts).
    pub failed: u64,
    /// The first few unexpected endings, described.
    pub notes: Vec<String>,
    /// Hashes of active connections, by id.
    pub hashes: HashMap<u64, Hashes>,
}

impl Endings {
    /// Records one ending.
    pub fn record(&mut self, kind: Kind, expected: bool, note: impl FnOnce() -> String) {
        let entry = self.by_kind.entry(kind).or_default();
        if expected {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            if self.notes.len() < 10 {
                self.notes.push(note());
            }
        }
    }

    /// Records a connection that never got going.
    pub fn fail(&mut self, note: String) {
        self.failed += 1;
        if self.notes.len() < 10 {
            self.notes.push(note);
        }
    }

    /// Endings that were not as planned, of every kind, plus failures.
    pub fn unexpected(&self) -> u64 {
        self.by_kind.values().map(|(_, bad)| bad).sum::<u64>() + self.failed
    }

    /// Endings as planned.
    pub fn expected(&self) -> u64 {
        self.by_kind.values().map(|(good, _)| good).sum()
    }

    /// Moves everything out, leaving this empty.
    pub fn take(&mut self) -> Endings {
        std::mem::take(self)
    }
}

/// Compares both ends' hashes of `ids`: every connection must have been seen by both ends,
/// with what one sent equal to what the other received, `len` bytes each way. Returns the
/// number of connections intact and a description of the first failure.
pub fn check_hashes(
    ids: impl Iterator<Item = u64>,
    client: &HashMap<u64, Hashes>,
    upstream: &HashMap<u64, Hashes>,
    len: u64,
) -> (u64, Option<String>) {
    let mut intact = 0;
    let mut first_failure = None;
    for id in ids {
        let verdict = match (client.get(&id), upstream.get(&id)) {
            (Some(c), Some(u)) => {
                if c.received_len != len || u.received_len != len {
                    Err(format!(
                        "connection {id}: {} bytes down, {} bytes up, expected {len}",
                        c.received_len, u.received_len
                    ))
                } else if c.sent != u.received {
                    Err(format!("connection {id}: upload hash differs"))
                } else if u.sent != c.received {
                    Err(format!("connection {id}: download hash differs"))
                } else {
                    Ok(())
                }
            }
            (None, _) => Err(format!("connection {id}: the client has no hashes")),
            (_, None) => Err(format!("connection {id}: the upstream has no hashes")),
        };
        match verdict {
            Ok(()) => intact += 1,
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    (intact, first_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(sent: &str, received: &str, len: u64) -> Hashes {
        Hashes {
            sent: sent.into(),
            received: received.into(),
            received_len: len,
        }
    }

    #[test]
    fn hashes_must_cross_match_at_full_length() {
        let client = HashMap::from([
            (1, hashes("up1", "down1", 10)),
            (2, hashes("up2", "down2", 10)),
            (3, hashes("up3", "down3", 10)),
        ]);
        let upstream = HashMap::from([
            (1, hashes("down1", "up1", 10)),
            (2, hashes("down2", "CORRUPT", 10)),
            (3, hashes("down3", "up3", 9)),
        ]);
        let (intact, first) = check_hashes(1..=4, &client, &upstream, 10);
        assert_eq!(intact, 1);
        assert!(first.unwrap().contains("connection 2: upload hash differs"));
        let (intact, first) = check_hashes(4..=4, &client, &upstream, 10);
        assert_eq!(intact, 0);
        assert!(first.unwrap().contains("client has no hashes"));
    }

    #[test]
    fn unexpected_endings_are_counted_and_described() {
        let mut e = Endings::default();
        e.record(Kind::Clean, true, || unreachable!());
        e.record(Kind::ClientReset, false, || {
            "reset seen as end of stream".into()
        });
        e.fail("refused".into());
        assert_eq!((e.expected(), e.unexpected()), (1, 2));
        assert_eq!(e.notes, ["reset seen as end of stream", "refused"]);
    }
}
