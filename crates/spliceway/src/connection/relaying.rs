//! The relaying phase: the upstream socket, the two directions between it and the client, and
//! the pump that performs both directions' steps within a budget; the fallback from splice to
//! copy; and deciding how the transfer ended.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Instant;

use mio::net::TcpStream;

use super::Seen;
use super::context::{Ctx, Identity, Pump};
use crate::clock::deadline;
use crate::end::CloseReason;
use crate::rate_limit::{ClientSlot, Side as ThrottleSide, Throttle};
use crate::route::{ConnectionOptions, Mode};
use crate::stats::count;
use crate::transfer::buffer::{Buffer, BufferPool, Degradation};
use crate::transfer::direction::{Direction, End, Phase};
use crate::transfer::direction_io::{StepDone, StepEnv, step_direction};
use crate::transfer::handover::HandedOver;
use crate::transfer::low_water::LowWater;

/// Which of the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// client -> upstream
    Up,
    /// upstream -> client
    Down,
}

/// A connection whose upstream is connected: bytes move both ways.
#[derive(Debug)]
pub(crate) struct Relaying {
    upstream: TcpStream,
    upstream_addr: SocketAddr,
    up: Direction,
    down: Direction,
    up_buffer: Option<Buffer>,
    down_buffer: Option<Buffer>,
    splice: bool,
    spliced_any: bool,
    last_activity: Instant,
    half_closed_at: Option<Instant>,
    last_error_up: Option<io::Error>,
    last_error_down: Option<io::Error>,
    /// Bulk low-water state of the up and down directions' sources.
    low_water: [LowWater; 2],
    /// Bytes handed over with an adopted connection, for the up and down directions.
    handover: [HandedOver; 2],
    /// The rate limits of the up and down directions.
    throttles: [Throttle; 2],
}

impl Relaying {
    /// Starts relaying over a connected upstream. Both directions start with both ends
    /// assumed ready (see [`Direction::new`]), so readiness that arrived while connecting is
    /// not lost.
    pub(crate) fn new(
        upstream: TcpStream,
        upstream_addr: SocketAddr,
        options: &ConnectionOptions,
        client: &ClientSlot,
        now: Instant,
    ) -> Self {
        let splice = options.mode == Mode::Splice;
        let capacity = if splice {
            options.pipe_size
        } else {
            options.copy_buffer_size
        };
        Relaying {
            upstream,
            upstream_addr,
            up: Direction::new(capacity),
            down: Direction::new(capacity),
            up_buffer: None,
            down_buffer: None,
            splice,
            spliced_any: false,
            last_activity: now,
            half_closed_at: None,
            last_error_up: None,
            last_error_down: None,
            low_water: Default::default(),
            handover: Default::default(),
            throttles: [
                Throttle::new(client, ThrottleSide::Up),
                Throttle::new(client, ThrottleSide::Down),
            ],
        }
    }

    /// Bytes an adopting program already read: `client_bytes` go to the upstream and
    /// `upstream_bytes` to the client before anything more is read from either socket.
    pub(crate) fn hand_over(&mut self, client_bytes: Vec<u8>, upstream_bytes: Vec<u8>) {
        self.handover = [
            HandedOver::new(client_bytes),
            HandedOver::new(upstream_bytes),
        ];
    }

    /// Whether one direction has passed end of stream on (the connection is half-closed).
    pub(crate) fn half_closed(&self) -> bool {
        self.half_closed_at.is_some()
    }

    pub(crate) fn upstream(&self) -> &TcpStream {
        &self.upstream
    }

    pub(crate) fn upstream_mut(&mut self) -> &mut TcpStream {
        &mut self.upstream
    }

    /// Whether bytes move by splice (false once fallen back to copying, or in copy mode).
    pub(crate) fn splicing(&self) -> bool {
        self.splice
    }

    pub(crate) fn upstream_addr(&self) -> SocketAddr {
        self.upstream_addr
    }

    /// Bytes written to the upstream and to the client.
    pub(crate) fn bytes_written(&self) -> (u64, u64) {
        (self.up.bytes_written(), self.down.bytes_written())
    }

    /// Bytes read but not yet written, both ways (lost if the connection is aborted now).
    pub(crate) fn buffered(&self) -> usize {
        self.up.buffered() + self.down.buffered()
    }

    /// What the sockets' events said before the directions existed: a source that had no
    /// readable event since it was registered holds nothing (epoll reports bytes queued at
    /// registration at once, and each later arrival), so its direction does not start with a
    /// read that would answer EAGAIN. Adopted connections do not call this: their sockets
    /// were registered just now and their directions start ready.
    pub(crate) fn start_from(&mut self, client: Seen, upstream: Seen) {
        for (direction, seen) in [(&mut self.up, client), (&mut self.down, upstream)] {
            if seen.closing {
                direction.source_closing();
            } else if !seen.readable {
                direction.source_drained();
            }
        }
    }

    /// Readiness of the client socket; `read_closed`: the client announced its end of stream.
    pub(crate) fn on_client_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if read_closed {
            self.up.source_closing();
        } else if readable {
            self.up.source_ready();
        }
        if writable {
            self.down.destination_ready();
        }
    }

    /// Readiness of the upstream socket; `read_closed`: the upstream announced its end of
    /// stream.
    pub(crate) fn on_upstream_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if read_closed {
            self.down.source_closing();
        } else if readable {
            self.down.source_ready();
        }
        if writable {
            self.up.destination_ready();
        }
    }

    /// The next idle, half-close, low-water flush or rate-limit deadline (a direction waiting
    /// for its rate limit is woken then: the worker pumps after every deadline).
    pub(crate) fn deadline(&self, options: &ConnectionOptions) -> Instant {
        let idle = deadline(self.last_activity, options.idle_timeout);
        let timeout = match self.half_closed_at {
            Some(at) => idle.min(deadline(
                at.max(self.last_activity),
                options.half_close_timeout,
            )),
            None => idle,
        };
        self.low_water
            .iter()
            .filter_map(|lw| lw.flush_at)
            .chain(self.throttles.iter().filter_map(Throttle::waiting_until))
            .fold(timeout, Instant::min)
    }

    /// A deadline passed: flush a low-water mark, or end the connection on a timeout.
    pub(crate) fn on_deadline(
        &mut self,
        now: Instant,
        options: &ConnectionOptions,
    ) -> ControlFlow<CloseReason> {
        if self.low_water[0].start_flush(now) {
            self.up.source_ready();
        }
        if self.low_water[1].start_flush(now) {
            self.down.source_ready();
        }
        if let Some(at) = self.half_closed_at
            && now >= deadline(at.max(self.last_activity), options.half_close_timeout)
        {
            return ControlFlow::Break(CloseReason::HalfCloseTimeout);
        }
        if now >= deadline(self.last_activity, options.idle_timeout) {
            return ControlFlow::Break(CloseReason::IdleTimeout);
        }
        ControlFlow::Continue(())
    }

    /// Gives the buffers back to the pool.
    pub(crate) fn release_buffers(&mut self, pool: &mut BufferPool, pipe_size: usize) {
        for slot in [&mut self.up_buffer, &mut self.down_buffer] {
            if let Some(buffer) = slot.take() {
                pool.release(buffer, pipe_size);
            }
        }
    }

    /// Moves bytes until both directions wait, the connection ends, or `budget` operations
    /// have been spent.
    pub(crate) fn pump(
        &mut self,
        client: &TcpStream,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        mut budget: usize,
    ) -> Pump {
        let before = self.bytes_written();
        let read_before = (self.up.bytes_read(), self.down.bytes_read());
        let mut by_splice = 0u64;
        let mut by_copy = 0u64;
        let result = 'pump: loop {
            if budget == 0 {
                break Pump::Again;
            }
            let mut progressed = false;
            for way in [Way::Up, Way::Down] {
                match self.step(client, ctx, who, way) {
                    StepDone::Nothing => {}
                    StepDone::Op { written, spliced } => {
                        progressed = true;
                        budget = budget.saturating_sub(1);
                        if spliced {
                            by_splice += written;
                        } else {
                            by_copy += written;
                        }
                    }
                    StepDone::SpliceUnsupported(error) => {
                        if let ControlFlow::Break(reason) = self.fall_back_to_copy(ctx, who, &error)
                        {
                            break 'pump Pump::Close(reason);
                        }
                        progressed = true;
                    }
                }
            }
            if let Some(reason) = self.finished() {
                break Pump::Close(reason);
            }
            if !progressed {
                break Pump::Idle;
            }
        };
        self.low_water[0].finish_flush(client, self.up.bytes_read() != read_before.0);
        self.low_water[1].finish_flush(&self.upstream, self.down.bytes_read() != read_before.1);
        let (up, down) = self.bytes_written();
        let (up, down) = (up - before.0, down - before.1);
        if up + down > 0 {
            self.last_activity = ctx.now;
            let stats = who.route.stats();
            count(ctx.global, stats, |s| &s.bytes_client_to_upstream, up);
            count(ctx.global, stats, |s| &s.bytes_upstream_to_client, down);
            count(ctx.global, stats, |s| &s.bytes_spliced, by_splice);
            count(ctx.global, stats, |s| &s.bytes_copied, by_copy);
        }
        #[cfg(feature = "fault-injection")]
        if let Some(limit) = who.route.options.panic_after_bytes
            && self.up.bytes_written() + self.down.bytes_written() >= limit
        {
            panic!("injected panic after {limit} bytes (feature fault-injection)");
        }
        if self.half_closed_at.is_none() && (self.up.is_finished() != self.down.is_finished()) {
            self.half_closed_at = Some(ctx.now);
        }
        result
    }

    /// Performs the operation one direction wants next.
    fn step(
        &mut self,
        client: &TcpStream,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        way: Way,
    ) -> StepDone {
        let [handover_up, handover_down] = &mut self.handover;
        let [throttle_up, throttle_down] = &mut self.throttles;
        let (direction, slot, source, destination, error, low_water, handover, throttle) = match way
        {
            Way::Up => (
                &mut self.up,
                &mut self.up_buffer,
                client,
                &self.upstream,
                &mut self.last_error_up,
                &mut self.low_water[0],
                handover_up,
                throttle_up,
            ),
            Way::Down => (
                &mut self.down,
                &mut self.down_buffer,
                &self.upstream,
                client,
                &mut self.last_error_down,
                &mut self.low_water[1],
                handover_down,
                throttle_down,
            ),
        };
        let options = &who.route.options;
        let mut env = StepEnv {
            pool: ctx.pool,
            splice: self.splice,
            pipe_size: options.pipe_size,
            copy_size: options.copy_buffer_size,
            spliced_any: &mut self.spliced_any,
            degraded: None,
            error,
            low_water,
            low_water_mark: options.bulk_low_water,
            now: ctx.now,
            handover,
            throttle,
            waiting: None,
            paced: false,
        };
        let done = step_direction(direction, slot, source, destination, &mut env);
        if let Some((until, held_back)) = env.waiting
            && held_back > 0
        {
            let stats = who.route.stats();
            let waited = until.saturating_duration_since(ctx.now).as_micros() as u64;
            count(ctx.global, stats, |s| &s.throttled_micros, waited);
            count(ctx.global, stats, |s| &s.bytes_held_back, held_back);
        }
        if env.paced {
            count(ctx.global, who.route.stats(), |s| &s.kernel_paced, 1);
        }
        if let Some((kind, why)) = env.degraded {
            count(ctx.global, who.route.stats(), |s| &s.pipe_degradations, 1);
            // log: rate limited (once a minute per worker; should_log_degradation).
            if ctx.pool.should_log_degradation(ctx.now) {
                let what = match kind {
                    Degradation::SmallerPipe => "smaller pipe",
                    Degradation::CopyBuffer => "copy buffer instead of a pipe",
                };
                tracing::warn!(
                    route = %who.route.name,
                    "{what}: {why} (logged once a minute; see the pipe_degradations counter)"
                );
            }
        }
        done
    }

    /// Splice was refused before any byte of this connection entered a pipe: copy instead, or
    /// end the connection if the route requires splice. Never silent.
    fn fall_back_to_copy(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: &Identity<'_>,
        error: &io::Error,
    ) -> ControlFlow<CloseReason> {
        let route = who.route;
        if route.options.require_splice {
            // log: not client input: the kernel refused splice for the route's sockets.
            tracing::error!(
                target: "spliceway::conn",
                id = who.id,
                route = %route.name,
                "splice unsupported for this connection ({error}) and splice is required: resetting it"
            );
            return ControlFlow::Break(CloseReason::SpliceUnsupported(error.to_string()));
        }
        self.splice = false;
        self.release_buffers(ctx.pool, route.options.pipe_size);
        count(ctx.global, route.stats(), |s| &s.splice_fallbacks, 1);
        // log: not client input: the kernel refused splice for the route's sockets.
        tracing::warn!(
            target: "spliceway::conn",
            id = who.id,
            route = %route.name,
            client = %who.client,
            "splice unsupported for this connection ({error}): falling back to copy mode"
        );
        ControlFlow::Continue(())
    }

    /// A reset by the client (`client_side`) or the upstream: after that side's own end of
    /// stream was passed on whole (its direction shut), or a real abort.
    pub(crate) fn reset_by(&self, client_side: bool) -> CloseReason {
        let own = if client_side { &self.up } else { &self.down };
        match (client_side, own.phase() == Phase::Shut) {
            (true, true) => CloseReason::ClientResetAfterEnd,
            (true, false) => CloseReason::ClientReset,
            (false, true) => CloseReason::UpstreamResetAfterEnd,
            (false, false) => CloseReason::UpstreamReset,
        }
    }

    /// How the connection ended, if it has.
    fn finished(&self) -> Option<CloseReason> {
        for (direction, way, error) in [
            (&self.up, Way::Up, &self.last_error_up),
            (&self.down, Way::Down, &self.last_error_down),
        ] {
            if let Some(abort) = direction.abort_reason() {
                let client_side = matches!(
                    (way, abort.end),
                    (Way::Up, End::Source) | (Way::Down, End::Destination)
                );
                let message = error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "failed".to_string());
                return Some(match (client_side, abort.reset) {
                    (_, true) => self.reset_by(client_side),
                    (true, false) => CloseReason::ClientError(message),
                    (false, false) => CloseReason::UpstreamError(message),
                });
            }
        }
        if self.up.phase() == Phase::Shut && self.down.phase() == Phase::Shut {
            return Some(CloseReason::Completed);
        }
        None
    }
}
