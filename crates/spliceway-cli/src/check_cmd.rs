//! `spliceway check --config FILE`: read and check a configuration file, print what it
//! describes, bind nothing.

use spliceway_config::Config;

use crate::cli::CheckArgs;
use crate::exit;

/// Checks the file; exits 78 (through the error) when it is invalid.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config).map_err(exit::config)?;
    // Builds the DNS resolvers too, so that `resolver = "dns"` without a usable
    // /etc/resolv.conf fails here and not at start-up.
    config.routes().map_err(exit::config)?;
    if !args.quiet {
        print!("{}", config.summary());
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
