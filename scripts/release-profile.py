#!/usr/bin/env python3
"""Compares two builds of `spliceway` for the release-profile choice (issue 16).

    scripts/release-profile.py NAME=BINARY NAME=BINARY [--starts 200] [--rounds 5] [--size 512MiB]

For each binary: file size as built and stripped (objcopy --strip-debug --strip-unneeded, as the
packages ship it); start-up, the median wall time of `--version` and of
`check --config packaging/spliceway.toml` over --starts runs, the binaries interleaved run by
run; and the loopback bench's relay CPU per GiB (`BINARY bench --size SIZE --runs 1 --json -q`,
splice and copy paths), medians of --rounds interleaved rounds, order alternating each round.
Run it under `flock /tmp/bench.lock` so it never overlaps another measurement.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def args():
    binaries, opts = [], {"--starts": "200", "--rounds": "5", "--size": "512MiB"}
    argv = sys.argv[1:]
    i = 0
    while i < len(argv):
        if argv[i] in opts:
            opts[argv[i]] = argv[i + 1]
            i += 2
        elif "=" in argv[i]:
            name, path = argv[i].split("=", 1)
            binaries.append((name, os.path.abspath(path)))
            i += 1
        else:
            sys.exit(__doc__)
    if len(binaries) < 2:
        sys.exit(__doc__)
    return binaries, int(opts["--starts"]), int(opts["--rounds"]), opts["--size"]


def stripped_size(path):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "s")
        subprocess.run(["objcopy", "--strip-debug", "--strip-unneeded", "--remove-section=.comment", path, out], check=True)
        return os.path.getsize(out)


def start_times(binaries, argv, n):
    times = {name: [] for name, _ in binaries}
    for _ in range(n):
        for name, path in binaries:
            t = time.perf_counter()
            subprocess.run([path] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(path, size):
    out = subprocess.run([path, "bench", "--size", size, "--runs", "1", "--json", "-q"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    data = json.loads(out)
    res = {r["path"]: r for r in data["results"]}
    for r in res.values():
        if not r["integrity"]:
            sys.exit(f"{path}: integrity failure on {r['path']}")
    return {p: res[p]["relay_cpu_seconds_per_gib"] for p in ("relay-splice", "relay-copy")}


def main():
    binaries, starts, rounds, size = args()
    report = {"size": {}, "start": {}, "bench": {}}
    for name, path in binaries:
        report["size"][name] = {"as_built": os.path.getsize(path), "stripped": stripped_size(path)}
    report["start"]["--version"] = start_times(binaries, ["--version"], starts)
    report["start"]["check"] = start_times(binaries, ["check", "--config", "packaging/spliceway.toml"], starts)
    per = {name: {"relay-splice": [], "relay-copy": []} for name, _ in binaries}
    for r in range(rounds):
        order = binaries if r % 2 == 0 else list(reversed(binaries))
        for name, path in order:
            for k, v in bench(path, size).items():
                per[name][k].append(v)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in per[name].items()), file=sys.stderr)
    for name in per:
        report["bench"][name] = {k: {"median": statistics.median(v), "rounds": v} for k, v in per[name].items()}

    print(f"{'':24}" + "".join(f"{n:>16}" for n, _ in binaries))
    row = lambda label, f: print(f"{label:24}" + "".join(f"{f(n):>16}" for n, _ in binaries))
    row("size as built (bytes)", lambda n: report["size"][n]["as_built"])
    row("size stripped (bytes)", lambda n: report["size"][n]["stripped"])
    row("--version median (ms)", lambda n: f"{report['start']['--version'][n] * 1e3:.3f}")
    row("check median (ms)", lambda n: f"{report['start']['check'][n] * 1e3:.3f}")
    row("splice CPU s/GiB", lambda n: f"{report['bench'][n]['relay-splice']['median']:.4f}")
    row("copy CPU s/GiB", lambda n: f"{report['bench'][n]['relay-copy']['median']:.4f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
