//! The preallocated receive buffers of the UDP worker: [`MAX_BATCH`] slots of 64 KiB, so that
//! one `recvmmsg` takes up to that many datagrams of any size without allocating.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use crate::sys::{self, MAX_BATCH, Received};

/// Bytes per slot: more than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6), so no datagram is cut.
pub(crate) const SLOT_BYTES: usize = 64 * 1024;

/// Datagrams received by one call, in preallocated slots (2 MiB per batch).
pub(crate) struct Batch {
    buffers: Box<[u8]>,
    received: [Received; MAX_BATCH],
    count: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("count", &self.count).finish()
    }
}

impl Default for Batch {
    /// An empty batch without buffers (a placeholder while the real one is in use).
    fn default() -> Self {
        Batch {
            buffers: Box::default(),
            received: [Received::EMPTY; MAX_BATCH],
            count: 0,
        }
    }
}

impl Batch {
    /// A batch with its buffers allocated (once, for the worker's lifetime).
    pub(crate) fn allocate() -> Self {
        Batch {
            buffers: vec![0u8; SLOT_BYTES * MAX_BATCH].into_boxed_slice(),
            ..Batch::default()
        }
    }

    /// Receives what is waiting on `socket`, up to a batch; `WouldBlock` when nothing is.
    pub(crate) fn recv(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        self.count = 0;
        let n = sys::recv_datagrams(socket, &mut self.buffers, SLOT_BYTES, &mut self.received)?;
        self.count = n;
        Ok(n)
    }

    /// Datagram `i`'s payload.
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        &self.buffers[i * SLOT_BYTES..][..self.received[i].len]
    }

    /// Datagram `i`'s sender.
    pub(crate) fn sender(&self, i: usize) -> Option<SocketAddr> {
        self.received[i].from
    }

    /// Whether datagram `i` was larger than its slot.
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.received[i].truncated
    }
}
