#!/usr/bin/env python3
"""Per-run network work behind `spliceway bench --topology emulated` (needs root).

Runs the emulated benchmark and, at the end of every run, reads the kernel's counters: system
softirq ticks and ksoftirqd CPU ticks (/proc/stat, /proc/PID/stat) and TCP segment counts in
each of the benchmark's namespaces (/proc/net/snmp via `ip netns exec`). It prints one line per
run with the deltas, so a run's relay CPU can be read beside the packet work on its path.

Written to explain the two CPU regimes under `--relay-cpu 0.1` (docs/benchmarks.md): on this
kernel (no CONFIG_IRQ_TIME_ACCOUNTING) softirq work done on the relay's thread counts as the
relay's CPU.

    sudo scripts/softirq-per-run.py --runs 4 -- --size 128MiB --relay-cpu 0.1

Arguments after `--` go to `spliceway bench` (which always gets `--topology emulated`).
"""

import argparse
import glob
import re
import subprocess
import sys

BIN = "target/release/spliceway"
ROLES = ("client", "relay", "s3")
SNMP_KEYS = ("InSegs", "OutSegs", "RetransSegs")


def ksoftirqd_ticks():
    """utime + stime of every ksoftirqd thread, in clock ticks."""
    total = 0
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                stat = f.read()
        except OSError:
            continue
        if "(ksoftirqd/" in stat:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total


def softirq_ticks():
    """The softirq column of the `cpu` line of /proc/stat."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[7])


def tcp_counters(namespace):
    """InSegs, OutSegs and RetransSegs of one namespace; empty if it is gone."""
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", namespace, "cat", "/proc/net/snmp"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except subprocess.TimeoutExpired:
        return {}
    rows = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
    if len(rows) != 2:
        return {}
    values = dict(zip(rows[0][1:], rows[1][1:]))
    return {key: int(values[key]) for key in SNMP_KEYS}


def snapshot(prefix):
    counters = {"softirq": softirq_ticks(), "ksoftirqd": ksoftirqd_ticks()}
    for role in ROLES:
        for key, value in tcp_counters(prefix + role).items():
            counters[f"{role}.{key}"] = value
    return counters


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("bench_args", nargs="*", help="passed to spliceway bench (after --)")
    args = parser.parse_args()
    command = [BIN, "bench", "--topology", "emulated", "--runs", str(args.runs)]
    command += args.bench_args
    bench = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    # Namespaces are named after the bench's PID (crates/spliceway-bench/src/netns.rs).
    prefix = f"swb{bench.pid}-"
    print(
        "run | relay CPU s | softirq ticks | ksoftirqd ticks | relay segs in | relay segs out "
        "| client segs out | s3 segs out | retransmits (all)"
    )
    previous = None
    for line in bench.stderr:
        line = line.rstrip()
        now = snapshot(prefix)
        run = re.match(r"run (\d+/\d+) ([\w.-]+):", line)
        if previous is not None and run:
            delta = {key: now[key] - previous.get(key, 0) for key in now}
            cpu = re.search(r"relay CPU ([0-9.]+) s", line)
            retransmits = sum(delta.get(f"{role}.RetransSegs", 0) for role in ROLES)
            print(
                f"{run.group(1)} {run.group(2)} | {cpu.group(1) if cpu else '-'} | "
                f"{delta['softirq']} | {delta['ksoftirqd']} | {delta.get('relay.InSegs', 0)} | "
                f"{delta.get('relay.OutSegs', 0)} | {delta.get('client.OutSegs', 0)} | "
                f"{delta.get('s3.OutSegs', 0)} | {retransmits}",
                flush=True,
            )
        previous = now
    return bench.wait()


if __name__ == "__main__":
    sys.exit(main())
