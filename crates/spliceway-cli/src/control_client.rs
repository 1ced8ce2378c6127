//! The client side of the control socket for `spliceway status`, `connections`, `close` and
//! `top`: finding the socket as `spliceway upgrade` does, and asking one JSON request
//! (`control_protocol.rs`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cli::{ControlArgs, DEFAULT_CONFIG};
use crate::control_protocol::{CLIENT_TIMEOUT, VERSION};
use crate::exit;

/// How to enable the control socket, for a relay that has none.
const HOW_TO_ENABLE: &str = "set control_socket = \"/run/spliceway/control.sock\" in the \
     configuration (spliceway run) or start spliceway relay with --control-socket PATH, then \
     pass --config FILE or --control-socket PATH";

/// The control socket `args` name: `--control-socket`, or the `control_socket` of `--config`
/// (default: the default configuration file). None configured is a usage error (exit 2)
/// that says how to enable it.
pub fn socket_path(args: &ControlArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.control_socket {
        return Ok(path.clone());
    }
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if args.config.is_none() && !config.exists() {
        return Err(exit::usage(anyhow::anyhow!(
            "no control socket given and {} does not exist: {HOW_TO_ENABLE}",
            config.display()
        )));
    }
    match spliceway_config::Config::control_socket_in(&config).map_err(exit::config)? {
        Some(path) => Ok(path),
        None => Err(exit::usage(anyhow::anyhow!(
            "{} sets no control_socket: {HOW_TO_ENABLE}",
            config.display()
        ))),
    }
}

/// A connection to a running relay's control socket, for one JSON request after another.
pub struct Control {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Control {
    pub fn connect(path: PathBuf) -> anyhow::Result<Control> {
        let stream = UnixStream::connect(&path)
            .with_context(|| format!("cannot reach the relay at {}", path.display()))?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Control {
            path,
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` (its `"v"` added) and returns the answer, or fails with the relay's
    /// error.
    pub fn ask(&mut self, mut request: Value) -> anyhow::Result<Value> {
        request["v"] = Value::from(VERSION);
        let mut line = request.to_string();
        line.push('\n');
        // A refused peer may find the connection closed already: its answer is still there.
        let sent = self.reader.get_mut().write_all(line.as_bytes());
        let mut answer = String::new();
        self.reader
            .read_line(&mut answer)
            .with_context(|| format!("no answer from the relay at {}", self.path.display()))?;
        if answer.is_empty() {
            sent.with_context(|| format!("asking the relay at {}", self.path.display()))?;
            bail!(
                "the relay at {} closed the connection without an answer",
                self.path.display()
            );
        }
        if let Some(reason) = answer.strip_prefix("error ") {
            bail!("the relay refused: {}", reason.trim());
        }
        let answer: Value = serde_json::from_str(&answer).with_context(|| {
            format!(
                "the relay at {} answered {:?}, not JSON (is it older than this command?)",
                self.path.display(),
                answer.trim()
            )
        })?;
        if answer["ok"] != Value::Bool(true) {
            bail!(
                "the relay answered: {}",
                answer["error"].as_str().unwrap_or("an error")
            );
        }
        Ok(answer)
    }
}

/// Asks one request of the relay `args` name.
pub fn ask(args: &ControlArgs, request: Value) -> anyhow::Result<Value> {
    Control::connect(socket_path(args)?)?.ask(request)
}
