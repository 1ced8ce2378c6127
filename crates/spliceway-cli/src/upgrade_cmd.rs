//! `spliceway upgrade --config FILE | --control-socket PATH`: asks the running relay to hand
//! over to a new process (`upgrade.rs`), prints `pid N` of the new one, or fails (exit 1) with
//! the reason while the old relay carries on.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::UpgradeArgs;
use crate::exit;
use crate::handoff;

/// Longest wait for the relay's answer: its new process's timeout, and a margin.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let path = match (&args.control_socket, &args.config) {
        (Some(path), _) => path.clone(),
        (None, Some(config)) => spliceway_config::Config::control_socket_in(config)
            .map_err(exit::config)?
            .with_context(|| format!("{} sets no control_socket", config.display()))
            .map_err(exit::config)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let mut stream = UnixStream::connect(&path)
        .with_context(|| format!("cannot reach the relay at {}", path.display()))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    // A refused peer may find the connection closed already: its answer is still there to read.
    let sent = stream.write_all(b"upgrade\n");
    let answer = handoff::read_line(&stream)
        .with_context(|| format!("no answer from the relay at {}", path.display()))?;
    if answer.is_empty() {
        sent.with_context(|| format!("asking the relay at {}", path.display()))?;
    }
    match answer.strip_prefix("pid ") {
        Some(pid) => {
            println!("pid {}", pid.trim());
            Ok(())
        }
        None if answer.is_empty() => bail!("the relay closed the connection without an answer"),
        None => bail!(
            "upgrade failed: {}",
            answer.strip_prefix("error ").unwrap_or(&answer)
        ),
    }
}
