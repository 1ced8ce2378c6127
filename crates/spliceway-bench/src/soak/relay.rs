//! The soaked relay: its configuration (rewritten before each SIGHUP), the `spliceway run`
//! process (its own process group, stopped by its PID), and its metrics endpoint.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::abuse::status_of;
use super::wire::connect;

/// alpha's idle_timeout, toggled by each reload so that each reload changes a route.
pub(crate) const RELAY_IDLE_TIMEOUTS: [&str; 2] = ["60s", "90s"];
pub(crate) const DRAIN_TIMEOUT_S: u64 = 20;

/// The ports a soak's configuration names.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    pub(crate) listen_alpha: u16,
    pub(crate) listen_beta: u16,
    pub(crate) upstream_alpha: u16,
    pub(crate) upstream_beta: u16,
    pub(crate) metrics: u16,
}

/// The relay's configuration; `generation` toggles alpha's idle_timeout.
pub(crate) fn config_text(ports: &Ports, generation: u64) -> String {
    let idle = RELAY_IDLE_TIMEOUTS[(generation % 2) as usize];
    let [idle_a, idle_b] = RELAY_IDLE_TIMEOUTS;
    format!(
        r#"# Written by `spliceway soak`; generation {generation} (rewritten before each SIGHUP).
threads = 2
log_level = "info"
log_format = "json"
metrics = "127.0.0.1:{metrics}"
drain_timeout = "{DRAIN_TIMEOUT_S}s"

[defaults]
connect_timeout = "10s"
half_close_timeout = "60s"
idle_timeout = "60s"

# Splice mode; its idle_timeout toggles between {idle_a} and {idle_b} on each reload.
[[route]]
name = "alpha"
listen = ["127.0.0.1:{la}"]
upstream = "127.0.0.1:{ua}"
mode = "splice"
idle_timeout = "{idle}"

# Copy mode, so both engines are soaked.
[[route]]
name = "beta"
listen = ["127.0.0.1:{lb}"]
upstream = "127.0.0.1:{ub}"
mode = "copy"
"#,
        metrics = ports.metrics,
        la = ports.listen_alpha,
        ua = ports.upstream_alpha,
        lb = ports.listen_beta,
        ub = ports.upstream_beta,
    )
}

/// Writes atomically (rename), so a reload never reads half a file.
pub(crate) fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// `spliceway check` first: a configuration the relay refuses stops the soak at once.
pub(crate) fn check_config(binary: &Path, config: &Path) -> anyhow::Result<()> {
    let out = Command::new(binary)
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .with_context(|| format!("running {} check", binary.display()))?;
    if !out.status.success() {
        eprint!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::bail!("`spliceway check` refused {}", config.display());
    }
    Ok(())
}

/// A port free on 127.0.0.1 now (the relay binds it a moment later).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `spliceway run` process, in a process group of its own (Ctrl-C at the terminal reaches
/// only the soak, which then stops the relay by its PID).
#[derive(Debug)]
pub(crate) struct Relay {
    child: Child,
    pub(crate) pid: i32,
}

impl Relay {
    pub(crate) fn start(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Relay> {
        use std::os::unix::process::CommandExt as _;
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG") // the configuration's level
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} run", binary.display()))?;
        let pid = child.id() as i32;
        Ok(Relay { child, pid })
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn signal(&mut self, signal: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), signal);
        }
    }

    /// SIGTERM (drain), then SIGKILL if it outlives `timeout`. The exit status: its code,
    /// minus the signal that killed it, or None when it had to be killed.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt as _;
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return status.code().or(status.signal().map(|s| -s));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

/// Metric values by (name, labels as written).
pub(crate) type Metrics = HashMap<(String, String), f64>;

/// GET /metrics; None when the endpoint does not answer 200.
pub(crate) fn scrape(port: u16, timeout: Duration) -> Option<Metrics> {
    let mut sock = connect(port, timeout).ok()?;
    sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: soak\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).ok()?;
    if status_of(&answer) != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n")?.1;
    Some(parse_metrics(body))
}

/// Prometheus text exposition -> values (comments and unparsable lines left out).
pub(crate) fn parse_metrics(body: &str) -> Metrics {
    let mut values = Metrics::new();
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((series, value)) => (series, value.trim()),
                None => continue,
            },
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let (name, labels) = match series.find('{') {
            Some(start) => (&series[..start], &series[start..]),
            None => (series, ""),
        };
        if let Ok(value) = value.parse::<f64>() {
            values.insert((name.to_owned(), labels.to_owned()), value);
        }
    }
    values
}

/// Sum of a metric over its series (those whose labels contain `label_filter`).
pub(crate) fn metric_sum(values: Option<&Metrics>, name: &str) -> Option<f64> {
    let found: Vec<f64> = values?
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| *v)
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

/// The default output directory: target/soak/<UTC time>/.
pub(crate) fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("target/soak").join(utc_stamp(secs))
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (the civil calendar of Howard Hinnant's days_from_civil).
pub(crate) fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_800_000_000), "20270115T080000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn metrics_text_is_read_with_labels() {
        let body = "# HELP x y\nspliceway_pipes_open 4\nspliceway_bytes_total{route=\"a b\",dir=\"up\"} 10\n\
                    spliceway_bytes_total{route=\"b\",dir=\"up\"} 5\nbad line here\n";
        let values = parse_metrics(body);
        assert_eq!(metric_sum(Some(&values), "spliceway_pipes_open"), Some(4.0));
        assert_eq!(
            metric_sum(Some(&values), "spliceway_bytes_total"),
            Some(15.0)
        );
        assert_eq!(metric_sum(Some(&values), "absent"), None);
        assert_eq!(metric_sum(None, "spliceway_pipes_open"), None);
    }
}
