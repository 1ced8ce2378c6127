//! Logs to stderr through tracing, with a verbosity that can change while running (SIGUSR1
//! raises it, SIGUSR2 lowers it, as stone does).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Log line format: the configuration's `log_format`, which `--log-format` takes too.
pub use spliceway_config::LogFormat;

/// Verbosity ladder. Connection events use the `spliceway::conn` target: closed connections
/// at info, accepted/connected ones at debug.
const LEVELS: [&str; 6] = [
    "error",
    "warn",
    "info,spliceway::conn=warn",
    "info",
    "debug",
    "trace",
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
        let _ = self.handle.reload(EnvFilter::new(LEVELS[level]));
    }

    fn shift(&self, by: isize) {
        let current = self.level.load(Ordering::SeqCst) as isize;
        let next = (current + by).clamp(0, LEVELS.len() as isize - 1) as usize;
        self.set(next);
        tracing::warn!("log level now {:?} (signal)", LEVELS[next]);
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
        None => EnvFilter::new(LEVELS[level]),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = match format {
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(false),
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
        assert_eq!(level_from_flags(0, 0), DEFAULT_LEVEL);
        assert_eq!(LEVELS[level_from_flags(1, 0)], "info");
        assert_eq!(LEVELS[level_from_flags(2, 0)], "debug");
        assert_eq!(LEVELS[level_from_flags(9, 0)], "trace");
        assert_eq!(LEVELS[level_from_flags(0, 1)], "warn");
        assert_eq!(level_from_flags(0, 1), QUIET_LEVEL);
        assert_eq!(LEVELS[level_from_flags(0, 9)], "error");
    }
}
