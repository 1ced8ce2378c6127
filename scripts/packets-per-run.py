#!/usr/bin/env python3
"""Packets into and out of the relay host per run of `spliceway bench --topology emulated`.

Runs the emulated benchmark and, between runs, reads the relay namespace's counters: `nstat -az`
(IP and TCP MIB counters: IpInReceives, IpOutRequests, TcpInSegs, TcpOutSegs, delayed ACKs, ...)
and the link statistics of its two veth ends (r-c from the client, r-s to S3). It prints, per
run, the deltas and bytes per packet, so a relay's CPU can be read beside the number of packets
it handled; with --ss it also prints `ss -tin` of the relay's sockets taken 2 s into each run.

    sudo scripts/packets-per-run.py --runs 1 --ss -- --link direct-connect --pattern aws-cli \\
        --size 512MiB --relay-cpu 0.1

Arguments after `--` go to `spliceway bench` (which always gets `--topology emulated`). With
GRO on (`--nic ec2`), IP counts merged packets, the link counts frames as they crossed the veth.
"""

import argparse
import re
import subprocess
import sys
import threading

BIN = "target/release/spliceway"
KEYS = (
    "IpInReceives",
    "IpOutRequests",
    "IpExtInOctets",
    "IpExtOutOctets",
    "TcpInSegs",
    "TcpOutSegs",
    "TcpRetransSegs",
    "TcpExtDelayedACKs",
    "TcpExtTCPPureAcks",
    "TcpExtTCPHPAcks",
    "TcpExtTCPAutoCorking",
    "TcpExtTCPOrigDataSent",
)
LINKS = (("r-c", "rx"), ("r-c", "tx"), ("r-s", "rx"), ("r-s", "tx"))


def in_ns(namespace, argv):
    try:
        return subprocess.run(
            ["ip", "netns", "exec", namespace] + argv,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except subprocess.TimeoutExpired:
        return ""


def snapshot(namespace):
    counters = {}
    out = in_ns(namespace, ["nstat", "-az"])
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in KEYS:
            counters[words[0]] = int(words[1])
    for dev, way in LINKS:
        for unit in ("packets", "bytes"):
            text = in_ns(namespace, ["cat", f"/sys/class/net/{dev}/statistics/{way}_{unit}"])
            if text.strip():
                counters[f"{dev}.{way}_{unit}"] = int(text)
    return counters


def per(numerator, denominator):
    return f"{numerator / denominator:.0f}" if denominator else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ss", action="store_true", help="ss -tin 2 s into each run")
    parser.add_argument("bench_args", nargs="*", help="passed to spliceway bench (after --)")
    args = parser.parse_args()
    command = [BIN, "bench", "--topology", "emulated", "--runs", str(args.runs)]
    command += args.bench_args
    bench = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    # Namespaces are named after the bench's PID (crates/spliceway-bench/src/netns.rs).
    namespace = f"swb{bench.pid}-relay"
    sampled = {}

    def sample_ss(key):
        threading.Event().wait(2.0)
        sampled[key] = in_ns(namespace, ["ss", "-tin", "state", "established"])

    previous = None
    run_index = 0
    sampler = None
    for line in bench.stderr:
        line = line.rstrip()
        if line.startswith("generating") or not line.startswith("run "):
            print(line, file=sys.stderr)
        now = snapshot(namespace)
        run = re.match(r"run (\d+/\d+) ([\w.-]+):", line)
        if previous is not None and run:
            d = {key: now.get(key, 0) - previous.get(key, 0) for key in now}
            print(f"== {line}")
            print(
                f"  IP in {d.get('IpInReceives', 0)} pkts ({per(d.get('IpExtInOctets', 0), d.get('IpInReceives', 0))} B/pkt), "
                f"out {d.get('IpOutRequests', 0)} pkts ({per(d.get('IpExtOutOctets', 0), d.get('IpOutRequests', 0))} B/pkt)"
            )
            print(
                "  TCP in {TcpInSegs} segs, out {TcpOutSegs} (data {TcpExtTCPOrigDataSent}, retrans {TcpRetransSegs}); "
                "pure ACKs in {TcpExtTCPPureAcks}, delayed ACKs {TcpExtDelayedACKs}, autocorked {TcpExtTCPAutoCorking}".format(
                    **{key: d.get(key, 0) for key in KEYS}
                )
            )
            for dev, way in LINKS:
                packets = d.get(f"{dev}.{way}_packets", 0)
                octets = d.get(f"{dev}.{way}_bytes", 0)
                print(f"  link {dev} {way}: {packets} pkts, {per(octets, packets)} B/pkt")
            if sampler is not None:
                sampler.join()
                print("  ss -tin (2 s in):")
                for ss_line in sampled.get(run_index, "").splitlines():
                    print("    " + ss_line.strip())
            sys.stdout.flush()
        if run or previous is None:
            run_index += 1
            if args.ss:
                sampler = threading.Thread(target=sample_ss, args=(run_index,))
                sampler.start()
        previous = now
    return bench.wait()


if __name__ == "__main__":
    sys.exit(main())
