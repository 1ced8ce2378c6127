//! Moving bytes: the pump that performs both directions' steps within a budget, the fallback
//! from splice to copy, and deciding how a relaying connection ended.

use std::io;
use std::ops::ControlFlow;

use super::*;
use crate::direction::{End, Phase};
use crate::direction_io::{StepDone, StepEnv, step_direction};

impl Connection {
    /// Moves bytes until both directions wait, the connection ends, or `budget` operations
    /// have been spent.
    pub(crate) fn pump(&mut self, ctx: &mut Ctx<'_>, mut budget: usize) -> Pump {
        if !self.is_relaying() {
            return Pump::Idle;
        }
        let before = (self.up.bytes_written(), self.down.bytes_written());
        let read_before = (self.up.bytes_read(), self.down.bytes_read());
        let mut by_splice = 0u64;
        let mut by_copy = 0u64;
        let result = 'pump: loop {
            if budget == 0 {
                break Pump::Again;
            }
            let mut progressed = false;
            for way in [Way::Up, Way::Down] {
                match self.step(ctx, way) {
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
                        if let ControlFlow::Break(reason) = self.fall_back_to_copy(ctx, &error) {
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
        if let Some(upstream) = &self.upstream {
            self.low_water[0].finish_flush(&self.client, self.up.bytes_read() != read_before.0);
            self.low_water[1].finish_flush(upstream, self.down.bytes_read() != read_before.1);
        }
        let up = self.up.bytes_written() - before.0;
        let down = self.down.bytes_written() - before.1;
        if up + down > 0 {
            self.last_activity = ctx.now;
            let stats = self.route.stats();
            count(ctx.global, stats, |s| &s.bytes_client_to_upstream, up);
            count(ctx.global, stats, |s| &s.bytes_upstream_to_client, down);
            count(ctx.global, stats, |s| &s.bytes_spliced, by_splice);
            count(ctx.global, stats, |s| &s.bytes_copied, by_copy);
        }
        if self.half_closed_at.is_none() && (self.up.is_finished() != self.down.is_finished()) {
            self.half_closed_at = Some(ctx.now);
        }
        result
    }

    /// Performs the operation one direction wants next.
    fn step(&mut self, ctx: &mut Ctx<'_>, way: Way) -> StepDone {
        let Some(upstream) = self.upstream.as_ref() else {
            return StepDone::Nothing;
        };
        let (direction, slot, source, destination, error, low_water) = match way {
            Way::Up => (
                &mut self.up,
                &mut self.up_buffer,
                &self.client,
                upstream,
                &mut self.last_error_up,
                &mut self.low_water[0],
            ),
            Way::Down => (
                &mut self.down,
                &mut self.down_buffer,
                upstream,
                &self.client,
                &mut self.last_error_down,
                &mut self.low_water[1],
            ),
        };
        let options = &self.route.options;
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
        };
        let done = step_direction(direction, slot, source, destination, &mut env);
        if let Some((kind, why)) = env.degraded {
            count(ctx.global, self.route.stats(), |s| &s.pipe_degradations, 1);
            if ctx.pool.should_log_degradation(ctx.now) {
                let what = match kind {
                    Degradation::SmallerPipe => "smaller pipe",
                    Degradation::CopyBuffer => "copy buffer instead of a pipe",
                };
                tracing::warn!(
                    route = %self.route.name,
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
        error: &io::Error,
    ) -> ControlFlow<CloseReason> {
        if self.route.options.require_splice {
            tracing::error!(
                target: "spliceway::conn",
                id = self.id,
                route = %self.route.name,
                "splice unsupported for this connection ({error}) and splice is required: resetting it"
            );
            return ControlFlow::Break(CloseReason::SpliceUnsupported(error.to_string()));
        }
        self.splice = false;
        let pipe_size = self.route.options.pipe_size;
        for slot in [&mut self.up_buffer, &mut self.down_buffer] {
            if let Some(buffer) = slot.take() {
                ctx.pool.release(buffer, pipe_size);
            }
        }
        count(ctx.global, self.route.stats(), |s| &s.splice_fallbacks, 1);
        tracing::warn!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            "splice unsupported for this connection ({error}): falling back to copy mode"
        );
        ControlFlow::Continue(())
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
                    (true, true) => CloseReason::ClientReset,
                    (true, false) => CloseReason::ClientError(message),
                    (false, true) => CloseReason::UpstreamReset,
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
