//! The preallocated buffers of the UDP worker: [`MAX_BATCH`] slots of 64 KiB, so that one
//! `recvmmsg` takes up to that many receives of any size without allocating, and the index of
//! the datagrams they hold (a receive coalesced by `UDP_GRO` holds several), in the order they
//! are to be sent.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsFd;

use super::train;
use crate::sys::{self, MAX_BATCH, MAX_SEGMENTS, Received};

/// Bytes per slot: more than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6) and than what `UDP_GRO` coalesces into one receive, so no datagram is cut.
pub(crate) const SLOT_BYTES: usize = 64 * 1024;

/// One datagram of a batch: where its bytes lie, the slot it came in, and whether it was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram {
    offset: u32,
    len: u32,
    slot: u8,
    pub(crate) sent: bool,
}

impl Datagram {
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn slot(&self) -> usize {
        usize::from(self.slot)
    }

    /// Where its bytes begin in the batch's buffers.
    pub(crate) fn offset(&self) -> usize {
        self.offset as usize
    }
}

/// Receives in preallocated slots (2 MiB per batch), and their datagrams.
pub(crate) struct Batch {
    buffers: Box<[u8]>,
    received: [Received; MAX_BATCH],
    /// Slots filled, from the first.
    slots: usize,
    /// Per slot: what the worker tagged it with (the session it belongs to) and where its
    /// datagrams go (`None`: to a connected socket's peer).
    tags: [usize; MAX_BATCH],
    destinations: [Option<SocketAddr>; MAX_BATCH],
    /// The datagrams of the filled slots (capacity for every slot coalesced to the most).
    datagrams: Vec<Datagram>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.slots)
            .field("datagrams", &self.datagrams.len())
            .finish()
    }
}

impl Default for Batch {
    /// An empty batch without buffers (a placeholder while the real one is in use).
    fn default() -> Self {
        Batch {
            buffers: Box::default(),
            received: [Received::EMPTY; MAX_BATCH],
            slots: 0,
            tags: [0; MAX_BATCH],
            destinations: [None; MAX_BATCH],
            datagrams: Vec::new(),
        }
    }
}

impl Batch {
    /// A batch with its buffers allocated (once, for the worker's lifetime).
    pub(crate) fn allocate() -> Self {
        Batch {
            buffers: vec![0u8; SLOT_BYTES * MAX_BATCH].into_boxed_slice(),
            datagrams: Vec::with_capacity(MAX_BATCH * MAX_SEGMENTS),
            ..Batch::default()
        }
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        self.slots = 0;
        self.datagrams.clear();
    }

    /// Slots not yet filled.
    pub(crate) fn free_slots(&self) -> usize {
        MAX_BATCH - self.slots
    }

    /// Slots filled.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Receives what is waiting on `socket` into the free slots, tagging them with `tag` and
    /// `destination`; returns how many slots it filled (`WouldBlock` when nothing waits). The
    /// new slots' datagrams are appended to the index.
    pub(crate) fn recv(
        &mut self,
        socket: &impl AsFd,
        tag: usize,
        destination: Option<SocketAddr>,
    ) -> io::Result<usize> {
        let first = self.slots;
        let n = sys::recv_datagrams(
            socket,
            &mut self.buffers[first * SLOT_BYTES..],
            SLOT_BYTES,
            &mut self.received[first..],
        )?;
        for slot in first..first + n {
            self.tags[slot] = tag;
            self.destinations[slot] = destination;
            let received = self.received[slot];
            if received.truncated {
                continue;
            }
            for (offset, len) in train::split(received.len, received.segment) {
                self.datagrams.push(Datagram {
                    offset: (slot * SLOT_BYTES + offset) as u32,
                    len: len as u32,
                    slot: slot as u8,
                    sent: false,
                });
            }
        }
        self.slots += n;
        Ok(n)
    }

    /// Slot `slot`'s sender.
    pub(crate) fn sender(&self, slot: usize) -> Option<SocketAddr> {
        self.received[slot].from
    }

    /// Whether slot `slot`'s receive was larger than the slot (its datagrams are not indexed).
    pub(crate) fn truncated(&self, slot: usize) -> bool {
        self.received[slot].truncated
    }

    /// Tags slot `slot` (with the session its datagrams belong to, and where they go).
    pub(crate) fn tag(&mut self, slot: usize, tag: usize, destination: Option<SocketAddr>) {
        self.tags[slot] = tag;
        self.destinations[slot] = destination;
    }

    /// Slot `slot`'s tag.
    pub(crate) fn tag_of(&self, slot: usize) -> usize {
        self.tags[slot]
    }

    /// Orders the datagrams by `key` of their slot's tag and destination, keeping the order of
    /// equal keys (so each sender's datagrams stay in the order they came); allocates nothing.
    pub(crate) fn order_by(&mut self, key: impl Fn(usize, Option<SocketAddr>) -> usize) {
        let Batch {
            datagrams,
            tags,
            destinations,
            ..
        } = self;
        datagrams.sort_unstable_by_key(|d| {
            let slot = d.slot();
            (key(tags[slot], destinations[slot]), d.offset)
        });
    }

    /// How many datagrams slot `slot` holds (0 when it was truncated).
    pub(crate) fn datagrams_in(&self, slot: usize) -> usize {
        let received = self.received[slot];
        if received.truncated {
            0
        } else {
            train::split(received.len, received.segment).count()
        }
    }

    /// The datagrams, in order.
    pub(crate) fn datagrams(&self) -> &[Datagram] {
        &self.datagrams
    }

    /// Datagram `i`'s bytes.
    #[cfg(test)]
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        let d = self.datagrams[i];
        &self.buffers[d.offset as usize..][..d.len as usize]
    }

    /// Bytes `range` of the batch's buffers (datagrams that lie one after the other, as those
    /// of one coalesced receive do, are one such range).
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buffers[range]
    }

    /// Where datagram `i` goes.
    pub(crate) fn destination(&self, i: usize) -> Option<SocketAddr> {
        self.destinations[self.datagrams[i].slot()]
    }

    /// Marks datagrams `range` sent.
    pub(crate) fn mark_sent(&mut self, range: Range<usize>) {
        for d in &mut self.datagrams[range] {
            d.sent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_indexes_each_receive_and_orders_by_slot_key_keeping_arrival_order() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        for (i, len) in [3usize, 1, 2, 0].into_iter().enumerate() {
            a.send_to(&vec![i as u8; len], to).unwrap();
        }
        let mut batch = Batch::allocate();
        let mut got = 0;
        for _ in 0..200 {
            match batch.recv(&b, 7, None) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
            if got == 4 {
                break;
            }
        }
        assert_eq!(batch.slots(), 4);
        assert_eq!(batch.tag_of(2), 7);
        for slot in 0..4 {
            batch.tag(slot, slot % 2, None);
        }
        // Slots 0 and 2 first (tag 0), then 1 and 3 (tag 1), each pair in arrival order.
        batch.order_by(|tag, _| tag);
        let order: Vec<usize> = batch.datagrams().iter().map(|d| d.slot()).collect();
        assert_eq!(order, vec![0, 2, 1, 3]);
        assert_eq!(batch.payload(0), &[0u8; 3]);
        assert_eq!(batch.payload(1), &[2u8; 2]);
        assert_eq!(batch.payload(3), b"");
        batch.clear();
        assert_eq!(batch.free_slots(), MAX_BATCH);
    }
}
