//! `spliceway bench`, `spliceway sink` and the hidden `spliceway soak` and `spliceway
//! corrupting-relay`: logging is set up here, everything else is in the `spliceway-bench` crate.

use spliceway_bench::{BenchArgs, SinkArgs, SoakArgs};

use crate::cli::LogArgs;
use crate::logging::{self, LogFormat};

/// Runs the bench; it logs warnings and errors only with `--quiet`, as text.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let level = if args.quiet() {
        1
    } else {
        logging::DEFAULT_LEVEL
    };
    logging::init(level, LogFormat::Text);
    spliceway_bench::run_bench(args)
}

/// Runs the sink with the logging flags shared by the long-running commands.
pub fn sink(args: SinkArgs, log: LogArgs) -> anyhow::Result<()> {
    logging::init(
        logging::level_from_flags(log.verbose, log.quiet),
        log.log_format,
    );
    spliceway_bench::run_sink(args)
}

/// Runs the soak; it logs warnings and errors only (its own output is its progress and verdict).
pub fn soak(args: SoakArgs) -> anyhow::Result<()> {
    logging::init(1, LogFormat::Text);
    spliceway_bench::run_soak(args)
}
