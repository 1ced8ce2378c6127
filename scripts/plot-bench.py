#!/usr/bin/env python3
"""Draws `spliceway bench --json` results as an SVG bar chart (Python 3 standard library only).

    scripts/plot-bench.py target/bench/compare-peers-loopback-*.json -o docs/figures/loopback.svg
    scripts/plot-bench.py a.json b.json -o out.svg --metric relative --title "Emulated links"
    scripts/plot-bench.py a.json --markdown        # the table, for docs/benchmarks.md

One horizontal bar per path, grouped by input file (each group headed by its topology, size,
runs and CPU cap). The bar length is the median seconds (or, with --metric relative, the time
relative to the direct path); the label gives the value, MB/s and the relay's CPU seconds per
GiB. Paths whose integrity check failed are drawn in red and marked.
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
VALUE_WIDTH = 330
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
    size = report.get("size_bytes", 0)
    mib = size / (1 << 20)
    parts = [report.get("topology", "?"), f"{mib:g} MiB", f"{report.get('runs_per_path', '?')} run(s) per path, medians"]
    links = report.get("links")
    if links:
        parts.append(f"internet {links['internet_mbit']:g} Mbit/s, VPC {links['vpc_mbit']:g} Mbit/s")
    cap = report.get("relay_cpu_limit")
    if cap is not None:
        parts.append(f"relay CPU cap {cap:g}")
    return ", ".join(parts)


def value_of(row, metric):
    return row.get("relative_to_direct") if metric == "relative" else row.get("seconds")


def label_of(row, metric):
    value = value_of(row, metric)
    if value is None:
        text = "no result"
    elif metric == "relative":
        text = f"{value:.2f}x direct ({row['seconds']:.3f} s)"
    else:
        text = f"{value:.3f} s"
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
    largest = max((value_of(r, metric) or 0 for r in rows), default=1)
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
            bars.append(
                f'<text x="{x0 - 8}" y="{y + BAR_HEIGHT - 6}" text-anchor="end">{escape(row["path"])}</text>'
            )
            bars.append(
                f'<rect x="{x0}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{colour_of(row)}">'
                f"<title>{escape(row['path'])}: {escape(label_of(row, metric))}</title></rect>"
            )
            bars.append(
                f'<text x="{x0 + length + 6:.1f}" y="{y + BAR_HEIGHT - 6}">{escape(label_of(row, metric))}</text>'
            )
            y += BAR_HEIGHT + BAR_GAP
        y += GROUP_GAP
    bottom = y - GROUP_GAP
    unit = "time relative to direct (x)" if metric == "relative" else "median seconds"
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


def markdown(report):
    """The report as a Markdown table (the same columns as the bench's text table)."""
    if report.get("workload", "upload") != "upload":
        return requests_markdown(report)
    origin = report.get("origin") is not None
    head = ["path", "seconds", "MB/s", "relay CPU s", "CPU s/GiB", "vs direct", "integrity"]
    if origin:
        head += ["origin s", "origin vs direct"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        rel = r.get("relative_to_direct")
        cells = [
            r["path"],
            fmt(r.get("seconds"), 3),
            fmt(r.get("mb_per_s"), 1),
            fmt(r.get("relay_cpu_seconds"), 3),
            fmt(r.get("relay_cpu_seconds_per_gib"), 3),
            "-" if rel is None else f"{rel:.2f}x",
            "ok" if r.get("integrity") else "FAILED",
        ]
        if origin:
            o = r.get("origin_seconds")
            direct = report["origin"]["rows"][0]["seconds"]
            cells += [fmt(o, 3), "-" if o is None else f"{o / direct:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
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
        choices=["seconds", "relative"],
        default="seconds",
        help="bar length: median seconds (default) or time relative to direct",
    )
    parser.add_argument("--title", default="spliceway bench: upload time per path")
    args = parser.parse_args()
    if not args.output and not args.markdown:
        parser.error("give -o FILE.svg, --markdown, or both")
    reports = [load(path) for path in args.json]
    if args.markdown:
        print("\n".join(markdown(report) for report in reports), end="")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(render(reports, args.metric, args.title))
        print(f"plot-bench.py: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
