//! Model-based test of the per-direction state machine (`spliceway::internal::direction::Direction`).
//!
//! proptest drives a [`Direction`] with random interleavings of readiness events and of the
//! outcomes of the steps it asks for, answered by a small simulated world:
//!
//! - a **source** socket that receives its `total` bytes over time (and, in most cases, an end of
//!   stream after them) and fires a readiness edge each time something arrives (the end of
//!   stream's edge carries `EPOLLRDHUP`: [`Direction::source_closing`]); a read that took
//!   everything the socket held while the pipe still had a free slot is reported as drained
//!   ([`Direction::source_drained`]), as the I/O half does after a short read;
//! - a **pipe** of `capacity` bytes that also holds at most `slots` segments (one per read), so
//!   it can refuse bytes before it is full in bytes — the "pipe full in page slots" `EAGAIN`;
//! - a **destination** socket whose send buffer frees space over time, firing an edge each time.
//!
//! The world is honest the way edge-triggered epoll is: a read answers "would block" only if
//! the source holds nothing (or the pipe has no free slot), a write only if the destination has
//! no space, and every change that makes an end ready again comes with an event. Faults (resets
//! and failures on either end, shutdown failures, aborts from outside) strike at random moments.
//!
//! After every step the test checks the machine against the world and against a reference
//! model that follows the rules of `docs/architecture.md` (see `Model`):
//!
//! 1. the step is the one the reference model takes; `Read` asks for exactly the free room
//!    (> 0), `Write` for exactly the bytes buffered (> 0);
//! 2. `buffered <= capacity`, `bytes_written <= bytes_read`,
//!    `bytes_read - bytes_written == buffered`, and the counters equal what the world saw
//!    leave the source and reach the destination;
//! 3. `Shutdown` is asked for only after end of stream with nothing buffered;
//! 4. once finished (shut or aborted) it only answers `Finished`, and late outcomes change
//!    nothing;
//! 5. no busy loop: between two readiness events, at most [`MAX_FUTILE_STEPS`] consecutive steps
//!    answer "would block" without any byte, end of stream or shutdown in between;
//! 6. liveness (no lost readiness): after the chaotic part, the world delivers every remaining
//!    byte and the end of stream and the destination accepts everything, with only the events
//!    those changes fire; the direction must then reach `Shut` (or, with no end of stream, wait
//!    with nothing buffered) with bytes out == bytes in, within a bounded number of steps.

use std::collections::VecDeque;

use proptest::prelude::*;
use spliceway::internal::direction::{Direction, End, Phase, ReadOutcome, Step, WriteOutcome};

/// Consecutive "would block" answers allowed between two events (see property 5). The rules
/// allow at most two: a stalled read, then a blocked write.
const MAX_FUTILE_STEPS: usize = 3;

/// One thing that happens: a change in the world (which fires an event), a spurious event, an
/// abort from outside, or the loop performing the step the direction asks for.
#[derive(Debug, Clone)]
enum Action {
    /// Up to `n` more of the source's bytes arrive (a readable edge).
    Arrive(usize),
    /// The source's end of stream arrives, if all its bytes have (a readable edge).
    ArriveEof,
    /// The destination's peer read `n` bytes: that much send-buffer space frees (a writable
    /// edge).
    FreeSpace(usize),
    /// An event that changed nothing (epoll may report readiness spuriously).
    SpuriousSource,
    SpuriousDestination,
    /// The loop performs the step asked for: `pick` chooses how many bytes move, `fault` (per
    /// mille, against the case's fault rate) whether the operation fails instead.
    Step {
        pick: usize,
        fault: u16,
    },
    /// A timeout, or the other direction failing, aborts this one.
    AbortFromOutside {
        source: bool,
        reset: bool,
    },
    /// The I/O half hands the direction a buffer of another size (only when it is empty: a
    /// buffer taken from the pool, possibly a degraded smaller one).
    NewBuffer(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (1usize..=40).prop_map(Action::Arrive),
        1 => Just(Action::ArriveEof),
        3 => (1usize..=40).prop_map(Action::FreeSpace),
        1 => Just(Action::SpuriousSource),
        1 => Just(Action::SpuriousDestination),
        12 => (any::<usize>(), 0u16..1000).prop_map(|(pick, fault)| Action::Step { pick, fault }),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(source, reset)| Action::AbortFromOutside { source, reset }),
        1 => (1usize..=64).prop_map(Action::NewBuffer),
    ]
}

/// A case: the world's shape and what happens in it.
#[derive(Debug, Clone)]
struct Case {
    capacity: usize,
    slots: usize,
    total: u64,
    eof: bool,
    /// Per mille of steps that fail, and of aborts from outside that are applied.
    fault_rate: u16,
    actions: Vec<Action>,
}

fn case(fault_rates: &'static [u16]) -> impl Strategy<Value = Case> {
    (
        1usize..=64,
        1usize..=6,
        0u64..=400,
        prop::bool::weighted(0.85),
        prop::sample::select(fault_rates),
        prop::collection::vec(action(), 0..300),
    )
        .prop_map(|(capacity, slots, total, eof, fault_rate, actions)| Case {
            capacity,
            slots,
            total,
            eof,
            fault_rate,
            actions,
        })
}

/// The simulated sockets and pipe.
#[derive(Debug)]
struct World {
    total: u64,
    eof: bool,
    /// Bytes that reached the source socket.
    arrived: u64,
    /// Bytes read out of the source (into the pipe).
    taken: u64,
    eof_arrived: bool,
    eof_taken: bool,
    /// Segments in the pipe, oldest first.
    pipe: VecDeque<usize>,
    slots: usize,
    /// Free space in the destination's send buffer.
    space: u64,
    /// Bytes that reached the destination.
    delivered: u64,
    shut: bool,
}

impl World {
    fn pipe_bytes(&self) -> usize {
        self.pipe.iter().sum()
    }

    /// Removes `n` bytes from the front of the pipe.
    fn drain_pipe(&mut self, mut n: usize) {
        while n > 0 {
            let front = self
                .pipe
                .front_mut()
                .expect("draining more than the pipe holds");
            let take = n.min(*front);
            *front -= take;
            n -= take;
            if *front == 0 {
                self.pipe.pop_front();
            }
        }
    }
}

/// The reference model: the rules of `docs/architecture.md`, written out plainly.
#[derive(Debug)]
struct Model {
    phase: Phase,
    source_ready: bool,
    destination_ready: bool,
    read_stalled: bool,
    /// The end of stream's event (`EPOLLRDHUP`) was seen.
    closing: bool,
    buffered: usize,
    capacity: usize,
}

impl Model {
    fn new(capacity: usize) -> Self {
        Model {
            phase: Phase::Open,
            source_ready: true,
            destination_ready: true,
            read_stalled: false,
            closing: false,
            buffered: 0,
            capacity,
        }
    }

    /// A short read took everything: wait for the next event, unless the end was announced.
    fn source_drained(&mut self) {
        if !self.closing {
            self.source_ready = false;
        }
    }

    fn next_step(&self) -> Step {
        match self.phase {
            Phase::Shut | Phase::Aborted => Step::Finished,
            // Write first; read only while there is room and no slot stall; else wait.
            Phase::Open if self.buffered > 0 && self.destination_ready => {
                Step::Write { len: self.buffered }
            }
            Phase::Open
                if self.source_ready && !self.read_stalled && self.buffered < self.capacity =>
            {
                Step::Read {
                    room: self.capacity - self.buffered,
                }
            }
            Phase::Open => Step::Wait,
            Phase::Draining if self.buffered == 0 => Step::Shutdown,
            Phase::Draining if self.destination_ready => Step::Write { len: self.buffered },
            Phase::Draining => Step::Wait,
        }
    }

    fn abort(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Draining) {
            self.phase = Phase::Aborted;
        }
    }

    fn on_read(&mut self, outcome: ReadOutcome) {
        match outcome {
            ReadOutcome::Moved(n) => self.buffered += n,
            // Maybe the pipe is full in slots, not the socket empty: keep the latch, pause.
            ReadOutcome::WouldBlock if self.buffered > 0 => self.read_stalled = true,
            ReadOutcome::WouldBlock => self.source_ready = false,
            ReadOutcome::EndOfStream => {
                self.source_ready = false;
                self.phase = Phase::Draining;
            }
            ReadOutcome::Failed { .. } => self.abort(),
        }
    }

    fn on_write(&mut self, outcome: WriteOutcome) {
        match outcome {
            WriteOutcome::Moved(n) => {
                self.buffered -= n;
                self.read_stalled = false;
            }
            WriteOutcome::WouldBlock => self.destination_ready = false,
            WriteOutcome::Failed { .. } => self.abort(),
        }
    }

    fn on_shutdown(&mut self, outcome: WriteOutcome) {
        match outcome {
            WriteOutcome::Failed { .. } => self.abort(),
            _ => self.phase = Phase::Shut,
        }
    }
}

/// Runs a case; `Err` describes the first broken property.
struct Run {
    d: Direction,
    model: Model,
    world: World,
    fault_rate: u16,
    /// Consecutive "would block" answers since the last event or progress.
    futile: usize,
    /// Every step taken, for the failure message.
    trace: Vec<String>,
}

impl Run {
    fn new(case: &Case) -> Self {
        Run {
            d: Direction::new(case.capacity),
            model: Model::new(case.capacity),
            world: World {
                total: case.total,
                eof: case.eof,
                arrived: 0,
                taken: 0,
                eof_arrived: false,
                eof_taken: false,
                pipe: VecDeque::new(),
                slots: case.slots,
                space: 0,
                delivered: 0,
                shut: false,
            },
            fault_rate: case.fault_rate,
            futile: 0,
            trace: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> Result<(), String> {
        let tail: Vec<&String> = self.trace.iter().rev().take(25).collect();
        let tail: Vec<&String> = tail.into_iter().rev().collect();
        Err(format!(
            "{what}\n  machine: {:?}\n  model: {:?}\n  world: {:?}\n  last steps:\n    {}",
            self.d,
            self.model,
            self.world,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n    ")
        ))
    }

    fn source_event(&mut self) {
        self.d.source_ready();
        self.model.source_ready = true;
        self.futile = 0;
    }

    /// The end of stream arrived: a readable edge with `EPOLLRDHUP`.
    fn closing_event(&mut self) {
        self.d.source_closing();
        self.model.closing = true;
        self.model.source_ready = true;
        self.futile = 0;
    }

    fn destination_event(&mut self) {
        self.d.destination_ready();
        self.model.destination_ready = true;
        self.futile = 0;
    }

    fn apply(&mut self, action: &Action) -> Result<(), String> {
        self.trace.push(format!("{action:?}"));
        match *action {
            Action::Arrive(n) => {
                let n = (n as u64).min(self.world.total - self.world.arrived);
                if n > 0 {
                    self.world.arrived += n;
                    self.source_event();
                }
            }
            Action::ArriveEof => {
                let w = &mut self.world;
                if w.eof && !w.eof_arrived && w.arrived == w.total {
                    w.eof_arrived = true;
                    self.closing_event();
                }
            }
            Action::FreeSpace(n) => {
                self.world.space += n as u64;
                self.destination_event();
            }
            Action::SpuriousSource => self.source_event(),
            Action::SpuriousDestination => self.destination_event(),
            Action::AbortFromOutside { source, reset } => {
                if self.fault_rate > 0 {
                    let end = if source {
                        End::Source
                    } else {
                        End::Destination
                    };
                    self.d.abort(end, reset);
                    self.model.abort();
                }
            }
            Action::NewBuffer(capacity) => {
                if self.d.buffered() == 0 && self.d.phase() == Phase::Open {
                    self.d.set_capacity(capacity);
                    self.model.capacity = capacity;
                }
            }
            Action::Step { pick, fault } => {
                self.step(pick, fault < self.fault_rate)?;
            }
        }
        self.check()
    }

    /// Performs the step the direction asks for, answered by the world.
    fn step(&mut self, pick: usize, fail: bool) -> Result<(), String> {
        let step = self.d.next_step();
        let expected = self.model.next_step();
        if step != expected {
            return self.fail(format!(
                "the machine asked for {step:?} where the rules say {expected:?}"
            ));
        }
        let (before_read, before_written) = (self.d.bytes_read(), self.d.bytes_written());
        let finished = self.d.is_finished();
        let answer = match step {
            Step::Read { room } => {
                if room == 0 || room != self.d.capacity() - self.d.buffered() {
                    return self.fail(format!("Read asks for {room}, not the free room"));
                }
                let w = &mut self.world;
                let mut drained = false;
                let outcome = if fail {
                    ReadOutcome::Failed {
                        reset: pick.is_multiple_of(2),
                    }
                } else if w.pipe.len() >= w.slots {
                    // The pipe is full in slots: EAGAIN although the socket may hold bytes.
                    ReadOutcome::WouldBlock
                } else if w.arrived > w.taken {
                    let n = 1 + pick % room.min((w.arrived - w.taken) as usize);
                    w.taken += n as u64;
                    w.pipe.push_back(n);
                    // Less than asked, the socket empty, a slot still free: the I/O half
                    // knows the source was drained (whether or not its end is queued).
                    drained = n < room && w.taken == w.arrived && w.pipe.len() < w.slots;
                    ReadOutcome::Moved(n)
                } else if w.eof_arrived {
                    w.eof_taken = true;
                    ReadOutcome::EndOfStream
                } else {
                    ReadOutcome::WouldBlock
                };
                self.futile = match outcome {
                    ReadOutcome::WouldBlock => self.futile + 1,
                    _ => 0,
                };
                self.d.on_read(outcome);
                self.model.on_read(outcome);
                if drained {
                    self.d.source_drained();
                    self.model.source_drained();
                }
                format!("{outcome:?}{}", if drained { " (drained)" } else { "" })
            }
            Step::Write { len } => {
                if len == 0 || len != self.d.buffered() {
                    return self.fail(format!("Write asks for {len}, not the bytes buffered"));
                }
                let w = &mut self.world;
                let outcome = if fail {
                    WriteOutcome::Failed {
                        reset: pick.is_multiple_of(2),
                    }
                } else if w.space == 0 {
                    WriteOutcome::WouldBlock
                } else {
                    let n = 1 + pick % len.min(w.space as usize);
                    w.space -= n as u64;
                    w.delivered += n as u64;
                    w.drain_pipe(n);
                    WriteOutcome::Moved(n)
                };
                self.futile = match outcome {
                    WriteOutcome::WouldBlock => self.futile + 1,
                    _ => 0,
                };
                self.d.on_write(outcome);
                self.model.on_write(outcome);
                format!("{outcome:?}")
            }
            Step::Shutdown => {
                if self.d.buffered() != 0 || !self.world.eof_taken {
                    return self.fail(format!(
                        "Shutdown asked with {} bytes buffered, end of stream read: {}",
                        self.d.buffered(),
                        self.world.eof_taken
                    ));
                }
                let w = &mut self.world;
                let outcome = if fail {
                    WriteOutcome::Failed {
                        reset: pick.is_multiple_of(2),
                    }
                } else {
                    w.shut = true;
                    WriteOutcome::Moved(0)
                };
                self.futile = 0;
                self.d.on_shutdown(outcome);
                self.model.on_shutdown(outcome);
                format!("{outcome:?}")
            }
            Step::Wait => "-".to_string(),
            Step::Finished => {
                if !finished {
                    return self.fail("Finished while neither shut nor aborted".into());
                }
                // Late outcomes (and events) must change nothing.
                self.d.on_read(ReadOutcome::Moved(1));
                self.d.on_read(ReadOutcome::EndOfStream);
                self.d.on_write(WriteOutcome::Moved(1));
                self.d.on_shutdown(WriteOutcome::Moved(0));
                self.d.abort(End::Source, true);
                self.d.source_ready();
                self.d.destination_ready();
                if (self.d.bytes_read(), self.d.bytes_written()) != (before_read, before_written)
                    || self.d.next_step() != Step::Finished
                {
                    return self.fail("a finished direction changed after late outcomes".into());
                }
                "-".to_string()
            }
        };
        self.trace.push(format!("  {step:?} -> {answer}"));
        if self.futile > MAX_FUTILE_STEPS {
            return self.fail(format!(
                "busy loop: {} consecutive steps would block without an event in between",
                self.futile
            ));
        }
        Ok(())
    }

    /// The properties that hold after every action.
    fn check(&self) -> Result<(), String> {
        let d = &self.d;
        let w = &self.world;
        if d.buffered() > d.capacity() {
            return self.fail("more bytes buffered than the buffer holds".into());
        }
        if d.bytes_written() > d.bytes_read()
            || d.bytes_read() - d.bytes_written() != d.buffered() as u64
        {
            return self.fail("bytes_read - bytes_written != buffered".into());
        }
        if d.phase() != self.model.phase {
            return self.fail(format!(
                "phase {:?}, the rules say {:?}",
                d.phase(),
                self.model.phase
            ));
        }
        if d.phase() == Phase::Aborted {
            // Counters froze at the abort; the world may have moved on without them.
            return Ok(());
        }
        if d.bytes_read() != w.taken || d.bytes_written() != w.delivered {
            return self.fail(format!(
                "counters {}/{} differ from the world's {}/{}",
                d.bytes_read(),
                d.bytes_written(),
                w.taken,
                w.delivered
            ));
        }
        if d.buffered() != w.pipe_bytes() {
            return self.fail("buffered differs from the bytes in the pipe".into());
        }
        if d.source_ended() != w.eof_taken || (d.phase() == Phase::Shut) != w.shut {
            return self.fail("end of stream or shutdown not where the world has it".into());
        }
        Ok(())
    }

    /// Liveness: the world stops refusing (all bytes and the end of stream arrive, the
    /// destination takes everything) and fires only the events those changes fire. The
    /// direction must finish the transfer within a bounded number of steps.
    fn calm_down(&mut self, seed: u64) -> Result<(), String> {
        if self.d.is_finished() {
            return Ok(());
        }
        self.trace
            .push("--- calm: everything arrives, the destination takes all".into());
        let w = &mut self.world;
        let remaining = (w.total - w.taken) as usize + w.pipe_bytes();
        let source_changes = w.arrived < w.total || (w.eof && !w.eof_arrived);
        let eof_arrives = w.eof && !w.eof_arrived;
        w.arrived = w.total;
        w.eof_arrived = w.eof;
        w.space = u64::MAX / 2;
        if eof_arrives {
            self.closing_event();
        } else if source_changes {
            self.source_event();
        }
        self.destination_event();
        let bound = 4 * (remaining + 2) + 8;
        let mut rng = seed | 1;
        for _ in 0..bound {
            if self.d.is_finished() {
                break;
            }
            if self.d.next_step() == Step::Wait {
                break;
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            self.step(rng as usize, false)?;
            self.check()?;
        }
        let w = &self.world;
        let done = if w.eof {
            self.d.phase() == Phase::Shut
        } else {
            self.d.next_step() == Step::Wait && self.d.buffered() == 0
        };
        if !done || self.d.bytes_written() != w.total || self.d.bytes_read() != w.total {
            return self.fail(format!(
                "not finished within {bound} steps of a calm world: phase {:?}, next {:?}, \
                 {} of {} bytes delivered (lost readiness?)",
                self.d.phase(),
                self.d.next_step(),
                self.d.bytes_written(),
                w.total
            ));
        }
        Ok(())
    }
}

fn run(case: &Case, seed: u64) -> Result<(), String> {
    let mut run = Run::new(case);
    run.check()?;
    for action in &case.actions {
        run.apply(action)?;
    }
    run.calm_down(seed)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.max(512),
        ..ProptestConfig::default()
    })]

    /// Without faults every byte and the end of stream get through, whatever the interleaving.
    #[test]
    fn delivers_everything_in_any_interleaving(case in case(&[0]), seed in any::<u64>()) {
        if let Err(e) = run(&case, seed) {
            prop_assert!(false, "{}", e);
        }
    }

    /// With resets, failures and aborts at random moments, every property still holds up to the
    /// failure, and a finished direction stays finished.
    #[test]
    fn holds_its_invariants_under_faults(case in case(&[5, 20, 80]), seed in any::<u64>()) {
        if let Err(e) = run(&case, seed) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The slot-stall rule in isolation: the pipe holds one segment, the source keeps bytes, and
/// no new event comes; writing the segment out must lead to the next read by itself.
#[test]
fn slot_stall_is_retried_without_an_event() {
    let case = Case {
        capacity: 64,
        slots: 1,
        total: 30,
        eof: true,
        fault_rate: 0,
        actions: vec![
            Action::Arrive(30),
            Action::ArriveEof,
            Action::Step { pick: 9, fault: 0 }, // read 10
            Action::Step { pick: 0, fault: 0 }, // write: no space yet, would block
            Action::Step { pick: 0, fault: 0 }, // read: slot-full EAGAIN, bytes remain
            Action::FreeSpace(100),
        ],
    };
    run(&case, 7).unwrap();
}
