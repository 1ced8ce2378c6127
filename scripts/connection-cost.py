#!/usr/bin/env python3
"""Relay CPU per new connection of two `spliceway` variants, side by side in interleaved rounds.

    scripts/connection-cost.py NAME=BINARY[ ARGS...] NAME=BINARY[ ARGS...] [CONNECTIONS] [ROUNDS]

A variant is a binary and, optionally, more `spliceway relay` flags after it in the same
argument (quote it). With `--accept-proxy v1|v2|any` the client sends a PROXY protocol header
(v1 for v1, v2 otherwise) in the same write as its byte, as a load balancer would; e.g.
`plain=target/release/spliceway 'proxy=target/release/spliceway --accept-proxy v2'` measures
what reading the header costs.

Each round starts `BINARY relay` on loopback (one worker) in front of an echo server and makes
CONNECTIONS connections one after the other, each sending one byte, half-closing and reading the
answer; the relay's CPU time is read from /proc/PID/task/*/schedstat (nanoseconds). Prints each
round and the medians. Used to measure what the crash protection (SO_LINGER 0 from the start)
costs per connection: build the second binary from a tree without it. Traffic stays on 127.0.0.1.
"""
import socket, subprocess, sys, threading, time, statistics, glob
if len(sys.argv) < 3:
    sys.exit(__doc__)
BINS = {name: spec.split() for name, spec in (arg.split("=", 1) for arg in sys.argv[1:3])}
import struct
def header_for(args):
    """The bytes a client of this variant sends before its payload."""
    if "--accept-proxy" not in args:
        return b""
    version = args[args.index("--accept-proxy") + 1]
    if version == "v1":
        return b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n"
    block = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack(">HH", 51000, 443)
    return b"\r\n\r\n\0\r\nQUIT\n\x21\x11" + struct.pack(">H", len(block)) + block
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
    for name, (binary, *extra) in BINS.items():
        port = free_port()
        first = header_for(extra) + b"x"
        p = subprocess.Popen([binary, "relay", f"127.0.0.1:{port}", f"127.0.0.1:{up.getsockname()[1]}", "--threads", "1", "-q", *extra], stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                probe = socket.create_connection(("127.0.0.1", port)); probe.sendall(first); probe.close(); break
            except OSError: time.sleep(0.01)
        time.sleep(0.2)
        c0 = cpu_ns(p.pid)
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(first); s.shutdown(socket.SHUT_WR)
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
