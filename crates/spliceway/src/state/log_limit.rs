//! A log line allowed at most once a period, shared by every worker: a flood of bad input on
//! one route (a misconfigured balancer, a scan) costs one line a second, not one per
//! connection, and says how many it stood for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The period of the PROXY protocol error log of a route.
pub(crate) const PROXY_ERROR_LOG_PERIOD: Duration = Duration::from_secs(1);

/// The period of the log of a route's refused upstream addresses (address policy, self-loop).
pub(crate) const UPSTREAM_REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(1);

/// When the line was last logged, and how many were held back since.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// Whether a line may be logged now (with how many were held back since the last one), or
    /// `None`: held back and counted.
    pub(crate) fn admit(&self, now: Instant, period: Duration) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < period => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_period_and_the_count_of_the_rest() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        assert_eq!(limit.admit(t0, period), Some(0));
        for ms in 1..=5 {
            assert_eq!(
                limit.admit(t0 + Duration::from_millis(ms * 100), period),
                None
            );
        }
        assert_eq!(limit.admit(t0 + period, period), Some(5));
        assert_eq!(limit.admit(t0 + period, period), None);
    }

    /// Issue 24, finding 9: an address-policy refusal logged a WARN line per connection, so
    /// a client could write the log at will. Every warn, error and info call site of the code a
    /// connection runs through must say, in a `// log:` comment just above it, why one client
    /// cannot make it repeat per connection: `rate limited` (a [`LogLimit`], the refusal
    /// summary, or a timestamp check, which must appear just above it), `not client input`
    /// (the relay's own state: a reload, a drain, the kernel refusing a resource), or `access
    /// log` (the per-connection `closed` line, off unless the operator asks for it). The test
    /// prints the list, so a reviewer sees every site; a new site without its comment fails.
    #[test]
    fn every_log_line_a_client_can_trigger_is_rate_limited() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sites = Vec::new();
        let mut unmarked = Vec::new();
        for dir in [
            "connection",
            "event_loop",
            "proxy_protocol",
            "sni",
            "resolver",
            "state",
            "udp",
        ] {
            let mut files: Vec<_> = std::fs::read_dir(src.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                let lines: Vec<&str> = text.lines().collect();
                // Unit tests of the modules (and this one) are not the running relay.
                let end = lines
                    .iter()
                    .position(|l| l.trim() == "#[cfg(test)]")
                    .unwrap_or(lines.len());
                for (at, line) in lines[..end].iter().enumerate() {
                    let code = line.trim_start();
                    let level = ["warn", "error", "info", "$level"]
                        .into_iter()
                        .find(|level| code.starts_with(&format!("tracing::{level}!(")));
                    let Some(level) = level else { continue };
                    let name = format!(
                        "{}/{}:{}",
                        dir,
                        file.file_name().unwrap().to_string_lossy(),
                        at + 1
                    );
                    let above = &lines[at.saturating_sub(8)..at];
                    let marker = above
                        .iter()
                        .rev()
                        .find_map(|l| l.trim().strip_prefix("// log: "));
                    match marker {
                        Some(why) if why.starts_with("rate limited") => {
                            let guarded = above.iter().any(|l| {
                                l.contains(".admit(")
                                    || l.contains("admit_")
                                    || l.contains("should_log")
                                    || l.contains("is_none_or(")
                                    || l.contains("period_start")
                            });
                            if guarded {
                                sites.push(format!("{name} {level}: {why}"));
                            } else {
                                unmarked.push(format!("{name}: says rate limited, no limit above"));
                            }
                        }
                        Some(why)
                            if why.starts_with("not client input")
                                || why.starts_with("access log") =>
                        {
                            sites.push(format!("{name} {level}: {why}"));
                        }
                        _ => unmarked.push(name),
                    }
                }
            }
        }
        println!(
            "log call sites on a connection's path:\n{}",
            sites.join("\n")
        );
        assert!(
            unmarked.is_empty(),
            "log call sites without a `// log:` comment saying why a client cannot repeat \
             them per connection: {unmarked:#?}"
        );
        assert!(sites.len() >= 10, "the scan found the sites: {sites:#?}");
    }
}
