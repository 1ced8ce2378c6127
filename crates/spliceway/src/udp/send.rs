//! Sending a run of a batch's datagrams on one socket: as few `sendmmsg` calls as the kernel
//! allows, each message one datagram or a train of them (`UDP_SEGMENT`) where the socket can
//! send trains. What the socket does not take now is dropped, as a router would, never
//! buffered.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsFd;

use super::batch::Batch;
use super::train;
use crate::sys::{self, MAX_BATCH, Message};

/// Parts (iovecs) planned per call: [`sys::send_messages`] takes 256.
const MAX_PARTS: usize = 256;

/// A socket's trains: the largest segment it may send as one, lowered when a segmented send
/// fails (0: it sends none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segmentation {
    pub(crate) largest: usize,
}

impl Segmentation {
    /// Trains of any size the kernel allows.
    pub(crate) const ON: Segmentation = Segmentation {
        largest: sys::MAX_SEGMENTED_BYTES,
    };
    /// Trains are not tried: one datagram a message.
    pub(crate) const OFF: Segmentation = Segmentation { largest: 0 };
}

/// How large a train may be, per destination, and what a failed train teaches.
pub(crate) trait TrainLimits {
    /// The largest segment a train to `to` may carry (0: none).
    fn largest(&self, to: Option<SocketAddr>) -> usize;
    /// A train of `segment`-byte datagrams to `to` failed with `error` ([`train::is_train_error`]).
    fn failed(&mut self, to: Option<SocketAddr>, segment: usize, error: &io::Error);
}

impl TrainLimits for Segmentation {
    /// A connected socket has one destination: what it learns holds for the socket.
    fn largest(&self, _to: Option<SocketAddr>) -> usize {
        self.largest
    }

    fn failed(&mut self, _to: Option<SocketAddr>, segment: usize, error: &io::Error) {
        self.largest = self
            .largest
            .min(train::largest_after_failure(error, segment));
    }
}

/// The trains of an unconnected socket that sends to many destinations (a listening socket
/// answering its clients): what the socket itself cannot do (no GSO in this kernel) holds for
/// all of them, but a failure that belongs to one destination's route (its MTU is below the
/// segment size: `EMSGSIZE`, `EINVAL`; its device cannot checksum a train, or it goes through
/// IPsec: `EIO`) lowers the trains to that destination only, so that one client behind a
/// small-MTU tunnel does not turn trains off for every other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestinationSegmentation {
    socket: Segmentation,
    /// Destinations whose trains are smaller than the socket's: at most one per open session
    /// (the worker forgets a client when its session ends).
    lowered: HashMap<SocketAddr, usize>,
}

impl DestinationSegmentation {
    pub(crate) fn new(socket: Segmentation) -> Self {
        DestinationSegmentation {
            socket,
            lowered: HashMap::new(),
        }
    }

    /// Forgets what was learnt of `to` (its session ended; a new one may take another route).
    pub(crate) fn forget(&mut self, to: SocketAddr) {
        self.lowered.remove(&to);
    }
}

impl TrainLimits for DestinationSegmentation {
    fn largest(&self, to: Option<SocketAddr>) -> usize {
        let lowered = to.and_then(|to| self.lowered.get(&to).copied());
        lowered.map_or(self.socket.largest, |l| l.min(self.socket.largest))
    }

    fn failed(&mut self, to: Option<SocketAddr>, segment: usize, error: &io::Error) {
        let largest = train::largest_after_failure(error, segment);
        let of_the_route = matches!(
            error.raw_os_error(),
            Some(libc::EMSGSIZE | libc::EINVAL | libc::EIO)
        );
        match to {
            Some(to) if of_the_route => {
                let entry = self.lowered.entry(to).or_insert(largest);
                *entry = (*entry).min(largest);
            }
            _ => self.socket.failed(None, segment, error),
        }
    }
}

/// One message planned: datagrams `datagrams` of the batch as parts `parts` of the plan, and
/// the segment size if they are a train.
#[derive(Debug, Clone, Copy)]
struct Planned {
    datagrams: (usize, usize),
    parts: (usize, usize),
    segment: Option<u16>,
}

const NOTHING: Planned = Planned {
    datagrams: (0, 0),
    parts: (0, 0),
    segment: None,
};

/// Sends datagrams `range` of `batch` on `socket`, each to its slot's destination, and marks
/// those the kernel took. Returns whether the socket reported an ICMP error from its peer
/// (`ECONNREFUSED` on a connected socket), which ends the send.
pub(crate) fn send(
    socket: &impl AsFd,
    batch: &mut Batch,
    range: Range<usize>,
    limits: &mut impl TrainLimits,
) -> bool {
    let mut at = range.start;
    // Each call sends at least one message, drops one, or lowers the trains of a destination
    // for a train of at least two of the range's datagrams.
    for _ in 0..(2 * range.len() + 8) {
        if at >= range.end {
            break;
        }
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        let mut plan = [NOTHING; MAX_BATCH];
        let (planned, end) = plan_messages(batch, at..range.end, &*limits, &mut parts, &mut plan);
        let mut messages = [Message {
            parts: &[],
            segment: None,
            to: None,
        }; MAX_BATCH];
        for (message, planned) in messages.iter_mut().zip(&plan[..planned]) {
            *message = Message {
                parts: &parts[planned.parts.0..planned.parts.1],
                segment: planned.segment,
                to: batch.destination(planned.datagrams.0),
            };
        }
        let result = sys::send_messages(socket, &messages[..planned]);
        match result {
            Ok(0) => break,
            Ok(n) => {
                let sent_to = if n >= planned {
                    end
                } else {
                    plan[n].datagrams.0
                };
                batch.mark_sent(at..sent_to);
                at = sent_to;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let first = plan[0];
                match first.segment {
                    Some(segment) if train::is_train_error(&e) => {
                        // The same datagrams go again, one by one or in smaller trains.
                        let to = batch.destination(first.datagrams.0);
                        limits.failed(to, usize::from(segment), &e);
                    }
                    // This datagram cannot go (too large for the route, a refusal of the
                    // firewall): it is dropped, the next ones still go.
                    _ => at = first.datagrams.1,
                }
            }
        }
    }
    false
}

/// Plans the messages of one call for datagrams `range`: trains where they may be, each
/// message's bytes in as few parts as they lie in. Returns how many messages and the end of
/// the datagrams they cover.
fn plan_messages<'a>(
    batch: &'a Batch,
    range: Range<usize>,
    limits: &impl TrainLimits,
    parts: &mut [&'a [u8]; MAX_PARTS],
    plan: &mut [Planned; MAX_BATCH],
) -> (usize, usize) {
    let datagrams = batch.datagrams();
    let mut at = range.start;
    let mut used = 0;
    let mut planned = 0;
    while at < range.end && planned < MAX_BATCH {
        let count = train::train_len(
            datagrams[at..range.end]
                .iter()
                .enumerate()
                .map(|(k, d)| (d.len(), batch.destination(at + k))),
            limits.largest(batch.destination(at)),
        )
        .max(1);
        if used + count > MAX_PARTS {
            break;
        }
        let first_part = used;
        let mut span: Option<(usize, usize)> = None;
        for d in &datagrams[at..at + count] {
            span = match span {
                Some((start, end)) if end == d.offset() => Some((start, end + d.len())),
                Some((start, end)) => {
                    parts[used] = batch.bytes(start..end);
                    used += 1;
                    Some((d.offset(), d.offset() + d.len()))
                }
                None => Some((d.offset(), d.offset() + d.len())),
            };
        }
        if let Some((start, end)) = span {
            parts[used] = batch.bytes(start..end);
            used += 1;
        }
        plan[planned] = Planned {
            datagrams: (at, at + count),
            parts: (first_part, used),
            segment: (count > 1).then(|| datagrams[at].len() as u16),
        };
        planned += 1;
        at += count;
    }
    (planned, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn a_route_too_small_for_a_train_lowers_that_destination_only() {
        let (small, other): (SocketAddr, SocketAddr) = (
            "127.0.0.3:5000".parse().unwrap(),
            "127.0.0.2:5000".parse().unwrap(),
        );
        let mut limits = DestinationSegmentation::new(Segmentation::ON);
        limits.failed(Some(small), 1400, &error(libc::EMSGSIZE));
        assert_eq!(limits.largest(Some(small)), 1399);
        assert_eq!(limits.largest(Some(other)), Segmentation::ON.largest);
        // Smaller trains still go; a second failure lowers further, never raises.
        limits.failed(Some(small), 1300, &error(libc::EINVAL));
        assert_eq!(limits.largest(Some(small)), 1299);
        limits.failed(Some(small), 1350, &error(libc::EMSGSIZE));
        assert_eq!(limits.largest(Some(small)), 1299);
        // A device that cannot checksum trains, or IPsec, on that client's route: none to it.
        limits.failed(Some(other), 64, &error(libc::EIO));
        assert_eq!(limits.largest(Some(other)), 0);
        // A new session of the client may take another route: learnt again.
        limits.forget(small);
        assert_eq!(limits.largest(Some(small)), Segmentation::ON.largest);
    }

    #[test]
    fn a_socket_that_cannot_send_trains_sends_none_to_anyone() {
        let to: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let mut limits = DestinationSegmentation::new(Segmentation::ON);
        limits.failed(Some(to), 1000, &error(libc::ENOPROTOOPT));
        assert_eq!(limits.largest(Some(to)), 0);
        assert_eq!(limits.largest(Some("[::1]:9".parse().unwrap())), 0);
        // A connected socket's trains are the socket's, whatever the error.
        let mut connected = Segmentation::ON;
        connected.failed(None, 1400, &error(libc::EMSGSIZE));
        assert_eq!(connected.largest(None), 1399);
        connected.failed(None, 64, &error(libc::EIO));
        assert_eq!(connected.largest(None), 0);
    }
}
