#!/usr/bin/env python3
"""How many UDP sessions (and descriptors) a DNS-like load leaves open, with and without
`--udp-responses 1` (docs/udp.md, "Sessions ended by their answers").

Each of N clients asks one question from a new socket (a new source port, as a resolver does)
through `spliceway relay --udp` to an echo on loopback, waits for the answer and closes. Then
the relay's metrics say how many sessions are still open, and /proc how many descriptors the
relay holds. Loopback only; ports are taken from the kernel.

    scripts/udp-sessions-held.py [--clients 5000] [--spliceway target/release/spliceway]
"""
import argparse
import os
import socket
import subprocess
import threading
import time
import urllib.request


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo(sock):
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def run(spliceway, upstream, clients, extra):
    listen = free_port(socket.SOCK_DGRAM)
    metrics = free_port(socket.SOCK_STREAM)
    relay = subprocess.Popen(
        [spliceway, "relay", "--udp", f"127.0.0.1:{listen}", f"127.0.0.1:{upstream}",
         "--threads", "1", "-q", "--drain-timeout", "1s", "--metrics", f"127.0.0.1:{metrics}"]
        + extra)
    try:
        answered = 0
        deadline = time.time() + 10
        # Wait (bounded) until the relay answers.
        while time.time() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(0.2)
                c.sendto(b"ready?", ("127.0.0.1", listen))
                try:
                    c.recv(100)
                    break
                except OSError:
                    pass
        started = time.time()
        for i in range(clients):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(1)
                c.sendto(b"question %d" % i, ("127.0.0.1", listen))
                try:
                    c.recv(100)
                    answered += 1
                except OSError:
                    pass
        elapsed = time.time() - started
        time.sleep(0.3)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read()
        active = next(line.split()[-1] for line in text.decode().splitlines()
                      if line.startswith("spliceway_udp_sessions_active"))
        fds = len(os.listdir(f"/proc/{relay.pid}/fd"))
        flags = " ".join(extra) or "(no --udp-responses)"
        print(f"| {flags} | {answered} of {clients} in {elapsed:.1f} s | {active} | {fds} |")
    finally:
        relay.terminate()
        relay.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--spliceway", default="target/release/spliceway")
    args = parser.parse_args()
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    threading.Thread(target=echo, args=(upstream,), daemon=True).start()
    port = upstream.getsockname()[1]
    print("| relay | questions answered | sessions open after | relay descriptors |")
    print("| --- | --- | --- | --- |")
    run(args.spliceway, port, args.clients, [])
    run(args.spliceway, port, args.clients, ["--udp-responses", "1"])


if __name__ == "__main__":
    main()
