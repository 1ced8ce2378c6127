#!/usr/bin/env python3
"""Relay CPU per new connection of two `spliceway` binaries, side by side in interleaved rounds.

    scripts/connection-cost.py NAME=BINARY NAME=BINARY [CONNECTIONS] [ROUNDS]

Each round starts `BINARY relay` on loopback (one worker) in front of an echo server and makes
CONNECTIONS connections one after the other, each sending one byte, half-closing and reading the
answer; the relay's CPU time is read from /proc/PID/task/*/schedstat (nanoseconds). Prints each
round and the medians. Used to measure what the crash protection (SO_LINGER 0 from the start)
costs per connection: build the second binary from a tree without it. Traffic stays on 127.0.0.1.
"""
import socket, subprocess, sys, threading, time, statistics, glob
if len(sys.argv) < 3:
    sys.exit(__doc__)
BINS = dict(arg.split("=", 1) for arg in sys.argv[1:3])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
up = socket.socket(); up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); up.bind(("127.0.0.1", 0)); up.listen(1024)
def serve():
    """Echo one small request per connection, then end the stream."""
    while True:
        c, _ = up.accept()
        d = c.recv(16); c.sendall(d); c.shutdown(socket.SHUT_WR)
        while c.recv(16): pass
        c.close()
threading.Thread(target=serve, daemon=True).start()
def cpu_ns(pid):
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try: total += int(open(f).read().split()[0])
        except OSError: pass
    return total
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
results = {k: [] for k in BINS}
for r in range(ROUNDS):
    for name, binary in BINS.items():
        port = free_port()
        p = subprocess.Popen([binary, "relay", f"127.0.0.1:{port}", f"127.0.0.1:{up.getsockname()[1]}", "--threads", "1", "-q"], stderr=subprocess.DEVNULL)
        for _ in range(200):
            try: socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError: time.sleep(0.01)
        time.sleep(0.2)
        c0 = cpu_ns(p.pid)
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"x"); s.shutdown(socket.SHUT_WR)
            while s.recv(16): pass
            s.close()
        time.sleep(0.1)
        c1 = cpu_ns(p.pid)
        p.send_signal(2); p.wait(timeout=10)
        us = (c1 - c0) / N / 1000
        results[name].append(us)
        print(f"round {r+1} {name}: {us:.1f} us relay CPU per connection", flush=True)
for name, v in results.items():
    print(f"median {name}: {statistics.median(v):.1f} us per connection ({', '.join(f'{x:.1f}' for x in v)})")
