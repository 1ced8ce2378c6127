//! The I/O half of a direction: performs the step [`Direction`] chose, with the buffer the
//! direction holds (taken from the worker's pool when a read needs one, given back as soon as
//! it is empty), and reports what happened back to the state machine.

use std::io;
use std::net::Shutdown;
use std::time::Instant;

use mio::net::TcpStream;

use crate::rate_limit::{Allowance, Throttle};
use crate::socket_options::set_pacing;
use crate::transfer::buffer::{Buffer, BufferPool, Degradation};
use crate::transfer::direction::{Direction, End, ReadOutcome, Step, WriteOutcome};
use crate::transfer::handover::HandedOver;
use crate::transfer::low_water::LowWater;
use crate::transfer::splice::Transfer;

/// What one step did.
#[derive(Debug)]
pub(crate) enum StepDone {
    /// The direction waits or is finished.
    Nothing,
    /// One operation; `written` bytes left the buffer.
    Op { written: u64, spliced: bool },
    /// The first splice into a pipe was refused as unsupported.
    SpliceUnsupported(io::Error),
}

/// What a direction's step borrows from the connection and the worker.
pub(crate) struct StepEnv<'a> {
    pub(crate) pool: &'a mut BufferPool,
    pub(crate) splice: bool,
    pub(crate) pipe_size: usize,
    pub(crate) copy_size: usize,
    pub(crate) spliced_any: &'a mut bool,
    pub(crate) degraded: Option<(Degradation, String)>,
    pub(crate) error: &'a mut Option<io::Error>,
    pub(crate) low_water: &'a mut LowWater,
    pub(crate) low_water_mark: usize,
    pub(crate) now: Instant,
    /// Bytes the program read from the source before handing the connection over: read
    /// before the source itself (see `handover.rs`).
    pub(crate) handover: &'a mut HandedOver,
    /// The direction's rate limits; a read asks it how much it may take.
    pub(crate) throttle: &'a mut Throttle,
    /// Set when the direction must wait for its rate limit: until when, and the bytes newly
    /// held back (for the metrics).
    pub(crate) waiting: Option<(Instant, u64)>,
    /// Set when this step set the kernel's pacing on the destination (for the metrics).
    pub(crate) paced: bool,
}

pub(crate) fn step_direction(
    direction: &mut Direction,
    slot: &mut Option<Buffer>,
    source: &TcpStream,
    destination: &TcpStream,
    env: &mut StepEnv<'_>,
) -> StepDone {
    match direction.next_step() {
        Step::Wait | Step::Finished => StepDone::Nothing,
        Step::Read { .. } => {
            // Before anything more is written to it: the destination's kernel pacing, when
            // the connection's own limit is paced there (at the first read, after a reload).
            if let Some(rate) = env.throttle.pacing_change() {
                set_pacing(destination, rate);
                env.paced = rate > 0;
            }
            let handing_over = !env.handover.is_empty();
            // Bytes handed over were read by the program already: not limited again.
            let allowed = if handing_over {
                None
            } else {
                match env
                    .throttle
                    .allow(direction.capacity() - direction.buffered(), env.now)
                {
                    Allowance::Unlimited => None,
                    Allowance::Read(n) => Some(n),
                    Allowance::Wait { until, held_back } => {
                        env.waiting = Some((until, held_back));
                        return StepDone::Nothing;
                    }
                }
            };
            let buffer = match slot {
                Some(buffer) => buffer,
                None => {
                    let acquired = env.pool.acquire(env.splice, env.pipe_size, env.copy_size);
                    if acquired.degraded.is_some() {
                        env.degraded = acquired.degraded;
                    }
                    direction.set_capacity(acquired.buffer.capacity());
                    slot.insert(acquired.buffer)
                }
            };
            let room = direction.capacity() - direction.buffered();
            // A limited read asks for no more than its reservation: a splice moves exactly
            // what the bucket allows, so the limit costs no copy.
            let room = allowed.map_or(room, |n| n.min(room));
            let spliced = buffer.is_pipe();
            let filled = if handing_over {
                env.handover.fill(buffer, room).map(|t| (t, false))
            } else {
                buffer.fill_from(source, room)
            };
            if allowed.is_some() {
                // What the read did not take goes back to the buckets.
                let moved = match &filled {
                    Ok((Transfer::Moved(n), _)) => *n,
                    _ => 0,
                };
                env.throttle.used(moved, env.now);
            }
            match filled {
                Ok((Transfer::Moved(n), drained)) => {
                    if spliced {
                        *env.spliced_any = true;
                    }
                    direction.on_read(ReadOutcome::Moved(n));
                    if !handing_over {
                        env.low_water.on_bytes(source, n, env.low_water_mark);
                    }
                    if drained {
                        // Less than asked with room to spare: the socket is empty, and the
                        // next arrival raises a new edge. Skipping the read that would answer
                        // EAGAIN saves a system call per message (the direction keeps reading
                        // if the peer announced its end of stream: see `source_drained`).
                        env.low_water.on_empty(env.now);
                        direction.source_drained();
                    }
                }
                Ok((Transfer::WouldBlock, _)) => {
                    if !handing_over {
                        env.low_water.on_empty(env.now);
                    }
                    direction.on_read(ReadOutcome::WouldBlock);
                }
                Ok((Transfer::EndOfStream, _)) => direction.on_read(ReadOutcome::EndOfStream),
                Err(e)
                    if spliced && !handing_over && !*env.spliced_any && splice_unsupported(&e) =>
                {
                    return StepDone::SpliceUnsupported(e);
                }
                Err(e) => {
                    direction.on_read(ReadOutcome::Failed {
                        reset: is_reset(&e),
                    });
                    *env.error = Some(e);
                }
            }
            release_if_empty(direction, slot, env);
            StepDone::Op {
                written: 0,
                spliced,
            }
        }
        Step::Write { len } => {
            let Some(buffer) = slot.as_mut() else {
                // Unreachable by construction (bytes buffered imply a buffer); abort rather
                // than spin if it ever happens.
                direction.abort(End::Destination, false);
                return StepDone::Nothing;
            };
            let spliced = buffer.is_pipe();
            let written = match buffer.drain_to(destination, len) {
                Ok(Transfer::Moved(n)) => {
                    direction.on_write(WriteOutcome::Moved(n));
                    n as u64
                }
                Ok(Transfer::WouldBlock | Transfer::EndOfStream) => {
                    direction.on_write(WriteOutcome::WouldBlock);
                    0
                }
                Err(e) => {
                    direction.on_write(WriteOutcome::Failed {
                        reset: is_reset(&e),
                    });
                    *env.error = Some(e);
                    0
                }
            };
            release_if_empty(direction, slot, env);
            StepDone::Op { written, spliced }
        }
        Step::Shutdown => {
            let outcome = match destination.shutdown(Shutdown::Write) {
                Ok(()) => WriteOutcome::Moved(0),
                Err(e) => {
                    let reset = is_reset(&e) || e.kind() == io::ErrorKind::NotConnected;
                    *env.error = Some(e);
                    WriteOutcome::Failed { reset }
                }
            };
            direction.on_shutdown(outcome);
            StepDone::Op {
                written: 0,
                spliced: false,
            }
        }
    }
}

/// Gives the buffer back to the pool as soon as it is empty, so an idle direction holds none.
fn release_if_empty(direction: &Direction, slot: &mut Option<Buffer>, env: &mut StepEnv<'_>) {
    debug_assert_eq!(slot.as_ref().map_or(0, Buffer::len), direction.buffered());
    if direction.buffered() == 0
        && let Some(buffer) = slot.take()
    {
        env.pool.release(buffer, env.pipe_size);
    }
}

/// Whether an error means the peer reset the connection or has gone.
pub(crate) fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED)
    )
}

/// Whether a splice error means splice does not work for this socket at all.
fn splice_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        assert!(is_reset(&io::Error::from_raw_os_error(libc::ECONNRESET)));
        assert!(is_reset(&io::Error::from_raw_os_error(libc::EPIPE)));
        assert!(!is_reset(&io::Error::from_raw_os_error(libc::ETIMEDOUT)));
        assert!(splice_unsupported(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
        assert!(!splice_unsupported(&io::Error::from_raw_os_error(
            libc::ECONNRESET
        )));
    }
}
