//! `--compare NAME=BIN --topology interception` (root; was `scripts/interception-bench.py`):
//! the relay's CPU with and without interception, in the namespaces of
//! [`crate::netns::interception`]. Each `--compare` variant runs in three ways, each one of a
//! round's variants (named `NAME/MODE`):
//!
//! - `fixed`: `relay 10.88.1.2:15010 10.88.2.2:7001`; the client dials the relay.
//! - `original-destination`: `relay 0.0.0.0:15001 original-destination --upstream-allow
//!   10.88.2.0/24`; the client dials the server and the REDIRECT rule sends it to the relay.
//! - `http-connect`: `relay 10.88.1.2:3128 http-connect --connect-allow sink.test:7001
//!   --upstream-allow 10.88.2.0/24`; the client asks for `CONNECT sink.test:7001` (a name from
//!   the relay namespace's hosts file).
//!
//! Each with `--threads 1 -q` and the variant's own flags after, started with `ip netns exec`
//! (which execs: the relay keeps its PID). Workloads as `--compare`'s on loopback: `connect`
//! (one byte up, the sink's answer down, per connection: relay CPU µs per connection) and
//! `upload` (relay CPU s/GiB and MB/s, each share's SHA-256 checked), the client's side run in
//! the client namespace.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::args::Variant;
use crate::child::RelayProcess;
use crate::cleanup::Cleanup;
use crate::client::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::compare_upload::{self, Shares};
use crate::cpu;
use crate::data::Payload;
use crate::netns::interception::{Interception, REDIRECT_PORT, RELAY_IP, SINK_NAME, SINK_PORT};
use crate::wakeups;

/// The settling pause after a relay starts listening, and after the last connection.
const SETTLE: Duration = Duration::from_millis(200);
const AFTER_CONNECTIONS: Duration = Duration::from_millis(100);
/// The fixed relay's and the CONNECT proxy's ports.
const FIXED_PORT: u16 = 15010;
const CONNECT_PORT: u16 = 3128;

/// How the client's connections reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Fixed,
    OriginalDestination,
    HttpConnect,
}

impl Mode {
    pub(crate) const ALL: [Mode; 3] = [Mode::Fixed, Mode::OriginalDestination, Mode::HttpConnect];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Fixed => "fixed",
            Mode::OriginalDestination => "original-destination",
            Mode::HttpConnect => "http-connect",
        }
    }

    /// `relay`'s listen address and upstream arguments.
    fn relay_args(self) -> Vec<String> {
        let sink = Interception::sink_addr().to_string();
        let words: Vec<String> = match self {
            Mode::Fixed => vec![relay_at(FIXED_PORT).to_string(), sink],
            Mode::OriginalDestination => vec![
                format!("0.0.0.0:{REDIRECT_PORT}"),
                "original-destination".into(),
                "--upstream-allow".into(),
                "10.88.2.0/24".into(),
            ],
            Mode::HttpConnect => vec![
                relay_at(CONNECT_PORT).to_string(),
                "http-connect".into(),
                "--connect-allow".into(),
                format!("{SINK_NAME}:{SINK_PORT}"),
                "--upstream-allow".into(),
                "10.88.2.0/24".into(),
            ],
        };
        words
    }

    /// Where the client connects.
    fn dial(self) -> SocketAddr {
        match self {
            Mode::Fixed => relay_at(FIXED_PORT),
            Mode::OriginalDestination => Interception::sink_addr(),
            Mode::HttpConnect => relay_at(CONNECT_PORT),
        }
    }

    /// Where the relay is seen listening from the client.
    fn ready(self) -> SocketAddr {
        match self {
            Mode::OriginalDestination => relay_at(REDIRECT_PORT),
            other => other.dial(),
        }
    }

    /// The CONNECT request's target, for the proxy.
    fn tunnel(self) -> Option<String> {
        (self == Mode::HttpConnect).then(|| format!("{SINK_NAME}:{SINK_PORT}"))
    }
}

fn relay_at(port: u16) -> SocketAddr {
    SocketAddrV4::new(RELAY_IP, port).into()
}

/// `spliceway sink` (this executable) on the server, for the whole comparison.
pub(crate) fn start_sink(
    net: &Interception,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<RelayProcess> {
    let exe = std::env::current_exe().context("finding the spliceway executable")?;
    let argv = net.server.exec_argv(&[
        exe.to_string_lossy().into_owned(),
        "sink".into(),
        "--listen".into(),
        Interception::sink_addr().to_string(),
        "-q".into(),
    ]);
    let mut sink = RelayProcess::spawn("sink", &argv, cleanup)?;
    sink.wait_ready(Interception::sink_addr(), Some(&net.server))?;
    Ok(sink)
}

/// What one round does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work<'a> {
    Connections(u64),
    Upload(&'a Payload, &'a Shares),
}

/// What one round measured.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// Relay CPU µs per connection, or s/GiB of an upload.
    pub(crate) figure: f64,
    /// An upload's MB/s and the relay's wake-ups a second during it.
    pub(crate) mb_per_s: Option<f64>,
    pub(crate) wakeups_per_s: Option<f64>,
    /// An upload's MB/s on each of its connections.
    pub(crate) streams_mb_per_s: Vec<f64>,
}

/// One round of `variant` in `mode`.
pub(crate) fn one_round(
    net: &Interception,
    variant: &Variant,
    mode: Mode,
    work: Work<'_>,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<Measured> {
    let mut argv = vec![variant.binary().to_owned(), "relay".into()];
    argv.extend(mode.relay_args());
    argv.extend(["--threads", "1", "-q"].map(String::from));
    argv.extend(variant.extra().iter().cloned());
    let mut relay =
        RelayProcess::spawn(variant.name.as_str(), &net.relay.exec_argv(&argv), cleanup)?;
    relay.wait_ready(mode.ready(), Some(&net.client))?;
    std::thread::sleep(SETTLE);
    let pid = relay.pid();
    let cpu_now = || cpu::process_tree_cpu(pid).context("reading the relay's CPU time");
    let switches_now =
        || wakeups::voluntary_switches(pid).context("reading the relay's context switches");
    let outcome = net.client.run(|| -> anyhow::Result<Measured> {
        match work {
            Work::Connections(count) => {
                let before = cpu_now()?;
                for i in 0..count {
                    one_connection(mode).with_context(|| format!("connection {i}"))?;
                }
                std::thread::sleep(AFTER_CONNECTIONS);
                let used = cpu_now()? - before;
                Ok(Measured {
                    figure: used.as_secs_f64() * 1e6 / count as f64,
                    mb_per_s: None,
                    wakeups_per_s: None,
                    streams_mb_per_s: Vec::new(),
                })
            }
            Work::Upload(payload, shares) => {
                let tunnel = mode.tunnel();
                let streams = compare_upload::open(mode.dial(), tunnel.as_deref(), shares)?;
                let before = cpu_now()?;
                let switches_before = switches_now()?;
                let start = Instant::now();
                let times = compare_upload::send(streams, payload, shares)?;
                let elapsed = start.elapsed().as_secs_f64();
                let used = cpu_now()? - before;
                let switches = switches_now()?.saturating_sub(switches_before);
                let bytes = payload.bytes.len() as f64;
                Ok(Measured {
                    figure: used.as_secs_f64() / (bytes / f64::from(1 << 30)),
                    mb_per_s: Some(bytes / elapsed / 1e6),
                    wakeups_per_s: Some(switches as f64 / elapsed),
                    streams_mb_per_s: shares
                        .bytes()
                        .zip(times)
                        .map(|(b, t)| b as f64 / t.as_secs_f64() / 1e6)
                        .collect(),
                })
            }
        }
    })??;
    relay.stop();
    Ok(outcome)
}

/// One byte up, half-close, the sink's answer down.
fn one_connection(mode: Mode) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&mode.dial(), CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    if let Some(target) = mode.tunnel() {
        compare_upload::tunnel(&mut s, &target)?;
    }
    s.write_all(b"x")?;
    s.shutdown(Shutdown::Write)?;
    let mut answer = Vec::new();
    s.take(4096).read_to_end(&mut answer)?;
    if answer.is_empty() {
        bail!("no answer from the sink");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_dial_what_the_script_dialled() {
        assert_eq!(Mode::Fixed.dial().to_string(), "10.88.1.2:15010");
        assert_eq!(
            Mode::OriginalDestination.dial().to_string(),
            "10.88.2.2:7001"
        );
        assert_eq!(
            Mode::OriginalDestination.ready().to_string(),
            "10.88.1.2:15001"
        );
        assert_eq!(
            Mode::HttpConnect.tunnel().as_deref(),
            Some("sink.test:7001")
        );
        assert_eq!(
            Mode::OriginalDestination.relay_args().join(" "),
            "0.0.0.0:15001 original-destination --upstream-allow 10.88.2.0/24"
        );
        assert!(Mode::ALL.iter().all(|m| !m.name().is_empty()));
    }
}
