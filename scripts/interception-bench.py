#!/usr/bin/env python3
"""Relay CPU with and without interception, side by side (issue 28's figures).

In the namespaces of scripts/interception-netns.sh (a client, a relay with the REDIRECT rule,
a server), each round starts one `spliceway relay --threads 1 -q` per variant in turn and
measures its CPU (the sum of its threads' /proc schedstat run time) over the same workload:

  fixed                 relay 10.88.1.2:15010 10.88.2.2:7001       (the client dials the relay)
  original-destination  relay 0.0.0.0:15001 original-destination   (the client dials the server;
                        --upstream-allow 10.88.2.0/24               REDIRECT sends it to the relay)
  http-connect          relay 10.88.1.2:3128 http-connect           (CONNECT sink.test:7001, a
                        --connect-allow sink.test:7001 ...          name from the relay ns's hosts)

Workloads: `connect` (N connections, each one byte up, the sink's answer down: relay CPU per
connection, in µs) and `upload` (one SIZE upload to `spliceway sink`, SHA-256 checked: relay
CPU per GiB, in s). Medians over --rounds interleaved rounds, with the range in brackets.

  sudo flock /work/bench.lock scripts/interception-bench.py --binary target/release/spliceway \\
      --rounds 7 --connections 2000 --size 512MiB

Needs root, iproute2, nftables. Creates and deletes namespaces swib-<pid>-*.
"""

import argparse
import glob
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY = os.path.join(ROOT, "scripts", "interception-netns.sh")
SINK = ("10.88.2.2", 7001)


def size_bytes(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def enter(ns):
    """Moves this process's network namespace (the client side runs here)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET; os.setns needs Python 3.12
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def cpu_ns(pid):
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def wait_listening(addr, deadline=10.0):
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        try:
            with socket.create_connection(addr, timeout=1) as s:
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {addr}")


def tunnel(s, target):
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = s.recv(1)
        if not byte:
            raise RuntimeError("the relay closed before answering CONNECT")
        head += byte
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"CONNECT refused: {head!r}")


def open_conn(variant):
    s = socket.create_connection(variant["dial"], timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if variant["connect"]:
        tunnel(s, "sink.test:7001")
    return s


def read_all(s):
    chunks = []
    while True:
        data = s.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def connections(variant, count):
    for _ in range(count):
        s = open_conn(variant)
        s.sendall(b"x")
        s.shutdown(socket.SHUT_WR)
        answer = read_all(s)
        s.close()
        if not answer:
            raise RuntimeError("no answer from the sink")


def upload(variant, payload, digest):
    s = open_conn(variant)
    view = memoryview(payload)
    step = 1 << 20
    for i in range(0, len(payload), step):
        s.sendall(view[i : i + step])
    s.shutdown(socket.SHUT_WR)
    answer = read_all(s).decode(errors="replace")
    s.close()
    if str(len(payload)) not in answer or digest not in answer:
        raise RuntimeError(f"integrity check failed: the sink answered {answer!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "spliceway"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--size", default="512MiB")
    parser.add_argument("--workload", choices=["connect", "upload", "both"], default="both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("interception-bench: needs root (network namespaces, nftables)")
    binary = os.path.abspath(args.binary)
    name = f"swib-{os.getpid()}"
    relay_ns, client_ns, server_ns = f"{name}-r", f"{name}-c", f"{name}-a"
    hosts_dir = f"/etc/netns/{relay_ns}"
    subprocess.run(["bash", TOPOLOGY, "up", name], check=True)
    children = []
    try:
        os.makedirs(hosts_dir, exist_ok=True)
        with open(os.path.join(hosts_dir, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n10.88.2.2 sink.test\n")
        sink = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, binary, "sink", "--listen", f"{SINK[0]}:{SINK[1]}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(sink)
        variants = [
            {"name": "fixed", "argv": ["10.88.1.2:15010", "10.88.2.2:7001"], "dial": ("10.88.1.2", 15010), "connect": False},
            {
                "name": "original-destination",
                "argv": ["0.0.0.0:15001", "original-destination", "--upstream-allow", "10.88.2.0/24"],
                "dial": SINK,
                "connect": False,
                "ready": ("10.88.1.2", 15001),
            },
            {
                "name": "http-connect",
                "argv": ["10.88.1.2:3128", "http-connect", "--connect-allow", "sink.test:7001", "--upstream-allow", "10.88.2.0/24"],
                "dial": ("10.88.1.2", 3128),
                "connect": True,
            },
        ]
        enter(client_ns)
        payload = bytes(range(256)) * (size_bytes(args.size) // 256)
        digest = hashlib.sha256(payload).hexdigest()
        workloads = ["connect", "upload"] if args.workload == "both" else [args.workload]
        results = {(v["name"], w): [] for v in variants for w in workloads}
        # The sink's port is redirected from the client's side: give it a moment instead.
        time.sleep(1)
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else list(reversed(variants))
            for variant in order:
                relay = subprocess.Popen(
                    ["ip", "netns", "exec", relay_ns, binary, "relay", *variant["argv"], "--threads", "1", "-q"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                children.append(relay)
                try:
                    wait_listening(variant.get("ready", variant["dial"]))
                    # The relay is `ip netns exec`'s child after the exec: the same pid.
                    time.sleep(0.2)
                    pid = relay.pid
                    for workload in workloads:
                        before = cpu_ns(pid)
                        if workload == "connect":
                            connections(variant, args.connections)
                            time.sleep(0.1)
                            used = cpu_ns(pid) - before
                            results[(variant["name"], workload)].append(used / 1e3 / args.connections)
                        else:
                            upload(variant, payload, digest)
                            used = cpu_ns(pid) - before
                            results[(variant["name"], workload)].append(used / 1e9 / (len(payload) / (1 << 30)))
                finally:
                    relay.terminate()
                    try:
                        relay.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        relay.kill()
                        relay.wait()
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
        print(f"{args.rounds} interleaved rounds; binary {binary}")
        print("| variant | relay CPU per connection (µs) | relay CPU per GiB (s) |")
        print("| --- | --- | --- |")
        for variant in variants:
            cells = []
            for workload, fmt in [("connect", "{:.1f}"), ("upload", "{:.3f}")]:
                values = results.get((variant["name"], workload))
                if not values:
                    cells.append("-")
                    continue
                cells.append(
                    f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
                )
            print(f"| {variant['name']} | {cells[0]} | {cells[1]} |")
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
        subprocess.run(["bash", TOPOLOGY, "down", name], check=False)
        try:
            os.remove(os.path.join(hosts_dir, "hosts"))
            os.rmdir(hosts_dir)
        except OSError:
            pass


if __name__ == "__main__":
    main()
