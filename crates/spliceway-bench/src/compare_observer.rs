//! `--compare-top`: `spliceway top` watching a variant's relay through its control socket
//! while the round's upload runs, drawn in a tmux pane of 80x24 (top needs a terminal, and a
//! pane is one the bench can start, size and stop without a user's). What it measures is the
//! relay's side of being observed: each refresh asks for a listing, which walks every
//! connection (`--idle-connections` gives it some to walk). Top's own CPU is read too.
//!
//! The tmux server is this bench's own (a socket in the bench's temporary directory); its
//! session is killed when the pane is dropped, and the server with it. The session is in the
//! bench's cleanup registry too, so that Ctrl-C ends it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use crate::cleanup::Cleanup;
use crate::cpu;
use crate::error::usage;

/// How often top refreshes: its default, the script's choice.
pub(crate) const TOP_INTERVAL: &str = "1s";
/// Time for top to connect and draw its first screen before the upload starts.
const TOP_SETTLE: Duration = Duration::from_millis(1500);
/// The pane's size: a standard terminal.
const COLUMNS: &str = "80";
const ROWS: &str = "24";

/// Fails with a usage error when tmux cannot be run.
pub(crate) fn check_tmux() -> anyhow::Result<()> {
    let ok = Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(usage(anyhow!(
            "--compare-top draws `spliceway top` in a tmux pane: install tmux"
        )));
    }
    Ok(())
}

/// A running `BINARY top` in a detached tmux session.
#[derive(Debug)]
pub(crate) struct TopPane {
    socket: PathBuf,
    pid: i32,
    cleanup: Arc<Cleanup>,
}

impl TopPane {
    /// Starts `binary top --control-socket control --interval 1s` in a new 80x24 session named
    /// `session` of the tmux server at `dir/tmux`, and waits for it to settle.
    pub(crate) fn start(
        binary: &str,
        control: &Path,
        dir: &Path,
        session: &str,
        cleanup: &Arc<Cleanup>,
    ) -> anyhow::Result<TopPane> {
        let socket = dir.join("tmux");
        let (killed_socket, killed_session) = (socket.clone(), session.to_owned());
        cleanup.track(format!("tmux {}", socket.display()), move || {
            let _ = tmux(&killed_socket, &["kill-session", "-t", &killed_session]);
        });
        let command = shlex::try_join([
            binary,
            "top",
            "--control-socket",
            &control.to_string_lossy(),
            "--interval",
            TOP_INTERVAL,
        ])
        .context("quoting the top command")?;
        tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                COLUMNS,
                "-y",
                ROWS,
                &command,
            ],
        )?;
        let mut pane = TopPane {
            socket,
            pid: 0,
            cleanup: Arc::clone(cleanup),
        };
        let pid = tmux(
            &pane.socket,
            &["display", "-p", "-t", session, "#{pane_pid}"],
        )?;
        pane.pid = pid
            .trim()
            .parse()
            .with_context(|| format!("tmux gave no pane pid: {pid:?}"))?;
        std::thread::sleep(TOP_SETTLE);
        if !crate::procfs::Proc(Some(pane.pid as u32)).is_alive() {
            bail!("`{command}` ended at once (is the control socket there?)");
        }
        Ok(pane)
    }

    /// CPU time used so far by the pane's process and its children (top).
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        cpu::process_tree_cpu(self.pid).context("reading top's CPU time")
    }
}

impl Drop for TopPane {
    fn drop(&mut self) {
        self.cleanup
            .remove(&format!("tmux {}", self.socket.display()));
    }
}

/// Runs `tmux -S socket ARGS` and returns its stdout.
fn tmux(socket: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running tmux")?;
    if !out.status.success() {
        bail!(
            "tmux {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
