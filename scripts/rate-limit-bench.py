#!/usr/bin/env python3
"""Rate-limit precision, fairness and wake-ups of a running relay (docs/rate-limits.md).

Starts a sink on 127.0.0.1 (threads counting each connection's bytes), runs RELAY_COMMAND
(with {listen} and {upstream} replaced by ports), opens N connections through it that each
send as fast as the relay lets them for SECONDS, and prints, as JSON:

- each connection's achieved rate over the window (after a 1 s warm-up), and the total;
- the relay's CPU time (utime + stime from /proc/PID/stat) per GiB moved;
- the relay's wake-ups: voluntary context switches of all its threads (/proc/PID/task/*/status)
  per second and per connection.

    scripts/rate-limit-bench.py --connections 10 --seconds 10 -- \
        target/release/spliceway run --config CONFIG_WITH_{listen}_AND_{upstream}

A config path containing {listen}/{upstream} is copied with them replaced. Loopback only; wrap
timing runs in `flock /work/bench.lock` (docs/benchmarks.md).
"""
import argparse, json, os, re, signal, socket, subprocess, sys, tempfile, threading, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_switches(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{task}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = [a for a in args.command if a != "--"]
    listen, upstream = free_port(), free_port()

    # The sink: per-connection byte counters with timestamps of the window's edges.
    counts = []
    lock = threading.Lock()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", upstream))
    server.listen(64)

    def serve(conn, index):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            counts[index][0] += n
        conn.close()

    def accept_loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with lock:
                counts.append([0])
                index = len(counts) - 1
            threading.Thread(target=serve, args=(conn, index), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()

    tmp = tempfile.mkdtemp()
    resolved = []
    for a in command:
        a = a.replace("{listen}", str(listen)).replace("{upstream}", str(upstream))
        if os.path.isfile(a) and a.endswith(".toml"):
            text = open(a).read().replace("{listen}", str(listen)).replace("{upstream}", str(upstream))
            a = os.path.join(tmp, os.path.basename(a))
            open(a, "w").write(text)
        resolved.append(a)
    relay = subprocess.Popen(resolved, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.2)
    with lock:
        counts.clear()  # the probes

    stop = threading.Event()
    chunk = b"\x5a" * (1 << 20)

    def send():
        c = socket.create_connection(("127.0.0.1", listen))
        while not stop.is_set():
            try:
                c.sendall(chunk)
            except OSError:
                break
        c.close()

    senders = [threading.Thread(target=send, daemon=True) for _ in range(args.connections)]
    for t in senders:
        t.start()
    time.sleep(args.warmup)
    with lock:
        start_counts = [c[0] for c in counts]
    cpu0, sw0, t0 = proc_cpu(relay.pid), proc_switches(relay.pid), time.monotonic()
    time.sleep(args.seconds)
    with lock:
        end_counts = [c[0] for c in counts]
    cpu1, sw1, t1 = proc_cpu(relay.pid), proc_switches(relay.pid), time.monotonic()
    stop.set()
    relay.send_signal(signal.SIGTERM)
    try:
        relay.wait(timeout=10)
    except subprocess.TimeoutExpired:
        relay.kill()
    server.close()
    elapsed = t1 - t0
    moved = [e - s for s, e in zip(start_counts, end_counts)]
    total = sum(moved)
    result = {
        "command": " ".join(command),
        "connections": args.connections,
        "seconds": round(elapsed, 3),
        "per_connection_mbit_s": [round(m * 8 / elapsed / 1e6, 2) for m in moved],
        "total_mbit_s": round(total * 8 / elapsed / 1e6, 2),
        "relay_cpu_seconds": round(cpu1 - cpu0, 3),
        "relay_cpu_s_per_gib": round((cpu1 - cpu0) / (total / 2**30), 4) if total else None,
        "wakeups_per_s": round((sw1 - sw0) / elapsed, 1),
        "wakeups_per_s_per_connection": round((sw1 - sw0) / elapsed / args.connections, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
