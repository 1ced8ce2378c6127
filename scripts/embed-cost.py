#!/usr/bin/env python3
"""Relay CPU per GiB of the embedding example `connect_proxy` next to `spliceway relay`.

    scripts/embed-cost.py SPLICEWAY CONNECT_PROXY [MIB] [ROUNDS]

Both relay one upload of MIB MiB (default 512) to `spliceway sink` on 127.0.0.1, in interleaved
rounds (default 5): `SPLICEWAY relay` is a route with one worker; `CONNECT_PROXY` (the binary
built by `cargo build --release -p spliceway --example connect_proxy`) is an HTTP CONNECT proxy
that adopts each tunnel into a relay with one worker. The client sends pseudo-random data,
hashes what it sent with SHA-256 and checks the sink's answer (byte count and hash). The relay's
CPU time is read from /proc/PID/task/*/schedstat (every thread of the process, the proxy's
handshake threads included) around the transfer. Prints each round and the medians of CPU
seconds per GiB and of throughput. Traffic stays on 127.0.0.1.
"""
import glob, hashlib, os, re, socket, statistics, subprocess, sys, time

if len(sys.argv) < 3:
    sys.exit(__doc__)
SPLICEWAY, PROXY = sys.argv[1], sys.argv[2]
MIB = int(sys.argv[3]) if len(sys.argv) > 3 else 512
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
BLOCK = os.urandom(8 << 20)  # repeated, with the round number mixed into each block's start
TOTAL = MIB << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc):
    for _ in range(500):  # at most 5 s
        if proc.poll() is not None:
            sys.exit(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def cpu_ns(pid):
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(open(f).read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def upload(sock, seed):
    """Send TOTAL bytes, end the stream, check the sink's answer; return the hash sent."""
    digest = hashlib.sha256()
    block = bytearray(BLOCK)
    sent = 0
    index = 0
    while sent < TOTAL:
        block[:8] = (seed * 1_000_003 + index).to_bytes(8, "little")
        chunk = memoryview(block)[: min(len(block), TOTAL - sent)]
        sock.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
        index += 1
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while not answer.endswith(b"\n"):
        data = sock.recv(256)
        if not data:
            break
        answer += data
    sock.close()
    expected = f"{TOTAL} {digest.hexdigest()}\n".encode()
    if answer != expected:
        sys.exit(f"integrity check failed: sink answered {answer!r}, expected {expected!r}")


def through_relay(port, sink_port, seed):
    return socket.create_connection(("127.0.0.1", port))


def through_proxy(port, sink_port, seed):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"CONNECT 127.0.0.1:{sink_port} HTTP/1.1\r\nHost: 127.0.0.1:{sink_port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(1)  # byte by byte: nothing past the response head is consumed
        if not data:
            sys.exit("the proxy closed before answering CONNECT")
        head += data
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"the proxy refused the tunnel: {head!r}")
    return s


sink_port = free_port()
sink = subprocess.Popen([SPLICEWAY, "sink", "--listen", f"127.0.0.1:{sink_port}", "-q"])
wait_listening(sink_port, sink)
setups = {
    "spliceway relay": lambda port: [SPLICEWAY, "relay", f"127.0.0.1:{port}", f"127.0.0.1:{sink_port}", "--threads", "1", "-q"],
    "connect_proxy (adopt)": lambda port: [PROXY, f"127.0.0.1:{port}"],
}
connectors = {"spliceway relay": through_relay, "connect_proxy (adopt)": through_proxy}
cpu = {k: [] for k in setups}
rate = {k: [] for k in setups}
try:
    for r in range(ROUNDS):
        for name, command in setups.items():
            port = free_port()
            proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_listening(port, proc)
                time.sleep(0.2)
                sock = connectors[name](port, sink_port, r)
                c0, t0 = cpu_ns(proc.pid), time.monotonic()
                upload(sock, r)
                c1, t1 = cpu_ns(proc.pid), time.monotonic()
            finally:
                proc.send_signal(2)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            gib = TOTAL / (1 << 30)
            cpu[name].append((c1 - c0) / 1e9 / gib)
            rate[name].append(TOTAL / (t1 - t0) / 1e6)
            print(f"round {r + 1} {name}: {cpu[name][-1]:.3f} CPU s/GiB, {rate[name][-1]:.0f} MB/s, hash ok", flush=True)
finally:
    sink.send_signal(2)
    sink.wait(timeout=10)
for name in setups:
    print(
        f"median {name}: {statistics.median(cpu[name]):.3f} CPU s/GiB "
        f"({', '.join(f'{x:.3f}' for x in cpu[name])}), {statistics.median(rate[name]):.0f} MB/s"
    )
