//! The health and metrics endpoint of `spliceway run` and `spliceway relay --metrics`:
//!
//! - `GET /metrics`: the Prometheus text format ([`exposition`]), with the standard process
//!   metrics ([`process`]);
//! - `GET /healthz`: 200 `ok` while the workers run (a liveness probe), 503 otherwise;
//! - `GET /readyz`: 200 while the relay accepts on every route, 503 from the moment a drain
//!   begins (a readiness probe, a load balancer's health check), so that the balancer stops
//!   sending clients during the drain delay.
//!
//! A small HTTP/1.1 server of its own rather than a library's, because what matters here is
//! that no client can take it down (issue 24): one thread on a `mio` poll, at most
//! [`MAX_CONNECTIONS`](event_loop::MAX_CONNECTIONS) connections (the oldest idle closed first), a deadline on every
//! phase (a request head within 5 s, an answer written within 5 s, 30 s idle), request heads
//! of at most 8 KiB (431 beyond), one answer at a time per connection, `EMFILE` and failed
//! thread starts logged at ERROR and retried, and at most [`DESCRIPTORS`] descriptors, which
//! the relay keeps out of its own budget. The modules, each with one job:
//!
//! - [`family`]: what describes one metric family (name, help, labels), written once beside
//!   the code that reads it; the operations table is held to that list (the test below);
//! - [`request`]: the request head, collected and parsed under its size limit (pure);
//! - [`response`]: the answers, as bytes;
//! - [`connection`]: one connection's phases and deadlines;
//! - [`event_loop`]: accepting, the connection cap, errors and timeouts;
//! - [`server`]: starting the thread, stopping it, stopping accepting for an upgrade;
//! - [`throttle`]: how often a repeated error is logged.

mod connection;
mod event_loop;
mod exposition;
mod family;
mod process;
mod request;
mod response;
mod server;
mod throttle;

pub use event_loop::DESCRIPTORS;
pub use server::{MetricsControl, MetricsServer, serve_on};

/// Every family `/metrics` exports, in its order: the relay's, then the process's.
#[cfg(test)]
fn families() -> Vec<family::Family> {
    exposition::families().chain(process::families()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::family::Kind;
    use super::*;

    /// A family as a row of docs/operations.md's table: name, type, and each label with the
    /// values it lists (none for a value that comes from the configuration or the build).
    type Row = (String, String, Vec<(String, Vec<String>)>);

    /// The rows of the "## Metrics" table of docs/operations.md.
    fn documented() -> BTreeSet<Row> {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations.md"
        ))
        .unwrap();
        let section = doc
            .split_once("\n## Metrics\n")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("a Metrics section in docs/operations.md");
        let mut rows = BTreeSet::new();
        for line in section.lines() {
            let Some(rest) = line.strip_prefix("| `") else {
                continue;
            };
            // Cells are split on '|' that is not escaped as '\|'.
            let cells: Vec<String> = rest
                .replace("\\|", "\u{0}")
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect();
            let name = cells[0].trim_end_matches('`').to_string();
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            let labels = if cells[2] == "—" {
                Vec::new()
            } else {
                cells[2]
                    .split(", ")
                    .map(|label| match label.split_once('=') {
                        Some((name, values)) => (
                            name.to_string(),
                            values
                                .split('|')
                                .map(|v| v.trim_matches('`').to_string())
                                .collect(),
                        ),
                        None => (label.to_string(), Vec::new()),
                    })
                    .collect()
            };
            rows.insert((name, cells[1].clone(), labels));
        }
        rows
    }

    #[test]
    fn the_operations_table_documents_exactly_the_exported_families() {
        let exported: BTreeSet<Row> = families()
            .iter()
            .map(|f| {
                (
                    f.exported_name(),
                    f.kind.as_str().to_string(),
                    f.labels
                        .iter()
                        .map(|l| {
                            (
                                l.name.to_string(),
                                l.values.iter().map(|v| v.to_string()).collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        let documented = documented();
        let undocumented: Vec<_> = exported.difference(&documented).collect();
        let not_exported: Vec<_> = documented.difference(&exported).collect();
        assert!(
            undocumented.is_empty() && not_exported.is_empty(),
            "exported but not in docs/operations.md: {undocumented:#?}\n\
             in docs/operations.md but not exported: {not_exported:#?}"
        );
        assert!(exported.len() > 30, "{} families", exported.len());
    }

    #[test]
    fn every_family_has_a_help_text_and_a_unique_name() {
        let all = families();
        let names: BTreeSet<&str> = all.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), all.len(), "a family is described twice");
        for f in &all {
            assert!(!f.help.is_empty(), "{} has no help", f.name);
            assert!(
                f.kind == Kind::Counter || !f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }
}
