#!/usr/bin/env python3
"""Scaling with parallel streams, over loopback.

Aggregate throughput of `iperf3 -P N` direct, through `spliceway relay --threads T` and
through HAProxy (scripts/peers/haproxy.sh: `nbthread T`, TCP mode, `option splice-auto`,
when installed), with the
relay's CPU seconds per GiB. Every relay is started once, on its own port; then the rounds run
interleaved (for each round, each stream count, each path in turn) so that a slow moment of
this shared machine does not land on one path only. The table shows medians.

    scripts/parallel-streams.py                       # T in 1 2, N in 1 4 16, 1 GiB, 3 rounds
    scripts/parallel-streams.py --threads 1 2 4 --streams 1 8 --bytes 4G --rounds 5

Needs iperf3 (apt-get install iperf3). Networking stays on 127.0.0.1; every process started
here is stopped by its PID at the end.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}



def parse_bytes(text):
    """`1G`, `512M`, `4096` -> bytes (binary units, as iperf3 reads them)."""
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, seconds=10.0):
    """Polls a connect until it succeeds; the probe sends nothing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"parallel-streams: {proc.args[0]} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"parallel-streams: nothing listens on port {port} after {seconds} s")


def cpu_seconds(pid):
    """CPU time of a process's live threads, from schedstat (nanoseconds on CPU)."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def iperf(port, streams, nbytes):
    """One upload of `nbytes` over `streams` connections; returns received Gbit/s."""
    out = subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-P", str(streams), "-n", str(nbytes),
         "-l", "1M", "-J"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="relay worker threads")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16], help="iperf3 -P values")
    parser.add_argument("--bytes", default="1G", help="bytes per measurement (iperf3 -n), e.g. 1G")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown")
    parser.add_argument("--no-haproxy", action="store_true", help="leave HAProxy out")
    parser.add_argument("--json", metavar="FILE", help="also save every measurement as JSON")
    args = parser.parse_args()
    nbytes = parse_bytes(args.bytes)

    if shutil.which("iperf3") is None:
        sys.exit("parallel-streams: iperf3 is missing (apt-get install iperf3)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "spliceway-cli"], cwd=ROOT, check=True)
    spliceway = os.path.join(ROOT, "target", "release", "spliceway")
    use_haproxy = not args.no_haproxy and shutil.which("haproxy") is not None

    procs = []
    tmp = tempfile.mkdtemp(prefix="parallel-streams.")
    os.environ["PEER_DIR"] = tmp  # where scripts/peers/haproxy.sh writes its configuration

    def start(argv, port):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_listening(port, proc)
        return proc

    def stop_all(*_):
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server_port = free_port()
        start(["iperf3", "-s", "-p", str(server_port)], server_port)
        # path name -> (port, pid or None, threads)
        paths = {"direct": (server_port, None, "-")}
        for t in args.threads:
            port = free_port()
            proc = start([spliceway, "relay", f"127.0.0.1:{port}", f"127.0.0.1:{server_port}",
                          "--threads", str(t), "-q"], port)
            paths[f"spliceway T={t}"] = (port, proc.pid, t)
            if use_haproxy:
                port = free_port()
                proc = start([os.path.join(ROOT, "scripts", "peers", "haproxy.sh"),
                              f"127.0.0.1:{port}", f"127.0.0.1:{server_port}", str(t)], port)
                paths[f"haproxy T={t}"] = (port, proc.pid, t)

        runs = {(name, n): [] for name in paths for n in args.streams}
        for rnd in range(1, args.rounds + 1):
            for n in args.streams:
                for name, (port, pid, _) in paths.items():
                    cpu0 = cpu_seconds(pid) if pid else None
                    gbit = iperf(port, n, nbytes)
                    cpu = cpu_seconds(pid) - cpu0 if pid else None
                    runs[(name, n)].append({"round": rnd, "gbit_per_s": gbit, "relay_cpu_seconds": cpu})
                    print(f"round {rnd} streams {n:>3} {name:<14} {gbit:6.2f} Gbit/s"
                          + (f"  relay CPU {cpu:.3f} s" if cpu is not None else ""), file=sys.stderr)
    finally:
        stop_all()

    print(f"\n{nbytes / GIB:g} GiB per measurement, medians of {args.rounds} interleaved rounds\n")
    print("| path | threads | streams | Gbit/s | vs direct | relay CPU s/GiB |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, (_, pid, threads) in paths.items():
        for n in args.streams:
            gbit = statistics.median(r["gbit_per_s"] for r in runs[(name, n)])
            direct = statistics.median(r["gbit_per_s"] for r in runs[("direct", n)])
            cpu = (statistics.median(r["relay_cpu_seconds"] for r in runs[(name, n)]) / (nbytes / GIB)
                   if pid else None)
            label = name.split(" ")[0]
            print(f"| {label} | {threads} | {n} | {gbit:.2f} | {gbit / direct:.2f}x | "
                  + (f"{cpu:.3f} |" if cpu is not None else "- |"))
            rows.append({"path": label, "threads": threads, "streams": n, "gbit_per_s": gbit,
                         "relative_to_direct": gbit / direct, "relay_cpu_seconds_per_gib": cpu,
                         "runs": runs[(name, n)]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bytes_per_measurement": nbytes, "rounds": args.rounds,
                       "cpus": os.cpu_count(), "unix_time": int(time.time()), "results": rows}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
