//! Logs to stderr through tracing, with a verbosity that can change while running (SIGUSR1
//! raises it, SIGUSR2 lowers it, as stone does).
//!
//! Only spliceway's own lines (targets `spliceway...`: the engine, this program, the
//! configuration and benchmark crates) go past `info`; dependencies log their warnings and
//! errors only, whatever `-v` says, because their debug lines (an HTTP server's, with its
//! source paths) are noise to an operator. `RUST_LOG` still chooses anything.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Log line format: the configuration's `log_format`, which `--log-format` takes too.
pub use spliceway_config::LogFormat;

mod json;

/// Verbosity ladder: a name for messages and the filter directives. Connection events use
/// the `spliceway::conn` target: closed connections at info, accepted/connected ones at debug.
/// `spliceway` as a target admits every target that begins with it (`spliceway_config`, ...).
const LEVELS: [(&str, &str); 6] = [
    ("error", "error"),
    ("warn", "warn"),
    ("notice", "warn,spliceway=info,spliceway::conn=warn"),
    ("info", "warn,spliceway=info"),
    ("debug", "warn,spliceway=debug"),
    ("trace", "warn,spliceway=trace"),
];

/// Where the default sits on the ladder: start-up messages, warnings; no per-connection lines.
pub const DEFAULT_LEVEL: usize = 2;

/// Where `-q` puts the log, for `relay` and `run` alike: warnings and errors only.
pub const QUIET_LEVEL: usize = 1;

/// Changes the log verbosity at run time.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    level: Arc<AtomicUsize>,
    from_env: bool,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// One step more detail.
    pub fn raise(&self) {
        self.shift(1);
    }

    /// One step less detail.
    pub fn lower(&self) {
        self.shift(-1);
    }

    /// Sets an absolute level on the ladder (0 = errors only .. 5 = trace).
    pub fn set(&self, level: usize) {
        let level = level.min(LEVELS.len() - 1);
        self.level.store(level, Ordering::SeqCst);
        let _ = self.handle.reload(EnvFilter::new(LEVELS[level].1));
    }

    fn shift(&self, by: isize) {
        let current = self.level.load(Ordering::SeqCst) as isize;
        let next = (current + by).clamp(0, LEVELS.len() as isize - 1) as usize;
        self.set(next);
        tracing::warn!("log level now {} (signal)", LEVELS[next].0);
    }

    /// Whether `RUST_LOG` chose the filter (then the ladder starts from it only after a signal).
    pub fn filter_from_env(&self) -> bool {
        self.from_env
    }
}

/// Turns `-v` / `-q` counts into a ladder position.
pub fn level_from_flags(verbose: u8, quiet: u8) -> usize {
    (DEFAULT_LEVEL as isize + verbose as isize - quiet as isize).clamp(0, LEVELS.len() as isize - 1)
        as usize
}

/// Installs the subscriber. `RUST_LOG`, when set, overrides the level.
pub fn init(level: usize, format: LogFormat) -> LogControl {
    let level = level.min(LEVELS.len() - 1);
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let filter = match &env {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::new(LEVELS[level].1),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = match format {
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .event_format(json::JsonLines)
                    .with_writer(std::io::stderr),
            ),
        ),
        // Text, and any format added later.
        _ => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .with_target(false),
            ),
            None,
        ),
    };
    // A second init (tests calling main twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
    LogControl {
        handle,
        level: Arc::new(AtomicUsize::new(level)),
        from_env: env.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_move_along_the_ladder() {
        let name = |level: usize| LEVELS[level].0;
        assert_eq!(level_from_flags(0, 0), DEFAULT_LEVEL);
        assert_eq!(name(level_from_flags(1, 0)), "info");
        assert_eq!(name(level_from_flags(2, 0)), "debug");
        assert_eq!(name(level_from_flags(9, 0)), "trace");
        assert_eq!(name(level_from_flags(0, 1)), "warn");
        assert_eq!(level_from_flags(0, 1), QUIET_LEVEL);
        assert_eq!(name(level_from_flags(0, 9)), "error");
    }

    /// Issue 25: `-vvv` showed a dependency's debug lines with its source paths. Past
    /// warnings only spliceway's own targets are admitted (`tests/relay_cmd.rs` checks the
    /// lines of a running relay).
    #[test]
    fn only_spliceways_own_targets_go_past_warnings() {
        for (name, directives) in LEVELS {
            let _ = EnvFilter::try_new(directives).expect(name);
            for directive in directives.split(',') {
                match directive.split_once('=') {
                    Some((target, _)) => assert!(target.starts_with("spliceway"), "{name}"),
                    None => assert!(matches!(directive, "error" | "warn"), "{name}"),
                }
            }
        }
    }
}
