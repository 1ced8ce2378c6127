//! Sending a run of a batch's datagrams on one socket: as few `sendmmsg` calls as the kernel
//! allows, each message one datagram or a train of them (`UDP_SEGMENT`) where the socket can
//! send trains. What the socket does not take now is dropped, as a router would, never
//! buffered.

use std::io;
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
    segmentation: &mut Segmentation,
) -> bool {
    let mut at = range.start;
    // Each call sends at least one message, drops one, or lowers the socket's trains.
    for _ in 0..(range.len() + 8) {
        if at >= range.end {
            break;
        }
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        let mut plan = [NOTHING; MAX_BATCH];
        let (planned, end) =
            plan_messages(batch, at..range.end, *segmentation, &mut parts, &mut plan);
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
                        segmentation.largest = segmentation
                            .largest
                            .min(train::largest_after_failure(&e, usize::from(segment)));
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
    segmentation: Segmentation,
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
            segmentation.largest,
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
