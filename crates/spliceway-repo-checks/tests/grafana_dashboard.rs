//! `packaging/grafana/spliceway.json` names only metrics the relay exports: a live
//! `spliceway run` relays one connection, its `/metrics` is scraped, and every PromQL `expr`
//! (and every `label_values(...)` query of the dashboard's variables) is parsed for metric
//! names, each of which must be in the scrape.

use std::collections::BTreeSet;

use spliceway_test_kit::daemon::{built_binary, metric, scrape};
use spliceway_test_kit::{Daemon, WAIT, echo_round_trip, echo_server, wait_until};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/grafana/spliceway.json"
);

/// PromQL words that are not metric names where they stand alone.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Label lists after these keywords are label names, not metrics.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects. String literals, label matchers `{...}`,
/// ranges `[...]`, Grafana variables (`$route`, `${x}`), label lists after `by`/`without`/...,
/// function names (an identifier followed by `(`), keywords and numbers are left out.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Depth of `{` and `[`: identifiers inside are label names or durations.
    let mut braces = 0usize;
    let mut brackets = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                // Skip the string literal, honouring backslash escapes (not in backticks).
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            '[' => {
                brackets += 1;
                i += 1;
            }
            ']' => {
                brackets = brackets.saturating_sub(1);
                i += 1;
            }
            '$' => {
                // A Grafana variable: $name or ${name...}.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number (1, 0.99, 1e3) or a duration; none starts a metric name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                // A function call, or an aggregation with its grouping first:
                // `sum by (route) (...)`.
                let following: String = chars[next..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect::<String>()
                    .to_ascii_lowercase();
                let is_call = (next < chars.len() && chars[next] == '(')
                    || following == "by"
                    || following == "without";
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if is_call {
                        // A label list: skip to its closing parenthesis.
                        i = next;
                        while i < chars.len() && chars[i] != ')' {
                            i += 1;
                        }
                        i += 1;
                    }
                } else if braces == 0
                    && brackets == 0
                    && !is_call
                    && !KEYWORDS.contains(&lower.as_str())
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The metric of a Grafana `label_values(METRIC, label)` or `label_values(label)` query.
fn label_values_metric(query: &str) -> Option<Vec<String>> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // label_values(label) names no metric; label_values(selector, label) does.
    let (selector, _label) = inner.rsplit_once(',')?;
    Some(metric_names(selector))
}

/// Every string under a key `expr`, and every variable query, with where it was found.
fn queries(value: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}/{key}");
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push((here, s.clone())),
                    _ => queries(v, &here, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                queries(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Sample names in a scrape, and the families its `# TYPE` lines declare, with their type.
fn exported(text: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut samples = BTreeSet::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                families.push((name.to_string(), kind.to_string()));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (samples, families)
}

/// Whether `name` is exported: a sample name of the scrape, or a histogram's
/// `_bucket`/`_sum`/`_count` or a counter's `_total` of a declared family.
fn is_exported(name: &str, samples: &BTreeSet<String>, families: &[(String, String)]) -> bool {
    if samples.contains(name) {
        return true;
    }
    let family = |base: &str, kinds: &[&str]| {
        families
            .iter()
            .any(|(n, k)| n == base && kinds.contains(&k.as_str()))
    };
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .any(|base| family(base, &["histogram"]))
        || name
            .strip_suffix("_total")
            .is_some_and(|base| family(base, &["counter"]))
}

#[test]
fn the_parser_finds_metric_names_and_nothing_else() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(spliceway_upstream_connect_seconds_bucket{instance=~"$instance", route=~"a|b"}[$__rate_interval])))"#
        ),
        ["spliceway_upstream_connect_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "sum without(side) (rate(a_total[5m])) / on (route) group_left b_count > bool 1e3 or c offset 1h"
        ),
        ["a_total", "b_count", "c"]
    );
    assert_eq!(
        label_values_metric(r#"label_values(x_total{instance=~"$instance"}, route)"#),
        Some(vec!["x_total".to_string()])
    );
}

#[test]
fn every_query_of_the_dashboard_names_an_exported_metric() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
            .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));

    // A live relay with one route that has relayed one connection, so that every per-route
    // family (the histogram too) has samples.
    let echo_server = echo_server();
    let echo = echo_server.addr;
    let daemon = Daemon::start(
        built_binary("spliceway"),
        &format!(
            "metrics = \"127.0.0.1:0\"\n[[route]]\nname = \"echo\"\nlisten = [\"127.0.0.1:0\"]\n\
         upstream = \"{echo}\"\n"
        ),
    );
    echo_round_trip(
        daemon.listen_addr("echo"),
        b"one connection through the relay",
    );
    let addr = daemon.metrics_addr();
    let closed = |text: &str| {
        metric(
            text,
            "spliceway_connections_closed_total",
            &[("route", "echo")],
        )
    };
    assert!(
        wait_until(WAIT, || closed(&scrape(addr)) == Some(1.0)),
        "the connection was not counted:\n{}",
        scrape(addr)
    );
    let text = scrape(addr);
    let (samples, families) = exported(&text);
    assert!(
        samples.contains("spliceway_upstream_connect_seconds_bucket"),
        "no histogram samples in:\n{text}"
    );

    let mut found = Vec::new();
    queries(&dashboard["panels"], "panels", &mut found);
    assert!(
        found.len() >= 10,
        "only {} expr in {DASHBOARD}",
        found.len()
    );
    let mut checked = BTreeSet::new();
    let mut missing = Vec::new();
    for (place, expr) in &found {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !is_exported(&name, &samples, &families) {
                missing.push(format!("{name} (in {place}: {expr})"));
            }
            checked.insert(name);
        }
    }
    // The variables' queries: label_values(METRIC, label).
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for (i, variable) in variables.iter().enumerate() {
        let query = match &variable["query"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => match o.get("query") {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => continue,
            },
            _ => continue,
        };
        if variable["type"] != "query" {
            continue;
        }
        let names = label_values_metric(&query)
            .unwrap_or_else(|| panic!("variable {i}: not label_values(METRIC, label): {query}"));
        for name in names {
            if !is_exported(&name, &samples, &families) {
                missing.push(format!(
                    "{name} (in variable {}: {query})",
                    variable["name"]
                ));
            }
            checked.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard names metrics the relay does not export:\n  {}\nexported: {samples:?}",
        missing.join("\n  ")
    );
    eprintln!("{} metric names checked: {checked:?}", checked.len());

    // The panels the issue lists, by the metrics they show.
    for needed in [
        "spliceway_connections_active",
        "spliceway_connections_accepted_total",
        "spliceway_bytes_total",
        "spliceway_bytes_moved_total",
        "spliceway_resets_total",
        "spliceway_timeouts_total",
        "spliceway_upstream_connect_seconds_bucket",
        "spliceway_pipes_open",
        "spliceway_pipe_degradations_total",
        "spliceway_connections_denied_total",
        "spliceway_connections_sni_refused_total",
        "spliceway_upstream_refused_total",
        "spliceway_proxy_header_errors_total",
        "spliceway_draining",
    ] {
        assert!(checked.contains(needed), "no panel shows {needed}");
    }
    // Every panel queries the data source variable.
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} does not use the datasource variable",
            panel["title"]
        );
    }
}
