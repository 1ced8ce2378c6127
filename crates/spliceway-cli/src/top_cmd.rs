//! `spliceway top`: a live view of the running relay, redrawn with plain ANSI sequences every
//! `--interval` (default a second): the relay's totals and rates, each route's rates, and the
//! busiest connections (by rate), then the busiest UDP sessions (by bytes) when there are any. `q` (or Ctrl-C) quits. It fits the terminal's size (80×24 and
//! up); over ssh nothing but the terminal is needed.
//!
//! Each refresh asks the relay twice over one control connection (`status`, and
//! `connections` sorted by rate with a limit of the rows that fit), so the relay's work per
//! refresh is one walk over its connections per request and allocation for the rows shown.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use serde_json::{Value, json};

use crate::cli::TopArgs;
use crate::control_client::{self, Control};
use crate::observe_cmd::{bytes, connections_table, rate, sessions_table, status_text};

/// Rows that are not connections: the status lines, the route lines' header, gaps, the footer.
const FIXED_ROWS: usize = 14;

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let path = control_client::socket_path(&args.control)?;
    let mut control = Control::connect(path.clone())?;
    let stdin = std::io::stdin();
    if !termios::isatty(stdin.as_fd()) {
        bail!("spliceway top needs a terminal (use spliceway status or connections --json)");
    }
    let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
    let _restore = Restore(saved.clone());
    raw(&saved)?;
    let mut out = std::io::stdout();
    write!(out, "\x1b[?1049h\x1b[?25l")?;
    let result = refresh_until_quit(&args, &mut control, &path);
    let _ = write!(out, "\x1b[?25h\x1b[?1049l");
    let _ = out.flush();
    result
}

/// Redraws every interval until `q`; reconnects once if the relay closed the connection.
fn refresh_until_quit(
    args: &TopArgs,
    control: &mut Control,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    loop {
        let (width, height) = size();
        let rows = height.saturating_sub(FIXED_ROWS).max(1);
        let screen = match frame(control, rows, width) {
            Ok(screen) => screen,
            Err(_) => {
                *control = Control::connect(path.to_path_buf())?;
                frame(control, rows, width)?
            }
        };
        write!(out, "\x1b[H\x1b[2J{screen}")?;
        out.flush()?;
        if wait_for_quit(args.interval)? {
            return Ok(());
        }
    }
}

/// One screen: the status, the routes, the busiest connections, each line cut to `width`.
fn frame(control: &mut Control, rows: usize, width: usize) -> anyhow::Result<String> {
    let status = control.ask(json!({"cmd": "status"}))?;
    let list = control.ask(json!({"cmd": "connections", "sort": "rate", "limit": rows}))?;
    Ok(render(&status["status"], &list, rows, width))
}

/// The screen for a status answer and a listing: the status lines, the routes, then the
/// busiest connections and, when UDP routes have sessions, the busiest of those (by bytes),
/// sharing `rows` between them, each line cut to `width`.
fn render(status: &Value, list: &Value, rows: usize, width: usize) -> String {
    let mut screen = String::new();
    let mut line = |text: &str| {
        let cut: String = text.chars().take(width).collect();
        screen.push_str(&cut);
        screen.push_str("\r\n");
    };
    line(&format!(
        "spliceway top: pid {}, {} open, up {} down {}   (q quits)",
        status["pid"],
        status["connections_open"],
        rate(&status["rate_up"]),
        rate(&status["rate_down"]),
    ));
    // The status's first lines (version to rates), without its per-route lines.
    for text in status_text(status)
        .lines()
        .filter(|l| !l.starts_with("route "))
        .skip(1)
    {
        line(text);
    }
    line("");
    line(&format!(
        "{:<20} {:>6} {:>12} {:>12} {:>11} {:>11}",
        "ROUTE", "OPEN", "RATE UP", "RATE DOWN", "UP", "DOWN"
    ));
    for route in list["routes"].as_array().into_iter().flatten().take(4) {
        line(&format!(
            "{:<20} {:>6} {:>12} {:>12} {:>11} {:>11}",
            route["route"].as_str().unwrap_or("?"),
            route["connections_open"],
            rate(&route["rate_up"]),
            rate(&route["rate_down"]),
            bytes(&route["bytes_up"]),
            bytes(&route["bytes_down"]),
        ));
    }
    line("");
    let mut connections = list["connections"].as_array().cloned().unwrap_or_default();
    let mut sessions = list["udp_sessions"].as_array().cloned().unwrap_or_default();
    if !sessions.is_empty() {
        // Both tables: each gets at least half of the rows left after the sessions' header
        // and the gap, the rest going to the other when one has fewer.
        let left = rows.saturating_sub(2).max(2);
        let half = left.div_ceil(2);
        let shown = connections.len().min(left - sessions.len().min(half));
        connections.truncate(shown);
        sessions.sort_by_key(|s| {
            std::cmp::Reverse(
                s["bytes_up"].as_u64().unwrap_or(0) + s["bytes_down"].as_u64().unwrap_or(0),
            )
        });
        sessions.truncate(left - shown);
    }
    for text in connections_table(&connections, width).lines() {
        line(text);
    }
    if !sessions.is_empty() {
        line("");
        for text in sessions_table(&sessions, width).lines() {
            line(text);
        }
    }
    screen
}

/// Waits up to `interval` for a key; true if it was `q` (or Ctrl-C, ETX, in raw mode).
fn wait_for_quit(interval: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + interval;
    let stdin = std::io::stdin();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [rustix::event::PollFd::new(
            &stdin,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(left).context("interval")?;
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("waiting for a key"),
        }
        let mut key = [0u8; 16];
        let n = stdin.lock().read(&mut key).context("reading a key")?;
        if n == 0 || key[..n].iter().any(|k| matches!(k, b'q' | b'Q' | 3)) {
            return Ok(true);
        }
    }
}

/// The terminal's columns and rows (80×24 if it does not say).
fn size() -> (usize, usize) {
    match termios::tcgetwinsize(std::io::stdout().as_fd()) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (usize::from(w.ws_col), usize::from(w.ws_row)),
        _ => (80, 24),
    }
}

/// Keys arrive one at a time, unechoed; output is left as it was.
fn raw(saved: &Termios) -> anyhow::Result<()> {
    let mut raw = saved.clone();
    raw.local_modes
        .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &raw)
        .context("setting the terminal to raw mode")
}

/// Puts the terminal's settings back when `top` ends, however it ends.
struct Restore(Termios);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(client: &str, bytes: u64) -> Value {
        json!({"route": "dns", "client": client, "upstream": "10.0.0.2:53", "age_seconds": 3.0,
               "idle_seconds": 0.5, "datagrams_up": 2, "bytes_up": bytes, "datagrams_down": 2,
               "bytes_down": bytes})
    }

    fn connection(id: u64) -> Value {
        json!({"id": id, "route": "s3", "client": "10.1.2.3:5000", "via": null,
               "upstream": "10.0.0.1:443", "phase": "relaying", "age_seconds": 1.0,
               "bytes_up": 10, "bytes_down": 10, "rate_up": 1.0, "rate_down": 1.0,
               "mode": "splice"})
    }

    fn status() -> Value {
        json!({"pid": 7, "connections_open": 3, "rate_up": 0, "rate_down": 0, "routes": []})
    }

    #[test]
    fn udp_sessions_share_the_rows_with_connections_busiest_first() {
        let list = json!({
            "connections": (1..=10).map(connection).collect::<Vec<_>>(),
            "routes": [],
            "udp_sessions": [session("10.9.0.1:1", 5), session("10.9.0.2:2", 500),
                             session("10.9.0.3:3", 50)],
        });
        let screen = render(&status(), &list, 10, 200);
        let lines: Vec<&str> = screen.split("\r\n").collect();
        let connections = lines.iter().filter(|l| l.contains("relaying")).count();
        let sessions: Vec<&&str> = lines.iter().filter(|l| l.starts_with("dns ")).collect();
        // 10 rows: 2 for the sessions' gap and header, 3 sessions, 5 connections.
        assert_eq!(sessions.len(), 3, "{screen}");
        assert_eq!(connections, 5, "{screen}");
        assert!(
            sessions[0].contains("10.9.0.2:2"),
            "most bytes first: {screen}"
        );
        assert!(sessions[2].contains("10.9.0.1:1"), "{screen}");
        assert!(screen.contains("DGRAMS UP"), "{screen}");

        let tcp_only = json!({"connections": (1..=10).map(connection).collect::<Vec<_>>(),
                              "routes": [], "udp_sessions": []});
        let screen = render(&status(), &tcp_only, 10, 200);
        assert_eq!(screen.matches("relaying").count(), 10, "{screen}");
        assert!(!screen.contains("DGRAMS UP"), "{screen}");
    }
}
