//! Signal handling for the long-running commands, on a thread of its own.
//!
//! - SIGINT / SIGTERM: graceful shutdown (stop accepting, drain); a second one resets what is
//!   left and stops at once. Each one acted on is passed on to the process an upgrade started,
//!   if any (`succession.rs`). A process an upgrade started counts those its predecessor passes
//!   on apart from the ones sent to it directly: only two of the same kind reset, so one
//!   `systemctl stop` that reaches both processes drains, while an operator who sends SIGTERM
//!   twice (to either process) still resets.
//! - SIGUSR1 / SIGUSR2: more / less log detail.
//! - SIGHUP: reload the configuration, when the command has one (`spliceway run`).
//!
//! The library installs no signal handler (it has no process-global state); this is the
//! program's job.

use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::{Handle, SignalsInfo};

use crate::logging::LogControl;
use crate::succession::Successor;

/// What the program does on each signal.
pub trait SignalActions: Send + 'static {
    /// First SIGINT/SIGTERM.
    fn shutdown(&mut self);
    /// Second SIGINT/SIGTERM.
    fn shutdown_now(&mut self);
    /// SIGHUP.
    fn reload(&mut self) {
        tracing::warn!("SIGHUP ignored: this command has no configuration file to reload");
    }
}

/// Stops the signal thread when dropped.
#[derive(Debug)]
pub struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This relay's place in a line of upgrades, as the signal thread needs it.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// The pid of the relay that started this one by an upgrade (`succession::predecessor`).
    pub predecessor: Option<i32>,
    /// The process this relay's upgrade started, if any.
    pub successor: Arc<Successor>,
}

/// Where a stop signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Anyone but the predecessor: an operator, systemd, the kernel (a terminal's Ctrl-C).
    Direct,
    /// The predecessor, passing on a stop it acted on.
    Predecessor(i32),
}

/// What a stop signal does, given those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first: drain.
    Drain,
    /// The second (or later) of its kind: reset what is left.
    Reset,
    /// Draining already, and the first of its kind: one stop that reached this process twice
    /// (directly and passed on), not a request to reset.
    AlreadyDraining,
}

/// Stop signals counted by where they came from.
#[derive(Debug, Default)]
struct StopTally {
    direct: u32,
    passed_on: u32,
}

impl StopTally {
    fn count(&mut self, sender: Sender) -> Step {
        let first = self.direct + self.passed_on == 0;
        let of_its_kind = match sender {
            Sender::Direct => &mut self.direct,
            Sender::Predecessor(_) => &mut self.passed_on,
        };
        *of_its_kind += 1;
        match (first, *of_its_kind) {
            (true, _) => Step::Drain,
            (false, 1) => Step::AlreadyDraining,
            (false, _) => Step::Reset,
        }
    }
}

/// Starts the signal thread.
pub fn spawn(
    mut actions: impl SignalActions,
    log: LogControl,
    lineage: Lineage,
) -> anyhow::Result<SignalThread> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("spliceway-signals".into())
        .spawn(move || {
            let mut stops = StopTally::default();
            for origin in signals.forever() {
                let signal = origin.signal;
                match signal {
                    SIGINT | SIGTERM => {
                        let sender = match origin.process.map(|p| p.pid) {
                            Some(pid) if Some(pid) == lineage.predecessor => {
                                Sender::Predecessor(pid)
                            }
                            _ => Sender::Direct,
                        };
                        let heard = describe(signal, sender);
                        match stops.count(sender) {
                            Step::Drain => {
                                tracing::info!(
                                    "{heard}: draining connections (send it again to stop at \
                                     once)"
                                );
                                actions.shutdown();
                            }
                            Step::Reset => {
                                tracing::warn!("{heard}: resetting open connections");
                                actions.shutdown_now();
                            }
                            Step::AlreadyDraining => {
                                tracing::info!(
                                    "{heard}: already draining (one stop that reached this \
                                     process both directly and through the relay it replaced); \
                                     a second signal of the same kind resets"
                                );
                                continue;
                            }
                        }
                        lineage.successor.pass_on(signal);
                    }
                    SIGUSR1 => log.raise(),
                    SIGUSR2 => log.lower(),
                    SIGHUP => actions.reload(),
                    _ => {}
                }
            }
        })?;
    Ok(SignalThread {
        handle,
        thread: Some(thread),
    })
}

/// "signal SIGTERM", with who passed it on if the predecessor did.
fn describe(signal: i32, sender: Sender) -> String {
    match sender {
        Sender::Direct => format!("signal {}", name(signal)),
        Sender::Predecessor(pid) => format!(
            "signal {} (passed on by pid {pid}, the relay this one replaced)",
            name(signal)
        ),
    }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(senders: &[Sender]) -> Vec<Step> {
        let mut tally = StopTally::default();
        senders.iter().map(|&s| tally.count(s)).collect()
    }

    const OLD: Sender = Sender::Predecessor(41);

    #[test]
    fn two_direct_signals_reset_as_before() {
        use Sender::Direct;
        assert_eq!(
            steps(&[Direct, Direct, Direct]),
            [Step::Drain, Step::Reset, Step::Reset]
        );
    }

    /// `systemctl stop`: one SIGTERM to each process of the unit, and the old one passes its
    /// own on; in either order the new process only drains.
    #[test]
    fn one_direct_and_one_passed_on_drain() {
        use Sender::Direct;
        assert_eq!(steps(&[Direct, OLD]), [Step::Drain, Step::AlreadyDraining]);
        assert_eq!(steps(&[OLD, Direct]), [Step::Drain, Step::AlreadyDraining]);
    }

    /// An operator who signals the old process twice resets the new one too (the old one
    /// passes both on), and one who signals both twice resets.
    #[test]
    fn two_of_the_same_kind_reset() {
        use Sender::Direct;
        assert_eq!(steps(&[OLD, OLD]), [Step::Drain, Step::Reset]);
        assert_eq!(
            steps(&[Direct, OLD, OLD]),
            [Step::Drain, Step::AlreadyDraining, Step::Reset]
        );
        assert_eq!(
            steps(&[OLD, Direct, Direct]),
            [Step::Drain, Step::AlreadyDraining, Step::Reset]
        );
    }

    #[test]
    fn a_passed_on_signal_names_who_passed_it() {
        assert_eq!(describe(SIGTERM, Sender::Direct), "signal SIGTERM");
        assert_eq!(
            describe(SIGINT, OLD),
            "signal SIGINT (passed on by pid 41, the relay this one replaced)"
        );
    }
}
