#!/usr/bin/env python3
"""Relay CPU per GiB with `spliceway top` refreshing every second, side by side with no observer.

Starts `spliceway run` (the binary given) with two routes on loopback: `data`, to a discarding
sink, and `idle`, to a listener that holds every connection; opens N idle connections through
`idle` (so each of top's listings walks N connections), then, in interleaved rounds, uploads
GiB bytes through `data` with no observer and with `spliceway top --interval 1s` running in a
tmux pane (80x24), reading the relay's CPU time (utime + stime, /proc) around each upload.
Prints the median CPU seconds per GiB of each, their ratio, and top's own CPU per round.

    flock /work/bench.lock scripts/observer-cost.py --bin target/release/spliceway \
        --connections 5000 --gib 4 --rounds 3

Needs tmux. Every wait is bounded; everything started is stopped by pid.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CHUNK = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4096)
    return s


def sink(server, received):
    """Discards what each connection sends, counting it."""

    def drain(conn):
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            received[0] += n
        conn.close()

    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


def hold(server, held):
    while True:
        conn, _ = server.accept()
        held.append(conn)


def upload(addr, total):
    data = memoryview(bytes(CHUNK))
    s = socket.create_connection(addr, timeout=60)
    sent = 0
    while sent < total:
        s.sendall(data)
        sent += CHUNK
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    while s.recv(65536):
        pass
    s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--gib", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    received = [0]
    held = []
    data_up, idle_up = listener(), listener()
    threading.Thread(target=sink, args=(data_up, received), daemon=True).start()
    threading.Thread(target=hold, args=(idle_up, held), daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="observer-cost-")
    control = os.path.join(tmp, "control.sock")
    data_port, idle_port = free_port(), free_port()
    config = os.path.join(tmp, "spliceway.toml")
    with open(config, "w") as f:
        f.write(
            f'control_socket = "{control}"\nlog_level = "warn"\n'
            f'[[route]]\nname = "data"\nlisten = ["127.0.0.1:{data_port}"]\n'
            f'upstream = "127.0.0.1:{data_up.getsockname()[1]}"\n'
            f'[[route]]\nname = "idle"\nlisten = ["127.0.0.1:{idle_port}"]\n'
            f'upstream = "127.0.0.1:{idle_up.getsockname()[1]}"\n'
        )
    relay = subprocess.Popen([a.bin, "run", "--config", config, "-q"])
    tmux = ["tmux", "-S", os.path.join(tmp, "tmux")]
    clients = []
    try:
        wait(lambda: os.path.exists(control), "the control socket")
        for _ in range(a.connections):
            clients.append(socket.create_connection(("127.0.0.1", idle_port), timeout=10))
        wait(lambda: len(held) >= a.connections, f"{a.connections} idle connections")
        total = int(a.gib * (1 << 30)) // CHUNK * CHUNK
        results = {"none": [], "top": []}
        top_cpu = []
        for r in range(a.rounds):
            order = ["none", "top"] if r % 2 == 0 else ["top", "none"]
            for mode in order:
                pane = None
                if mode == "top":
                    cmd = f"{a.bin} top --control-socket {control} --interval 1s"
                    subprocess.run(
                        tmux + ["new-session", "-d", "-s", "top", "-x", "80", "-y", "24", cmd],
                        check=True,
                    )
                    pane = int(
                        subprocess.run(
                            tmux + ["display", "-p", "-t", "top", "#{pane_pid}"],
                            check=True,
                            capture_output=True,
                            text=True,
                        ).stdout
                    )
                    time.sleep(1.5)
                    top0 = cpu_seconds(pane)
                before_bytes = received[0]
                c0, t0 = cpu_seconds(relay.pid), time.monotonic()
                upload(("127.0.0.1", data_port), total)
                wait(lambda: received[0] - before_bytes >= total, "the sink")
                c1, t1 = cpu_seconds(relay.pid), time.monotonic()
                if pane is not None:
                    top_cpu.append(cpu_seconds(pane) - top0)
                    subprocess.run(tmux + ["kill-session", "-t", "top"], check=False)
                gib = total / (1 << 30)
                results[mode].append((c1 - c0) / gib)
                print(
                    f"round {r + 1} {mode:>4}: {(c1 - c0):.2f} s CPU for {gib:.1f} GiB in "
                    f"{t1 - t0:.1f} s: {(c1 - c0) / gib:.3f} s/GiB",
                    flush=True,
                )
        none, top = statistics.median(results["none"]), statistics.median(results["top"])
        print(f"\n{a.connections} idle connections, {a.gib} GiB a round, {a.rounds} rounds")
        print("| observer | relay CPU s/GiB (median) |")
        print("| --- | --- |")
        print(f"| none | {none:.3f} |")
        print(f"| spliceway top, 1 s refresh | {top:.3f} |")
        print(f"ratio top/none: {top / none:.3f}")
        print(f"top's own CPU per round: {', '.join(f'{c:.2f} s' for c in top_cpu)}")
    finally:
        subprocess.run(tmux + ["kill-server"], check=False, capture_output=True)
        relay.terminate()
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()
        for c in clients:
            c.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
