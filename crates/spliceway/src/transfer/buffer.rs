//! Buffers a direction moves bytes through, and the per-worker pool they come from.
//!
//! A direction holds a buffer only while bytes are in flight: it takes one from the pool when it
//! is about to read, and gives it back as soon as a write empties it. An idle connection
//! therefore holds no pipe (two sockets, no pipe descriptors, no pipe pages), and a busy worker
//! reuses a few warm pipes instead of creating and resizing one per transfer.
//!
//! Ownership rules:
//!
//! - only an *empty* buffer goes back to the pool ([`BufferPool::release`] checks); a buffer that
//!   still holds bytes when its connection dies is dropped, closing the pipe, so no byte can
//!   leak into another connection;
//! - pipes the kernel would not grow to the requested size are not pooled (they are dropped on
//!   release), so one bad moment under the per-user pipe limit does not shrink pipes for good;
//! - the pool is per worker (no locks) and bounded ([`PoolLimits`]).
//!
//! When the kernel refuses pipes (per-user pipe pages exhausted, descriptors exhausted), the pool
//! degrades instead of failing: smaller pipes, then user-space buffers (copy mode) for new
//! transfers. Each degradation is counted in [`crate::Stats`] and logged at most once a minute
//! per worker.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use std::sync::Arc;

use crate::descriptors::{DescriptorBudget, PER_PIPE};
use crate::transfer::copy::HeapBuffer;
use crate::transfer::pipe::{Pipe, Sizing};
use crate::transfer::splice::{self, Transfer};

/// Size of the pipes handed out once a worker's pipe budget is used up.
pub(crate) const SMALL_PIPE_SIZE_BYTES: usize = 16 * 1024;

/// Size of the user-space buffer used when no pipe can be created at all (copy fallback).
pub(crate) const FALLBACK_COPY_BUFFER_BYTES: usize = 16 * 1024;

/// How often one worker logs the same kind of degradation.
const DEGRADED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A buffer between two sockets.
#[derive(Debug)]
pub(crate) enum Buffer {
    /// A kernel pipe: bytes are spliced in and out and never enter user space.
    Pipe {
        /// The pipe.
        pipe: Pipe,
        /// Bytes it holds (the kernel does not tell us cheaply; the direction counts them).
        held: usize,
        /// Whether the kernel granted the requested size (only such pipes are pooled).
        full_size: bool,
    },
    /// A user-space buffer: bytes are copied in with `recv` and out with `send`.
    Heap(HeapBuffer),
}

impl Buffer {
    pub(crate) fn capacity(&self) -> usize {
        match self {
            Buffer::Pipe { pipe, .. } => pipe.capacity(),
            Buffer::Heap(heap) => heap.capacity(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Buffer::Pipe { held, .. } => *held,
            Buffer::Heap(heap) => heap.len(),
        }
    }

    pub(crate) fn is_pipe(&self) -> bool {
        matches!(self, Buffer::Pipe { .. })
    }

    /// Reads up to `len` bytes from `src` (bounded by the free room). The flag says whether
    /// the read is known to have taken everything `src` held: it returned fewer bytes than
    /// asked for, and (for a pipe) not because the pipe ran out of page slots.
    pub(crate) fn fill_from(
        &mut self,
        src: &TcpStream,
        len: usize,
    ) -> io::Result<(Transfer, bool)> {
        let len = len.min(self.capacity() - self.len());
        match self {
            Buffer::Pipe { pipe, held, .. } => {
                let result = splice::socket_to_pipe(src, pipe, len)?;
                let mut drained = false;
                if let Transfer::Moved(n) = result {
                    *held += n;
                    drained = n < len && pipe.had_room_after(*held);
                }
                Ok((result, drained))
            }
            Buffer::Heap(heap) => heap.fill_reporting(&mut &*src, len),
        }
    }

    /// Writes up to `len` buffered bytes to `dst`.
    pub(crate) fn drain_to(&mut self, dst: &TcpStream, len: usize) -> io::Result<Transfer> {
        let len = len.min(self.len());
        match self {
            Buffer::Pipe { pipe, held, .. } => {
                let result = splice::pipe_to_socket(pipe, dst, len)?;
                if let Transfer::Moved(n) = result {
                    *held -= n;
                }
                Ok(result)
            }
            Buffer::Heap(heap) => heap.drain_to(&mut &*dst, len),
        }
    }
}

/// Bounds of a worker's pool. Start from [`PoolLimits::default`] and change what you need; the
/// fields are public to read, and non-exhaustive so that the pool can gain bounds.
///
/// ```
/// let limits = spliceway::PoolLimits::default()
///     .with_max_idle_pipes(4)
///     .with_pipe_budget_bytes(64 << 20);
/// assert_eq!(limits.max_idle_pipes, 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolLimits {
    /// Empty pipes kept for reuse (each costs two descriptors and its pages stay allocated only
    /// while it holds data, so idle pooled pipes are cheap in memory).
    pub max_idle_pipes: usize,
    /// Bound on the total capacity of the full-size pipes a worker holds (in use and pooled), in
    /// bytes. Past it new transfers get small (16 KiB) pipes.
    pub pipe_budget_bytes: usize,
}

impl PoolLimits {
    /// These limits with `n` empty pipes kept for reuse.
    #[must_use]
    pub fn with_max_idle_pipes(mut self, n: usize) -> Self {
        self.max_idle_pipes = n;
        self
    }

    /// These limits with a budget of `bytes` for full-size pipes.
    #[must_use]
    pub fn with_pipe_budget_bytes(mut self, bytes: usize) -> Self {
        self.pipe_budget_bytes = bytes;
        self
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_idle_pipes: 16,
            pipe_budget_bytes: 256 << 20,
        }
    }
}

/// Why a transfer got a lesser buffer than asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Degradation {
    /// The pipe was not grown to the requested size.
    SmallerPipe,
    /// No pipe at all: a user-space buffer instead.
    CopyBuffer,
}

/// What [`BufferPool::acquire`] handed out.
#[derive(Debug)]
pub(crate) struct Acquired {
    pub(crate) buffer: Buffer,
    pub(crate) degraded: Option<(Degradation, String)>,
}

/// A worker's pool of empty buffers.
#[derive(Debug)]
pub(crate) struct BufferPool {
    limits: PoolLimits,
    /// Empty full-size pipes, by requested size.
    idle_pipes: Vec<(usize, Vec<Pipe>)>,
    idle_heaps: Vec<(usize, Vec<HeapBuffer>)>,
    /// Total capacity of the pipes that exist (idle and in use), in bytes.
    pipe_bytes: usize,
    pipes_open: usize,
    last_degraded_log: Option<Instant>,
    /// The relay's descriptors: a pipe is created only if the budget has two for it.
    descriptors: Arc<DescriptorBudget>,
}

impl BufferPool {
    pub(crate) fn new(limits: PoolLimits, descriptors: Arc<DescriptorBudget>) -> Self {
        BufferPool {
            descriptors,
            limits,
            idle_pipes: Vec::new(),
            idle_heaps: Vec::new(),
            pipe_bytes: 0,
            pipes_open: 0,
            last_degraded_log: None,
        }
    }

    /// Pipes that exist (in use or idle).
    pub(crate) fn pipes_open(&self) -> usize {
        self.pipes_open
    }

    /// Total capacity of existing pipes, in bytes.
    pub(crate) fn pipe_bytes(&self) -> usize {
        self.pipe_bytes
    }

    /// Empty pipes waiting for reuse.
    pub(crate) fn idle_pipes(&self) -> usize {
        self.idle_pipes.iter().map(|(_, v)| v.len()).sum()
    }

    /// Hands out an empty buffer: a pipe of `pipe_size` bytes when `splice` is true, else (or
    /// when no pipe can be had) a user-space buffer of `copy_size` bytes.
    pub(crate) fn acquire(&mut self, splice: bool, pipe_size: usize, copy_size: usize) -> Acquired {
        if !splice {
            return Acquired {
                buffer: Buffer::Heap(self.heap(copy_size)),
                degraded: None,
            };
        }
        if let Some(pipe) = self
            .idle_pipes
            .iter_mut()
            .find(|(size, _)| *size == pipe_size)
            .and_then(|(_, v)| v.pop())
        {
            return Acquired {
                buffer: Buffer::Pipe {
                    pipe,
                    held: 0,
                    full_size: true,
                },
                degraded: None,
            };
        }
        // Within the budget ask for the full size; past it, for what is left (at least a page).
        let room = self
            .limits
            .pipe_budget_bytes
            .saturating_sub(self.pipe_bytes);
        if room < pipe_size.min(SMALL_PIPE_SIZE_BYTES) {
            // Free idle pipes (of other sizes) before shrinking new ones.
            if self.drop_one_idle_pipe() {
                return self.acquire(splice, pipe_size, copy_size);
            }
        }
        // Past the budget, new transfers still splice, through small pipes: their pages are
        // kernel memory held only while bytes are in flight, unlike user-space buffers, whose
        // memory the allocator keeps after a burst.
        let room = room.max(pipe_size.min(SMALL_PIPE_SIZE_BYTES));
        let request = pipe_size.min(room);
        if !self.descriptors.try_take(PER_PIPE) {
            return Acquired {
                buffer: Buffer::Heap(self.heap(FALLBACK_COPY_BUFFER_BYTES.min(copy_size))),
                degraded: Some((
                    Degradation::CopyBuffer,
                    "descriptors nearly used up (the open-file limit); copying this transfer \
                     instead of creating a pipe. Raise the limit (LimitNOFILE=) or lower max connections"
                        .to_string(),
                )),
            };
        }
        match Pipe::new(request) {
            Ok((pipe, sizing)) => {
                self.pipe_bytes += pipe.capacity();
                self.pipes_open += 1;
                let granted = pipe.capacity();
                let degraded = match sizing {
                    Sizing::Granted if request == pipe_size => None,
                    Sizing::Granted => Some((
                        Degradation::SmallerPipe,
                        format!(
                            "pipe budget nearly used up: {granted}-byte pipe instead of {pipe_size}"
                        ),
                    )),
                    Sizing::Refused { error } => Some((
                        Degradation::SmallerPipe,
                        format!(
                            "the kernel refused a {request}-byte pipe ({error}); using {granted} bytes. \
                             Raise /proc/sys/fs/pipe-user-pages-soft (or pipe-max-size), or lower the pipe size"
                        ),
                    )),
                };
                let full_size = degraded.is_none();
                Acquired {
                    buffer: Buffer::Pipe {
                        pipe,
                        held: 0,
                        full_size,
                    },
                    degraded,
                }
            }
            Err(error) => {
                self.descriptors.give_back(PER_PIPE);
                Acquired {
                    buffer: Buffer::Heap(self.heap(FALLBACK_COPY_BUFFER_BYTES.min(copy_size))),
                    degraded: Some((
                        Degradation::CopyBuffer,
                        format!("cannot create a pipe ({error}); copying this transfer instead"),
                    )),
                }
            }
        }
    }

    /// Takes back a buffer. Empty full-size buffers are kept (up to the limits); a buffer that
    /// still holds bytes is dropped, never reused.
    pub(crate) fn release(&mut self, buffer: Buffer, pipe_size: usize) {
        match buffer {
            Buffer::Pipe {
                pipe,
                held,
                full_size,
            } => {
                if held == 0 && full_size && self.idle_pipes() < self.limits.max_idle_pipes {
                    match self.idle_pipes.iter_mut().find(|(s, _)| *s == pipe_size) {
                        Some((_, v)) => v.push(pipe),
                        None => self.idle_pipes.push((pipe_size, vec![pipe])),
                    }
                } else {
                    self.forget_pipe(&pipe);
                }
            }
            Buffer::Heap(heap) => {
                if heap.len() == 0
                    && self.idle_heaps.iter().map(|(_, v)| v.len()).sum::<usize>() < 16
                {
                    let size = heap.capacity();
                    match self.idle_heaps.iter_mut().find(|(s, _)| *s == size) {
                        Some((_, v)) => v.push(heap),
                        None => self.idle_heaps.push((size, vec![heap])),
                    }
                }
            }
        }
    }

    /// Drops every idle buffer (used when a worker stops, and by tests).
    pub(crate) fn clear(&mut self) {
        for (_, pipes) in std::mem::take(&mut self.idle_pipes) {
            for pipe in pipes {
                self.forget_pipe(&pipe);
            }
        }
        self.idle_heaps.clear();
    }

    /// Whether a degradation should be logged now (at most once per interval per worker).
    pub(crate) fn should_log_degradation(&mut self, now: Instant) -> bool {
        match self.last_degraded_log {
            Some(last) if now.duration_since(last) < DEGRADED_LOG_INTERVAL => false,
            _ => {
                self.last_degraded_log = Some(now);
                true
            }
        }
    }

    fn forget_pipe(&mut self, pipe: &Pipe) {
        self.pipe_bytes = self.pipe_bytes.saturating_sub(pipe.capacity());
        self.pipes_open = self.pipes_open.saturating_sub(1);
        self.descriptors.give_back(PER_PIPE);
    }

    fn drop_one_idle_pipe(&mut self) -> bool {
        let Some(pipe) = self.idle_pipes.iter_mut().find_map(|(_, v)| v.pop()) else {
            return false;
        };
        self.forget_pipe(&pipe);
        true
    }

    fn heap(&mut self, size: usize) -> HeapBuffer {
        self.idle_heaps
            .iter_mut()
            .find(|(s, _)| *s == size)
            .and_then(|(_, v)| v.pop())
            .unwrap_or_else(|| HeapBuffer::new(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pipes_are_reused() {
        let mut pool = BufferPool::new(
            PoolLimits::default(),
            Arc::new(DescriptorBudget::new(usize::MAX)),
        );
        let a = pool.acquire(true, 65536, 65536);
        assert!(a.degraded.is_none());
        assert!(a.buffer.is_pipe());
        assert_eq!(pool.pipes_open(), 1);
        pool.release(a.buffer, 65536);
        assert_eq!(pool.idle_pipes(), 1);
        let b = pool.acquire(true, 65536, 65536);
        assert_eq!(pool.pipes_open(), 1, "reused, not created");
        assert_eq!(pool.idle_pipes(), 0);
        drop(b);
    }

    #[test]
    fn a_pipe_holding_bytes_is_never_pooled() {
        let mut pool = BufferPool::new(
            PoolLimits::default(),
            Arc::new(DescriptorBudget::new(usize::MAX)),
        );
        let mut a = pool.acquire(true, 65536, 65536).buffer;
        if let Buffer::Pipe { held, .. } = &mut a {
            *held = 10;
        }
        pool.release(a, 65536);
        assert_eq!(pool.idle_pipes(), 0);
        assert_eq!(pool.pipes_open(), 0);
        assert_eq!(pool.pipe_bytes(), 0);
    }

    #[test]
    fn budget_degrades_to_smaller_pipes_not_to_copying() {
        let mut pool = BufferPool::new(
            PoolLimits {
                max_idle_pipes: 4,
                pipe_budget_bytes: 96 * 1024,
            },
            Arc::new(DescriptorBudget::new(usize::MAX)),
        );
        let first = pool.acquire(true, 65536, 65536);
        assert!(first.degraded.is_none());
        let second = pool.acquire(true, 65536, 65536);
        assert_eq!(
            second.degraded.as_ref().unwrap().0,
            Degradation::SmallerPipe
        );
        assert_eq!(
            second.buffer.capacity(),
            32 * 1024,
            "what was left of the budget"
        );
        let third = pool.acquire(true, 65536, 65536);
        assert_eq!(third.degraded.as_ref().unwrap().0, Degradation::SmallerPipe);
        assert!(third.buffer.is_pipe(), "still splicing past the budget");
        assert_eq!(third.buffer.capacity(), SMALL_PIPE_SIZE_BYTES);
        pool.release(first.buffer, 65536);
        pool.release(second.buffer, 65536);
        pool.release(third.buffer, 65536);
        assert_eq!(pool.idle_pipes(), 1, "smaller pipes are not pooled");
    }

    #[test]
    fn copy_mode_gets_heap_buffers() {
        let mut pool = BufferPool::new(
            PoolLimits::default(),
            Arc::new(DescriptorBudget::new(usize::MAX)),
        );
        let a = pool.acquire(false, 65536, 32768);
        assert!(!a.buffer.is_pipe());
        assert_eq!(a.buffer.capacity(), 32768);
        assert_eq!(pool.pipes_open(), 0);
    }

    #[test]
    fn no_pipe_past_the_descriptor_budget_and_its_descriptors_come_back() {
        let descriptors = Arc::new(DescriptorBudget::new(PER_PIPE));
        let mut pool = BufferPool::new(PoolLimits::default(), Arc::clone(&descriptors));
        let first = pool.acquire(true, 65536, 65536);
        assert!(first.buffer.is_pipe());
        let second = pool.acquire(true, 65536, 65536);
        assert!(!second.buffer.is_pipe(), "a copy buffer, not a failure");
        assert!(matches!(
            second.degraded,
            Some((Degradation::CopyBuffer, _))
        ));
        assert!(!descriptors.try_take(1), "the pipe holds the budget");
        // A pipe dropped with bytes in it gives its descriptors back.
        let mut first = first.buffer;
        if let Buffer::Pipe { held, .. } = &mut first {
            *held = 1;
        }
        pool.release(first, 65536);
        assert!(descriptors.try_take(PER_PIPE));
    }
}
