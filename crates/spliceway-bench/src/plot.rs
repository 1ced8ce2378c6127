//! `--plot FILE.svg`, `--plot-from REPORT.json` and `--markdown`: the bench's own figures and
//! Markdown tables, drawn from `--json` reports (the run just made, or saved ones). It took
//! over from `scripts/plot-bench.py` and draws the same chart.
//!
//! One horizontal bar per path, grouped by report (each group headed by its topology, size,
//! runs and CPU cap). For upload reports the bar length is the median seconds (or, with
//! `--plot-metric relative`, the time relative to the direct path), with a whisker from the
//! fastest to the slowest run where the report has them (`seconds_min`/`_max`,
//! `relative_to_direct_min`/`_max`); the label gives the value, MB/s and the relay's CPU seconds
//! per GiB. For request reports (`--workload rtt` or `connect`) the bar is the median p50
//! latency drawn over a lighter bar to the p99, labelled with both, the rate and the relay's CPU
//! per request. Upload and request reports have no common axis and are refused together. Paths
//! whose integrity check failed are drawn in red and marked.
//!
//! Reports are read as JSON values, not as this version's `Report`, so that reports saved by
//! earlier versions (without the spread keys) still draw.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::Value;

use crate::error::usage;
use crate::report::upload_columns;
use crate::svg::Svg;

const BAR_HEIGHT: f64 = 20.0;
const BAR_GAP: f64 = 6.0;
const GROUP_GAP: f64 = 18.0;
const HEADING_HEIGHT: f64 = 22.0;
const LABEL_WIDTH: f64 = 130.0;
const CHART_WIDTH: f64 = 520.0;
const VALUE_WIDTH: f64 = 400.0;
const MARGIN: f64 = 16.0;
const TITLE_HEIGHT: f64 = 30.0;
const AXIS_HEIGHT: f64 = 28.0;

const PEER_COLOUR: &str = "#9467bd";
const FAILED_COLOUR: &str = "#d62728";

/// What a bar's length shows (`--plot-metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Metric {
    /// Median seconds of an upload (uploads' default).
    Seconds,
    /// Upload time relative to the direct path.
    Relative,
    /// p50 over p99 latency per request (rtt and connect reports, their default).
    Latency,
}

/// Reads a report written by `spliceway bench --json`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: Value = serde_json::from_str(&text)
        .map_err(|e| usage(anyhow!("{}: not JSON: {e}", path.display())))?;
    if !report.get("results").is_some_and(Value::is_array) {
        return Err(usage(anyhow!(
            "{} is not `spliceway bench --json` output",
            path.display()
        )));
    }
    Ok(report)
}

/// The metric and title for these reports, or a usage error when they cannot share a chart or
/// the metric does not fit them.
pub(crate) fn choose(
    reports: &[Value],
    metric: Option<Metric>,
    title: Option<&str>,
) -> anyhow::Result<(Metric, String)> {
    let requests: Vec<bool> = reports.iter().map(is_requests).collect();
    if requests.iter().any(|&r| r) && requests.iter().any(|&r| !r) {
        return Err(usage(anyhow!(
            "upload and rtt/connect reports have no common axis: plot them separately"
        )));
    }
    let requests = requests.first().copied().unwrap_or(false);
    let metric = fits(requests, metric)?;
    let default_title = if requests {
        let mut workloads: Vec<&str> = reports.iter().map(|r| str_of(r, "workload")).collect();
        workloads.sort_unstable();
        workloads.dedup();
        format!(
            "spliceway bench --workload {}: latency per path",
            workloads.join("/")
        )
    } else {
        "spliceway bench: upload time per path".to_owned()
    };
    Ok((metric, title.map_or(default_title, str::to_owned)))
}

/// The metric for upload (`requests` false) or rtt/connect reports: the one given if it fits
/// them (else a usage error), or their default.
pub(crate) fn fits(requests: bool, metric: Option<Metric>) -> anyhow::Result<Metric> {
    match (requests, metric) {
        (true, None | Some(Metric::Latency)) => Ok(Metric::Latency),
        (true, Some(_)) => Err(usage(anyhow!(
            "rtt/connect reports have no upload time: --plot-metric latency"
        ))),
        (false, Some(Metric::Latency)) => Err(usage(anyhow!(
            "--plot-metric latency is for rtt/connect reports; uploads have seconds or relative"
        ))),
        (false, metric) => Ok(metric.unwrap_or(Metric::Seconds)),
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn num(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

fn rows(report: &Value) -> &[Value] {
    report
        .get("results")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// rtt and connect reports measure latency per request, not the time of one upload.
fn is_requests(report: &Value) -> bool {
    report
        .get("workload")
        .and_then(Value::as_str)
        .is_some_and(|w| w != "upload")
}

/// A number as Python's `{:g}` would print it, close enough for headings and ticks.
pub(crate) fn g(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn heading(report: &Value) -> String {
    let what = if is_requests(report) {
        let count = num(report, "requests_per_run").map_or("?".to_owned(), g);
        let size = num(report, "message_size_bytes").map_or("?".to_owned(), g);
        format!(
            "{count} {} requests of {size} B",
            str_of(report, "workload")
        )
    } else {
        format!(
            "{} MiB",
            g(num(report, "size_bytes").unwrap_or(0.0) / f64::from(1 << 20))
        )
    };
    let runs = num(report, "runs_per_path").map_or("?".to_owned(), g);
    let mut parts = vec![
        str_of(report, "topology").to_owned(),
        what,
        format!("{runs} run(s) per path, medians"),
    ];
    if let Some(links) = report.get("links").filter(|l| l.is_object()) {
        parts.push(format!(
            "internet {} Mbit/s, VPC {} Mbit/s",
            g(num(links, "internet_mbit").unwrap_or(0.0)),
            g(num(links, "vpc_mbit").unwrap_or(0.0))
        ));
    }
    if let Some(cap) = num(report, "relay_cpu_limit") {
        parts.push(format!("relay CPU cap {}", g(cap)));
    }
    parts.join(", ")
}

fn value_of(row: &Value, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Relative => num(row, "relative_to_direct"),
        Metric::Latency => num(row, "p50_us"),
        Metric::Seconds => num(row, "seconds"),
    }
}

/// How far the bar's lighter part or whisker goes: p99 for latency, the slowest run else.
fn reach_of(row: &Value, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Latency => num(row, "p99_us"),
        Metric::Relative => num(row, "relative_to_direct_max"),
        Metric::Seconds => num(row, "seconds_max"),
    }
}

/// (min, max) over the runs, for the whisker of an upload bar; None where not reported.
fn spread_of(row: &Value, metric: Metric) -> Option<(f64, f64)> {
    let key = match metric {
        Metric::Latency => return None,
        Metric::Relative if str_of(row, "path") == "direct" => return None,
        Metric::Relative => "relative_to_direct",
        Metric::Seconds => "seconds",
    };
    Some((
        num(row, &format!("{key}_min"))?,
        num(row, &format!("{key}_max"))?,
    ))
}

fn integrity(row: &Value) -> bool {
    row.get("integrity").and_then(Value::as_bool) == Some(true)
}

fn label_of(row: &Value, metric: Metric) -> String {
    let value = value_of(row, metric);
    let mut text = match (metric, value) {
        (_, None) => "no result".to_owned(),
        (Metric::Latency, Some(p50)) => match num(row, "p99_us") {
            Some(p99) => format!("p50 {p50:.1} µs, p99 {p99:.1} µs"),
            None => format!("p50 {p50:.1} µs"),
        },
        (Metric::Relative, Some(v)) => format!(
            "{v:.2}x direct ({:.3} s)",
            num(row, "seconds").unwrap_or(0.0)
        ),
        (Metric::Seconds, Some(v)) => format!("{v:.3} s"),
    };
    if metric == Metric::Latency {
        if let Some(rate) = num(row, "per_second") {
            let _ = write!(text, ", {rate:.0}/s");
        }
        if let Some(cpu) = num(row, "relay_cpu_us_per_request") {
            let _ = write!(text, ", relay CPU {cpu:.1} µs each");
        }
    } else {
        if let (Some(_), Some((lo, hi))) = (value, spread_of(row, metric))
            && lo != hi
        {
            if metric == Metric::Relative {
                let _ = write!(text, " [{lo:.2}x..{hi:.2}x]");
            } else {
                let _ = write!(text, " [{lo:.3}..{hi:.3}]");
            }
        }
        if let Some(rate) = num(row, "mb_per_s") {
            let _ = write!(text, ", {rate:.1} MB/s");
        }
        if let Some(cpu) = num(row, "relay_cpu_seconds_per_gib") {
            let _ = write!(text, ", {cpu:.2} CPU s/GiB");
        }
    }
    if !integrity(row) {
        text.push_str(", INTEGRITY FAILED");
    }
    text
}

fn colour_of(row: &Value) -> &'static str {
    if !integrity(row) {
        return FAILED_COLOUR;
    }
    match str_of(row, "path") {
        "direct" | "via" => "#7f8c8d",
        "vpc" => "#95a5a6",
        "relay-splice" => "#1f77b4",
        "relay-copy" => "#ff7f0e",
        _ => PEER_COLOUR,
    }
}

/// The smallest of 1, 2, 2.5, 5 or 10 times a power of ten that is at least `value`.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * magnitude)
}

/// The chart of `reports` as an SVG document.
pub(crate) fn render(reports: &[Value], metric: Metric, title: &str) -> String {
    let all_rows = reports.iter().flat_map(rows);
    let largest = all_rows
        .map(|r| {
            value_of(r, metric)
                .unwrap_or(0.0)
                .max(reach_of(r, metric).unwrap_or(0.0))
        })
        .fold(0.0, f64::max);
    let axis_max = nice_max(largest);
    let mut height = MARGIN * 2.0 + TITLE_HEIGHT + AXIS_HEIGHT;
    for report in reports {
        height += HEADING_HEIGHT + rows(report).len() as f64 * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP;
    }
    let width = MARGIN * 2.0 + LABEL_WIDTH + CHART_WIDTH + VALUE_WIDTH;
    let x0 = MARGIN + LABEL_WIDTH;
    let scale = |v: f64| CHART_WIDTH * v / axis_max;

    let mut svg = Svg::new(width, height);
    svg.text(
        MARGIN,
        MARGIN + 16.0,
        r#"font-size="16" font-weight="bold""#,
        title,
    );
    // The grid goes under the bars: they are drawn into a second document, appended after.
    let mut bars = Svg::fragment();
    let top = MARGIN + TITLE_HEIGHT;
    let mut y = top;
    for report in reports {
        bars.text(MARGIN, y + 15.0, r#"font-weight="bold""#, &heading(report));
        y += HEADING_HEIGHT;
        for row in rows(report) {
            let value = value_of(row, metric);
            let length = value.map_or(0.0, scale);
            let mut end = length;
            let label = label_of(row, metric);
            let colour = colour_of(row);
            bars.text(
                x0 - 8.0,
                y + BAR_HEIGHT - 6.0,
                r#"text-anchor="end""#,
                str_of(row, "path"),
            );
            if metric == Metric::Latency
                && let Some(p99) = num(row, "p99_us")
            {
                // The p99 as a lighter bar behind the p50's.
                let reach = scale(p99);
                end = end.max(reach);
                bars.rect(
                    x0,
                    y,
                    reach,
                    BAR_HEIGHT,
                    &format!(r#"fill="{colour}" fill-opacity="0.35""#),
                    None,
                );
            }
            let tip = format!("{}: {label}", str_of(row, "path"));
            bars.rect(
                x0,
                y,
                length,
                BAR_HEIGHT,
                &format!(r#"fill="{colour}""#),
                Some(&tip),
            );
            if let (Some(_), Some((lo, hi))) = (value, spread_of(row, metric)) {
                // A whisker from the fastest to the slowest run across the bar's end.
                let (lo, hi) = (x0 + scale(lo), x0 + scale(hi));
                let mid = y + BAR_HEIGHT / 2.0;
                end = end.max(hi - x0);
                bars.path(
                    &format!(
                        "M{lo:.1} {mid:.1}H{hi:.1}M{lo:.1} {:.1}V{:.1}M{hi:.1} {:.1}V{:.1}",
                        mid - 5.0,
                        mid + 5.0,
                        mid - 5.0,
                        mid + 5.0
                    ),
                    r##"stroke="#222" fill="none""##,
                );
            }
            bars.text(x0 + end + 6.0, y + BAR_HEIGHT - 6.0, "", &label);
            y += BAR_HEIGHT + BAR_GAP;
        }
        y += GROUP_GAP;
    }
    let bottom = y - GROUP_GAP;
    let unit = match metric {
        Metric::Relative => "time relative to direct (x); whiskers: fastest..slowest run",
        Metric::Latency => "latency per request (µs): p50 (dark), p99 (light)",
        Metric::Seconds => "median seconds; whiskers: fastest..slowest run",
    };
    for i in 0..=5 {
        let tick = axis_max * f64::from(i) / 5.0;
        let x = x0 + scale(tick);
        svg.line(x, top, x, bottom, r##"stroke="#ddd""##);
        svg.text(
            x,
            bottom + 14.0,
            r##"text-anchor="middle" fill="#555""##,
            &g(tick),
        );
    }
    if metric == Metric::Relative {
        let x = x0 + scale(1.0);
        svg.line(
            x,
            top,
            x,
            bottom,
            r##"stroke="#333" stroke-dasharray="4 3""##,
        );
    }
    svg.text(
        x0 + CHART_WIDTH / 2.0,
        bottom + 28.0,
        r##"text-anchor="middle" fill="#555""##,
        unit,
    );
    svg.append(bars);
    svg.finish()
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn fmt_range(lo: Option<f64>, hi: Option<f64>, decimals: usize, unit: &str) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo:.decimals$}{unit}..{hi:.decimals$}{unit}"),
        _ => "-".to_owned(),
    }
}

fn table(head: &[&str], body: Vec<Vec<String>>) -> Vec<String> {
    let mut lines = vec![
        format!("| {} |", head.join(" | ")),
        format!("|{}", "---|".repeat(head.len())),
    ];
    lines.extend(
        body.into_iter()
            .map(|cells| format!("| {} |", cells.join(" | "))),
    );
    lines
}

fn ok(row: &Value) -> String {
    if integrity(row) { "ok" } else { "FAILED" }.to_owned()
}

/// A request workload (rtt, connect) as a Markdown table: latency, rate, relay CPU each.
fn requests_markdown(report: &Value) -> String {
    let head = [
        "path",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "added p50 µs",
        "per second",
        "relay CPU µs each",
        "integrity",
    ];
    let body = rows(report)
        .iter()
        .map(|r| {
            vec![
                str_of(r, "path").to_owned(),
                fmt(num(r, "p50_us"), 1),
                fmt(num(r, "p99_us"), 1),
                fmt(num(r, "p999_us"), 1),
                num(r, "added_p50_us").map_or("-".to_owned(), |a| format!("{a:+.1}")),
                fmt(num(r, "per_second"), 0),
                fmt(num(r, "relay_cpu_us_per_request"), 1),
                ok(r),
            ]
        })
        .collect();
    table(&head, body).join("\n") + "\n"
}

/// The report as a Markdown table (the same columns as the bench's text table): the spread
/// columns when the report has more than one run and the spread keys (reports of earlier
/// versions have neither), and the origin's hand measurement once, below, as the other test it
/// is.
pub(crate) fn markdown(report: &Value) -> String {
    if is_requests(report) {
        return requests_markdown(report);
    }
    let rows = rows(report);
    let spread = num(report, "runs_per_path").unwrap_or(1.0) > 1.0
        && rows.iter().any(|r| r.get("seconds_min").is_some());
    let head = upload_columns(spread);
    let body = rows
        .iter()
        .map(|r| {
            let mut cells = vec![str_of(r, "path").to_owned(), fmt(num(r, "seconds"), 3)];
            if spread {
                cells.push(fmt_range(
                    num(r, "seconds_min"),
                    num(r, "seconds_max"),
                    3,
                    "",
                ));
            }
            cells.push(fmt(num(r, "mb_per_s"), 1));
            cells.push(fmt(num(r, "relay_cpu_seconds"), 3));
            cells.push(fmt(num(r, "relay_cpu_seconds_per_gib"), 3));
            if spread {
                cells.push(fmt_range(
                    num(r, "relay_cpu_seconds_per_gib_min"),
                    num(r, "relay_cpu_seconds_per_gib_max"),
                    3,
                    "",
                ));
            }
            cells.push(num(r, "relative_to_direct").map_or("-".to_owned(), |v| format!("{v:.2}x")));
            if spread {
                cells.push(if str_of(r, "path") == "direct" {
                    "-".to_owned()
                } else {
                    fmt_range(
                        num(r, "relative_to_direct_min"),
                        num(r, "relative_to_direct_max"),
                        2,
                        "x",
                    )
                });
            }
            cells.push(ok(r));
            cells
        })
        .collect();
    let mut lines = table(&head, body);
    if str_of(report, "topology") == "loopback" {
        lines.push(String::new());
        lines.push(
            "On loopback every path shares one machine's CPUs and memory: times and ratios \
             swing from run to run, and the relay's CPU s/GiB is the figure that means something."
                .to_owned(),
        );
    }
    if let Some(origin) = report.get("origin").filter(|o| o.is_object()) {
        lines.push(String::new());
        lines.push(format!(
            "The origin, another test (not this run): {} ({} Mbit/s uplink).",
            str_of(origin, "note"),
            g(num(origin, "uplink_mbit").unwrap_or(0.0))
        ));
        lines.push(String::new());
        lines.push("| origin path | seconds | vs direct |".to_owned());
        lines.push("|---|---|---|".to_owned());
        for o in rows_of(origin) {
            lines.push(format!(
                "| {} | {:.3} | {:.2}x |",
                str_of(o, "path"),
                num(o, "seconds").unwrap_or(0.0),
                num(o, "relative_to_direct").unwrap_or(0.0)
            ));
        }
    }
    lines.join("\n") + "\n"
}

fn rows_of(origin: &Value) -> &[Value] {
    origin
        .get("rows")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Writes the chart of `reports` to `path`.
pub(crate) fn write(
    path: &Path,
    reports: &[Value],
    metric: Option<Metric>,
    title: Option<&str>,
) -> anyhow::Result<()> {
    let (metric, title) = choose(reports, metric, title)?;
    std::fs::write(path, render(reports, metric, &title))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upload_report() -> Value {
        json!({
            "workload": "upload", "topology": "loopback", "size_bytes": 8 << 20,
            "runs_per_path": 3, "relay_cpu_limit": null, "links": null,
            "results": [
                {"path": "direct", "seconds": 0.5, "seconds_min": 0.4, "seconds_max": 0.7,
                 "mb_per_s": 16.7, "relay_cpu_seconds": null, "relay_cpu_seconds_per_gib": null,
                 "relative_to_direct": 1.0, "integrity": true},
                {"path": "relay-splice", "seconds": 0.6, "seconds_min": 0.55, "seconds_max": 0.9,
                 "mb_per_s": 14.0, "relay_cpu_seconds": 0.01, "relay_cpu_seconds_per_gib": 1.28,
                 "relative_to_direct": 1.2, "relative_to_direct_min": 1.1,
                 "relative_to_direct_max": 1.3, "integrity": true},
                {"path": "stone<&>", "seconds": null, "integrity": false},
            ]
        })
    }

    fn rtt_report() -> Value {
        json!({
            "workload": "rtt", "topology": "loopback", "requests_per_run": 100,
            "message_size_bytes": 64, "runs_per_path": 1,
            "results": [
                {"path": "direct", "p50_us": 20.0, "p99_us": 40.0, "per_second": 40000.0,
                 "integrity": true},
                {"path": "relay-splice", "p50_us": 35.5, "p99_us": 80.3, "per_second": 25000.0,
                 "relay_cpu_us_per_request": 7.5, "integrity": true},
            ]
        })
    }

    #[test]
    fn an_upload_chart_has_a_bar_and_a_label_per_path_and_whiskers() {
        let reports = [upload_report()];
        let (metric, title) = choose(&reports, None, None).unwrap();
        assert_eq!(metric, Metric::Seconds);
        let svg = render(&reports, metric, &title);
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "direct",
            "relay-splice",
            "stone&lt;&amp;&gt;",
            "loopback, 8 MiB",
        ] {
            assert!(svg.contains(&format!(">{label}")), "{label} missing: {svg}");
        }
        // The background and one bar per path.
        assert_eq!(svg.matches("<rect").count(), 1 + 3);
        // Two rows with a spread.
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("0.600 s [0.550..0.900], 14.0 MB/s, 1.28 CPU s/GiB"));
        assert!(svg.contains("no result, INTEGRITY FAILED"));
        assert!(svg.contains(FAILED_COLOUR));
        assert_eq!(crate::svg::escape("a<b"), "a&lt;b");
    }

    #[test]
    fn a_latency_chart_draws_p50_over_p99() {
        let reports = [rtt_report()];
        let (metric, title) = choose(&reports, None, None).unwrap();
        assert_eq!(metric, Metric::Latency);
        assert_eq!(title, "spliceway bench --workload rtt: latency per path");
        let svg = render(&reports, metric, &title);
        // Background, then a p99 and a p50 bar per path.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * 2);
        assert_eq!(svg.matches("fill-opacity=\"0.35\"").count(), 2);
        assert!(svg.contains("p50 35.5 µs, p99 80.3 µs, 25000/s, relay CPU 7.5 µs each"));
        assert!(svg.contains("100 rtt requests of 64 B"));
    }

    #[test]
    fn reports_without_a_common_axis_are_refused() {
        let mixed = [upload_report(), rtt_report()];
        assert!(choose(&mixed, None, None).is_err());
        assert!(choose(&[rtt_report()], Some(Metric::Seconds), None).is_err());
        assert!(choose(&[upload_report()], Some(Metric::Latency), None).is_err());
        let (metric, title) =
            choose(&[upload_report()], Some(Metric::Relative), Some("mine")).unwrap();
        assert_eq!((metric, title.as_str()), (Metric::Relative, "mine"));
        let svg = render(&[upload_report()], metric, "mine");
        // The direct path has no whisker against itself.
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn markdown_tables() {
        let table = markdown(&upload_report());
        assert!(
            table.starts_with("| path | seconds | s min..max | MB/s |"),
            "{table}"
        );
        assert!(table.contains("| relay-splice | 0.600 | 0.550..0.900 | 14.0 | 0.010 | 1.280 | - | 1.20x | 1.10x..1.30x | ok |"), "{table}");
        assert!(table.contains("On loopback"));
        let table = markdown(&rtt_report());
        assert!(
            table.contains("| relay-splice | 35.5 | 80.3 | - | - | 25000 | 7.5 | ok |"),
            "{table}"
        );
    }

    #[test]
    fn numbers_print_as_python_g() {
        assert_eq!(g(512.0), "512");
        assert_eq!(g(0.1), "0.1");
        assert_eq!(g(2.5), "2.5");
        assert_eq!(g(115.94), "115.94");
    }
}
