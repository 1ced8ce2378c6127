#!/usr/bin/env python3
"""Draws `spliceway bench --json` results as an SVG bar chart (Python 3 standard library only).

    scripts/plot-bench.py target/bench/compare-peers-loopback-*.json -o docs/figures/loopback.svg
    scripts/plot-bench.py a.json b.json -o out.svg --metric relative --title "Emulated links"
    scripts/plot-bench.py a.json --markdown        # the table, for docs/benchmarks.md

One horizontal bar per path, grouped by input file (each group headed by its topology, size,
runs and CPU cap). For upload reports the bar length is the median seconds (or, with --metric
relative, the time relative to the direct path), with a whisker from the fastest to the slowest
run where the report has them (seconds_min/max, relative_to_direct_min/max); the label gives the
value, MB/s and the relay's CPU seconds per GiB. For request reports (--workload rtt or connect)
there is no upload time: the bar is the median p50 latency, drawn over a lighter bar to the p99,
labelled with both, the rate and the relay's CPU per request (--metric latency, their default).
Upload and request reports have no common axis and are refused together. Paths whose integrity
check failed are drawn in red and marked.
"""

import argparse
import json
import math
import sys
from html import escape

BAR_HEIGHT = 20
BAR_GAP = 6
GROUP_GAP = 18
HEADING_HEIGHT = 22
LABEL_WIDTH = 130
CHART_WIDTH = 520
VALUE_WIDTH = 400
MARGIN = 16
TITLE_HEIGHT = 30
AXIS_HEIGHT = 28

COLOURS = {
    "direct": "#7f8c8d",
    "vpc": "#95a5a6",
    "via": "#7f8c8d",
    "relay-splice": "#1f77b4",
    "relay-copy": "#ff7f0e",
}
PEER_COLOUR = "#9467bd"
FAILED_COLOUR = "#d62728"


def load(path):
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    if not isinstance(report, dict) or "results" not in report:
        sys.exit(f"plot-bench.py: {path} is not `spliceway bench --json` output")
    return report


def heading(report):
    if is_requests(report):
        what = f"{report.get('requests_per_run', '?')} {report['workload']} requests of {report.get('message_size_bytes', '?')} B"
    else:
        what = f"{report.get('size_bytes', 0) / (1 << 20):g} MiB"
    parts = [report.get("topology", "?"), what, f"{report.get('runs_per_path', '?')} run(s) per path, medians"]
    links = report.get("links")
    if links:
        parts.append(f"internet {links['internet_mbit']:g} Mbit/s, VPC {links['vpc_mbit']:g} Mbit/s")
    cap = report.get("relay_cpu_limit")
    if cap is not None:
        parts.append(f"relay CPU cap {cap:g}")
    return ", ".join(parts)


def is_requests(report):
    """rtt and connect reports measure latency per request, not the time of one upload."""
    return report.get("workload", "upload") != "upload"


def value_of(row, metric):
    if metric == "relative":
        return row.get("relative_to_direct")
    if metric == "latency":
        return row.get("p50_us")
    return row.get("seconds")


def reach_of(row, metric):
    """How far the bar's lighter part or whisker goes: p99 for latency, the slowest run else."""
    if metric == "latency":
        return row.get("p99_us")
    if metric == "relative":
        return row.get("relative_to_direct_max")
    return row.get("seconds_max")


def spread_of(row, metric):
    """(min, max) over the runs, for the whisker of an upload bar; None where not reported."""
    keys = {"relative": "relative_to_direct", "seconds": "seconds"}.get(metric)
    if keys is None or row.get("path") == "direct" and metric == "relative":
        return None
    lo, hi = row.get(keys + "_min"), row.get(keys + "_max")
    return None if lo is None or hi is None else (lo, hi)


def label_of(row, metric):
    value = value_of(row, metric)
    if metric == "latency":
        if value is None:
            text = "no result"
        else:
            text = f"p50 {value:.1f} µs"
            if row.get("p99_us") is not None:
                text += f", p99 {row['p99_us']:.1f} µs"
        if row.get("per_second") is not None:
            text += f", {row['per_second']:.0f}/s"
        cpu = row.get("relay_cpu_us_per_request")
        if cpu is not None:
            text += f", relay CPU {cpu:.1f} µs each"
    else:
        if value is None:
            text = "no result"
        elif metric == "relative":
            text = f"{value:.2f}x direct ({row['seconds']:.3f} s)"
        else:
            text = f"{value:.3f} s"
        spread = spread_of(row, metric)
        if value is not None and spread is not None and spread[0] != spread[1]:
            unit = "x" if metric == "relative" else ""
            digits = 2 if metric == "relative" else 3
            text += f" [{spread[0]:.{digits}f}{unit}..{spread[1]:.{digits}f}{unit}]"
        if row.get("mb_per_s") is not None:
            text += f", {row['mb_per_s']:.1f} MB/s"
        cpu = row.get("relay_cpu_seconds_per_gib")
        if cpu is not None:
            text += f", {cpu:.2f} CPU s/GiB"
    if not row.get("integrity", False):
        text += ", INTEGRITY FAILED"
    return text


def colour_of(row):
    if not row.get("integrity", False):
        return FAILED_COLOUR
    return COLOURS.get(row["path"], PEER_COLOUR)


def nice_max(value):
    """The smallest of 1, 2, 2.5, 5 or 10 times a power of ten that is at least value."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def ticks(axis_max, count=5):
    return [axis_max * i / count for i in range(count + 1)]


def render(reports, metric, title):
    rows = [row for report in reports for row in report["results"]]
    largest = max(
        (max(value_of(r, metric) or 0, reach_of(r, metric) or 0) for r in rows), default=1
    )
    axis_max = nice_max(largest)
    height = MARGIN * 2 + TITLE_HEIGHT + AXIS_HEIGHT
    for report in reports:
        height += HEADING_HEIGHT + len(report["results"]) * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP
    width = MARGIN * 2 + LABEL_WIDTH + CHART_WIDTH + VALUE_WIDTH
    x0 = MARGIN + LABEL_WIDTH
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 16}" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    bars = []
    y = MARGIN + TITLE_HEIGHT
    top = y
    for report in reports:
        bars.append(f'<text x="{MARGIN}" y="{y + 15}" font-weight="bold">{escape(heading(report))}</text>')
        y += HEADING_HEIGHT
        for row in report["results"]:
            value = value_of(row, metric)
            length = 0 if value is None else CHART_WIDTH * value / axis_max
            end = length
            bars.append(
                f'<text x="{x0 - 8}" y="{y + BAR_HEIGHT - 6}" text-anchor="end">{escape(row["path"])}</text>'
            )
            p99 = row.get("p99_us") if metric == "latency" else None
            if p99 is not None:
                # The p99 as a lighter bar behind the p50's.
                reach = CHART_WIDTH * p99 / axis_max
                end = max(end, reach)
                bars.append(
                    f'<rect x="{x0}" y="{y}" width="{reach:.1f}" height="{BAR_HEIGHT}" '
                    f'fill="{colour_of(row)}" fill-opacity="0.35"/>'
                )
            bars.append(
                f'<rect x="{x0}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{colour_of(row)}">'
                f"<title>{escape(row['path'])}: {escape(label_of(row, metric))}</title></rect>"
            )
            spread = spread_of(row, metric) if value is not None else None
            if spread is not None:
                # A whisker from the fastest to the slowest run across the bar's end.
                lo, hi = (CHART_WIDTH * v / axis_max for v in spread)
                mid = y + BAR_HEIGHT / 2
                end = max(end, hi)
                bars.append(
                    f'<path d="M{x0 + lo:.1f} {mid:.1f}H{x0 + hi:.1f}'
                    f"M{x0 + lo:.1f} {mid - 5:.1f}V{mid + 5:.1f}"
                    f'M{x0 + hi:.1f} {mid - 5:.1f}V{mid + 5:.1f}" stroke="#222" fill="none"/>'
                )
            bars.append(
                f'<text x="{x0 + end + 6:.1f}" y="{y + BAR_HEIGHT - 6}">{escape(label_of(row, metric))}</text>'
            )
            y += BAR_HEIGHT + BAR_GAP
        y += GROUP_GAP
    bottom = y - GROUP_GAP
    unit = {
        "relative": "time relative to direct (x); whiskers: fastest..slowest run",
        "latency": "latency per request (µs): p50 (dark), p99 (light)",
    }.get(metric, "median seconds; whiskers: fastest..slowest run")
    for tick in ticks(axis_max):
        x = x0 + CHART_WIDTH * tick / axis_max
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555">{tick:g}</text>')
    if metric == "relative":
        x = x0 + CHART_WIDTH / axis_max
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#333" stroke-dasharray="4 3"/>'
        )
    out.append(f'<text x="{x0 + CHART_WIDTH / 2}" y="{bottom + 28}" text-anchor="middle" fill="#555">{unit}</text>')
    # The grid goes under the bars.
    out.extend(bars)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def fmt(value, decimals):
    return "-" if value is None else f"{value:.{decimals}f}"


def requests_markdown(report):
    """A request workload (rtt, connect) as a Markdown table: latency, rate, relay CPU each."""
    head = ["path", "p50 µs", "p99 µs", "p999 µs", "added p50 µs", "per second",
            "relay CPU µs each", "integrity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        added = r.get("added_p50_us")
        lines.append("| " + " | ".join([
            r["path"],
            fmt(r.get("p50_us"), 1),
            fmt(r.get("p99_us"), 1),
            fmt(r.get("p999_us"), 1),
            "-" if added is None else f"{added:+.1f}",
            fmt(r.get("per_second"), 0),
            fmt(r.get("relay_cpu_us_per_request"), 1),
            "ok" if r.get("integrity") else "FAILED",
        ]) + " |")
    return "\n".join(lines) + "\n"


def fmt_range(lo, hi, decimals, unit=""):
    if lo is None or hi is None:
        return "-"
    return f"{lo:.{decimals}f}{unit}..{hi:.{decimals}f}{unit}"


def markdown(report):
    """The report as a Markdown table (the same columns as the bench's text table): the spread
    columns when the report has more than one run and the spread keys (reports of earlier
    versions have neither), and the origin's hand measurement once, below, as the other test it
    is (earlier versions put its 512 MB figures beside every row)."""
    if is_requests(report):
        return requests_markdown(report)
    rows = report["results"]
    spread = report.get("runs_per_path", 1) > 1 and any("seconds_min" in r for r in rows)
    head = ["path", "seconds"] + (["s min..max"] if spread else [])
    head += ["MB/s", "relay CPU s", "CPU s/GiB"] + (["CPU min..max"] if spread else [])
    head += ["vs direct"] + (["vs min..max"] if spread else []) + ["integrity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rel = r.get("relative_to_direct")
        cells = [r["path"], fmt(r.get("seconds"), 3)]
        if spread:
            cells.append(fmt_range(r.get("seconds_min"), r.get("seconds_max"), 3))
        cells += [
            fmt(r.get("mb_per_s"), 1),
            fmt(r.get("relay_cpu_seconds"), 3),
            fmt(r.get("relay_cpu_seconds_per_gib"), 3),
        ]
        if spread:
            cells.append(
                fmt_range(r.get("relay_cpu_seconds_per_gib_min"), r.get("relay_cpu_seconds_per_gib_max"), 3)
            )
        cells.append("-" if rel is None else f"{rel:.2f}x")
        if spread:
            cells.append(
                "-"
                if r["path"] == "direct"
                else fmt_range(r.get("relative_to_direct_min"), r.get("relative_to_direct_max"), 2, "x")
            )
        cells.append("ok" if r.get("integrity") else "FAILED")
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("topology") == "loopback":
        lines += ["", "On loopback every path shares one machine's CPUs and memory: times and ratios "
                  "swing from run to run, and the relay's CPU s/GiB is the figure that means something."]
    origin = report.get("origin")
    if origin:
        lines += [
            "",
            f"The origin, another test (not this run): {origin['note']} "
            f"({origin['uplink_mbit']:g} Mbit/s uplink).",
            "",
            "| origin path | seconds | vs direct |",
            "|---|---|---|",
        ]
        lines += [
            f"| {o['path']} | {o['seconds']:.3f} | {o['relative_to_direct']:.2f}x |" for o in origin["rows"]
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="files written by `spliceway bench --json`")
    parser.add_argument("-o", "--output", help="the SVG file to write")
    parser.add_argument(
        "--markdown", action="store_true", help="also print each report as a Markdown table"
    )
    parser.add_argument(
        "--metric",
        choices=["seconds", "relative", "latency"],
        help="bar length: median seconds (uploads' default), time relative to direct (uploads), "
        "or p50/p99 latency (rtt and connect reports, their default)",
    )
    parser.add_argument("--title", help="the chart's title (default: after what it shows)")
    args = parser.parse_args()
    if not args.output and not args.markdown:
        parser.error("give -o FILE.svg, --markdown, or both")
    reports = [load(path) for path in args.json]
    requests = {is_requests(report) for report in reports}
    if len(requests) > 1:
        parser.error("upload and rtt/connect reports have no common axis: plot them separately")
    if requests == {True}:
        if args.metric not in (None, "latency"):
            parser.error(f"rtt/connect reports have no upload time: --metric latency, not {args.metric}")
        args.metric = "latency"
        workloads = sorted({report["workload"] for report in reports})
        title = f"spliceway bench --workload {'/'.join(workloads)}: latency per path"
    else:
        if args.metric == "latency":
            parser.error("--metric latency is for rtt/connect reports; uploads have seconds or relative")
        args.metric = args.metric or "seconds"
        title = "spliceway bench: upload time per path"
    args.title = args.title or title
    if args.markdown:
        print("\n".join(markdown(report) for report in reports), end="")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(render(reports, args.metric, args.title))
        print(f"plot-bench.py: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
