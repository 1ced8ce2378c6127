#!/usr/bin/env python3
"""Relay CPU per new connection (or per small round trip) of two `spliceway` variants, side by
side in interleaved rounds.

    scripts/connection-cost.py [--rtt] NAME=BINARY[ ARGS...] NAME=BINARY[ ARGS...] [COUNT] [ROUNDS]

With `--rtt`, each round makes one connection and COUNT round trips of 64 bytes over it (the
client sends 64 bytes, waits for the echo, and so on; TCP_NODELAY on both ends), and prints
the relay's CPU per round trip instead of per connection.

A variant is a binary and, optionally, more `spliceway relay` flags after it in the same
argument (quote it). With `--accept-proxy v1|v2|any` the client sends a PROXY protocol header
(v1 for v1, v2 otherwise) in the same write as its byte, as a load balancer would; e.g.
`plain=target/release/spliceway 'proxy=target/release/spliceway --accept-proxy v2 --accept-proxy-from 127.0.0.1'`
measures
what reading the header costs.

Each round starts `BINARY relay` on loopback (one worker) in front of an echo server and makes
CONNECTIONS connections one after the other, each sending one byte, half-closing and reading the
answer; the relay's CPU time is read from /proc/PID/task/*/schedstat (nanoseconds). Prints each
round and the medians. Used to measure what the crash protection (SO_LINGER 0 from the start)
costs per connection: build the second binary from a tree without it. Traffic stays on 127.0.0.1.
"""
import socket, subprocess, sys, threading, time, statistics, glob
RTT = "--rtt" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--rtt"]
if len(ARGS) < 2:
    sys.exit(__doc__)
BINS = {name: spec.split() for name, spec in (arg.split("=", 1) for arg in ARGS[0:2])}
RTT_BYTES = 64
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
N = int(ARGS[2]) if len(ARGS) > 2 else (20000 if RTT else 4000)
ROUNDS = int(ARGS[3]) if len(ARGS) > 3 else 5
up = socket.socket(); up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); up.bind(("127.0.0.1", 0)); up.listen(1024)
def serve():
    """Echo one small request per connection, then end the stream."""
    while True:
        c, _ = up.accept()
        if RTT:
            # Echo every message until the client ends (the warm-up probe sends one byte).
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while d := c.recv(65536):
                c.sendall(d)
            c.close()
            continue
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
UNIT = "round trip" if RTT else "connection"
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
        if RTT:
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(header_for(extra))
            msg = b"m" * RTT_BYTES
            c0 = cpu_ns(p.pid)
            for i in range(N):
                s.sendall(msg)
                got = 0
                while got < RTT_BYTES:
                    chunk = s.recv(RTT_BYTES - got)
                    if not chunk: sys.exit(f"{name}: the relay ended the connection")
                    got += len(chunk)
            c1 = cpu_ns(p.pid)
            s.close()
        else:
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
        print(f"round {r+1} {name}: {us:.1f} us relay CPU per {UNIT}", flush=True)
for name, v in results.items():
    print(f"median {name}: {statistics.median(v):.1f} us per {UNIT} ({', '.join(f'{x:.1f}' for x in v)})")
