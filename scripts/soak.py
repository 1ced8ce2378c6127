#!/usr/bin/env python3
"""Soak (issue 13, part 3): a mixed load through one `spliceway run` for N minutes, to show
that nothing grows and nothing breaks.

One relay, two routes (`alpha` in splice mode, `beta` in copy mode), each relaying to an
upstream server this script runs on 127.0.0.1. The load, all of it on loopback and bounded in
time and in count per cycle:

- bulk uploads and downloads of 8-32 MiB, a few at once, checked by SHA-256;
- the parallel multipart pattern of `aws s3 cp`: 10 connections each sending 8 MiB parts and
  waiting for the server's SHA-256 of a part before sending the next;
- request/response: small messages (64 B-4 KiB) echoed on one long-lived connection per route
  and on short connections, which also make the churn (about 100 connections a second);
- client resets and upstream resets mid-transfer (SO_LINGER 0), each of which the other side
  must see as a reset, never as a clean end of stream;
- a slow reader and half-closes;
- SIGHUP every 30 s with a rewritten configuration (alpha's idle_timeout toggles between two
  values), and SIGUSR1 then SIGUSR2 every minute;
- abuse of the metrics port (issue 24): more idle connections than the server holds, a client
  pipelining thousands of `GET /metrics` that never reads, oversized request heads; meanwhile
  a separate process polls `/healthz` every 100 ms, and every answer must take at most 200 ms.

Once a second it samples the relay (RSS, descriptors, pipes, threads, the kernel's TCP memory)
into samples.csv. At the end it stops the relay with SIGTERM, draws plot.svg and writes the
verdict to stdout and verdict.txt; the exit status is 0 only when every check passes.

    scripts/soak.sh --minutes 30                # the entry point (builds the binary if needed)
    scripts/soak.py --minutes 2 --binary target/release/spliceway --out /tmp/soak
    scripts/soak.py --self-test                 # the verdict code against synthetic data

Standard library only. Every process started here is stopped by its PID.
"""

import argparse
import collections
import csv
import datetime
import errno
import functools
import hashlib
import http.client
import json
import math
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIB = 1 << 10
MIB = 1 << 20

# Thresholds of the verdict: growth per minute after warm-up that counts as a leak.
RSS_SLOPE_LIMIT_KIB_PER_MIN = 64.0
FD_SLOPE_LIMIT_PER_MIN = 1.0
# Warm-up: the first 20 % of the run or 60 s, whichever is longer, but at most half the run
# (so that a short run still has samples to fit).
WARMUP_FRACTION = 0.2
WARMUP_MIN_SECONDS = 60.0

# WARN/ERROR lines the load provokes on purpose: (regex on the message, why it is expected).
EXPECTED_LOG_PATTERNS = [
    (r"^log level now \S+ \(signal\)$", "SIGUSR1/SIGUSR2 sent by the soak"),
    (r"^running as root: ", "the soak was started as root and its configuration sets no user"),
]
# How the relay's `closed` lines name each planned ending (crates/spliceway/src/connection/
# close_reason.rs); the counts must match what the load planned.
RELAY_END_OF_PLAN = {
    "clean": "both finished",
    "client_reset": "reset by client",
    # A client that half-closed (every byte of it, then its end, passed on) and then reset:
    # not an abort of anything it sent.
    "client_reset_after_end": "reset by client after its end of stream",
    "upstream_reset": "reset by upstream",
}

# Generous timeouts: a slow moment of this shared machine must not look like a relay failure.
CLIENT_TIMEOUT = 120.0
RELAY_IDLE_TIMEOUTS = ("60s", "90s")  # alpha's idle_timeout, toggled by each reload
DRAIN_TIMEOUT_S = 20

# The load (per route where it says so). Kept moderate: 2 cores, shared.
BULK_WORKERS = 3
BULK_SIZES_MIB = (8, 32)
MULTIPART_CONNECTIONS = 10
MULTIPART_PART = 8 * MIB
MULTIPART_PARTS = 4
MULTIPART_PAUSE_S = 10.0
CHURN_WORKERS = 2
CHURN_RATE_PER_WORKER = 50.0  # connections per second
LONG_ECHO_INTERVAL_S = 0.05
ABORT_PAUSE_S = 0.3
SLOW_READ_CHUNK = 32 * KIB
SLOW_READ_PAUSE_S = 0.025
HALF_CLOSE_PAUSE_S = 0.2
MESSAGE_SIZES = (64, 4 * KIB)

# Abuse of the metrics port (issue 24), all through the run. The server holds 64 connections
# and closes the oldest idle one for a new client: more idle clients than that keep it evicting.
METRICS_IDLE_CLIENTS = 100
METRICS_IDLE_OPEN_PER_S = 20.0
METRICS_PIPELINED_REQUESTS = 2000  # per non-reading client, one such client at a time
METRICS_CLOSE_WAIT_S = 30.0  # a non-reader must be closed by the server within this
METRICS_OVERSIZED_HEAD = 64 * KIB  # sent without the end of the head (the limit is 8 KiB)
METRICS_OVERSIZED_PAUSE_S = 0.2
# The health poll: a process of its own (no waiting for this script's GIL), a fresh connection
# per poll, and the limit the verdict holds every answer to.
HEALTH_POLL_INTERVAL_S = 0.1
HEALTH_TIMEOUT_S = 5.0
HEALTH_LATENCY_LIMIT_MS = 200.0

# Intervals of the control thread. SOAK_FAST_SIGNALS=1 (undocumented, for testing the script
# itself) shortens them so that a 1-minute run still sees several reloads and signal pairs.
RELOAD_INTERVAL_S = 30.0
SIGNAL_INTERVAL_S = 60.0
SIGNAL_OFFSET_S = 15.0
if os.environ.get("SOAK_FAST_SIGNALS"):
    RELOAD_INTERVAL_S, SIGNAL_INTERVAL_S, SIGNAL_OFFSET_S = 5.0, 10.0, 2.5

DATA_SIZE = 64 * MIB  # every payload is a slice of this block, so both ends know its hash
LINGER_ZERO = struct.pack("ii", 1, 0)


# ------------------------------------------------------------------------------------------
# Shared counters
# ------------------------------------------------------------------------------------------


class Tally:
    """Counters shared by every load and server thread, and the first few problems in words.

    A lock because `counter[key] += 1` from many threads is not atomic."""

    MAX_PROBLEMS = 40

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.problems = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def problem(self, kind, text):
        """Counts a failure of kind `kind` and keeps its description for the report."""
        with self.lock:
            self.counts[kind] += 1
            if len(self.problems) < self.MAX_PROBLEMS:
                self.problems.append(f"{kind}: {text}")

    def hash_check(self, what, ok, detail=""):
        """One transfer compared end to end (SHA-256 or byte equality)."""
        self.add("hash_checked")
        self.add(f"checked_{what}")
        if not ok:
            self.problem("hash_mismatch", f"{what} {detail}")

    def abort_seen(self, what, error, allow_epipe=False):
        """A planned reset observed by the other side: right only as ECONNRESET (or EPIPE for a
        peer that had already received end of stream)."""
        self.add("abort_checked")
        if isinstance(error, ConnectionResetError):
            return
        if allow_epipe and isinstance(error, BrokenPipeError):
            return
        self.problem("wrong_ending", f"{what}: {describe(error)}")

    def abort_missed(self, what, how):
        """A planned reset that the other side saw as something else (a clean end, all data)."""
        self.add("abort_checked")
        self.problem("wrong_ending", f"{what}: {how}")

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.counts), list(self.problems)


def describe(error):
    """An exception in a few words, e.g. `ConnectionResetError (ECONNRESET)`."""
    if isinstance(error, TimeoutError):
        return "timed out (no reset, no end)"
    if isinstance(error, OSError) and error.errno:
        return f"{type(error).__name__} ({errno.errorcode.get(error.errno, error.errno)})"
    if error is None:
        return "clean end of stream"
    return f"{type(error).__name__}: {error}"


# ------------------------------------------------------------------------------------------
# Payloads
# ------------------------------------------------------------------------------------------

DATA = b""  # set by main() / self_test(): DATA_SIZE random bytes


def make_data():
    """The random block every payload is sliced from (both ends can hash what they expect)."""
    global DATA
    DATA = os.urandom(DATA_SIZE)


@functools.lru_cache(maxsize=4096)
def expected_digest(offset, length):
    """SHA-256 of DATA[offset:offset+length], hex; cached since offsets and sizes repeat."""
    return hashlib.sha256(memoryview(DATA)[offset : offset + length]).hexdigest()


def payload(offset, length):
    return memoryview(DATA)[offset : offset + length]


class Corruptor:
    """SOAK_CORRUPT=1: flips one byte in a copy of the first downloaded chunk, to show that the
    hash check fails when data is damaged (a throwaway run; never set it otherwise)."""

    def __init__(self, armed):
        self.armed = armed
        self.lock = threading.Lock()

    def __call__(self, chunk):
        if not self.armed:
            return chunk
        with self.lock:
            if not self.armed:
                return chunk
            self.armed = False
        copy = bytearray(chunk)
        copy[0] ^= 0x01
        return bytes(copy)


NO_CORRUPTION = Corruptor(False)


# ------------------------------------------------------------------------------------------
# Socket helpers
# ------------------------------------------------------------------------------------------


class Stream:
    """A socket with a small read-ahead buffer: a header line and the payload behind it arrive
    in one stream, and must be read apart."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = b""
        self.request = None  # the last header line read, for error messages

    def recv(self, n):
        if self.pending:
            chunk, self.pending = self.pending[:n], self.pending[n:]
            return chunk
        return self.sock.recv(n)

    def read_line(self, limit=256):
        """One `\\n`-terminated line without its end; None at a clean end before any byte."""
        while b"\n" not in self.pending:
            if len(self.pending) > limit:
                raise ValueError(f"line longer than {limit} bytes")
            data = self.sock.recv(4096)
            if not data:
                if self.pending:
                    raise ValueError("end of stream inside a line")
                return None
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def read_hashing(self, n, hasher, corrupt=NO_CORRUPTION, pace=None):
        """Reads up to n bytes into `hasher`; returns how many came (fewer: end of stream).
        `pace` (chunk, pause) makes a slow reader."""
        got = 0
        chunk_size, pause = pace or (MIB, 0.0)
        while got < n:
            data = self.recv(min(chunk_size, n - got))
            if not data:
                break
            hasher.update(corrupt(data))
            got += len(data)
            if pause:
                time.sleep(pause)
        return got

    def read_to_end(self):
        """Reads until end of stream; returns the number of bytes that still came."""
        extra = 0
        while True:
            data = self.recv(MIB)
            if not data:
                return extra
            extra += len(data)


def reset_close(sock):
    """Closes with SO_LINGER 0: the kernel sends a reset instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    finally:
        sock.close()


def fin_seen_or_reset(sock):
    """For a writer whose peer sends nothing: has a FIN (True) or a reset (raises) arrived?
    Polled between chunks, so that a clean end cannot hide behind the reset that data written
    after it would provoke."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    data = sock.recv(4096, socket.MSG_DONTWAIT)
    if not data:
        return True
    raise ValueError(f"{len(data)} unexpected bytes from a peer that should send nothing")


def send_chunks(sock, view, on_chunk=None, chunk=256 * KIB):
    """sendall in pieces, calling on_chunk() between them (to poll for the peer's end)."""
    for start in range(0, len(view), chunk):
        if on_chunk and on_chunk():
            return False
        sock.sendall(view[start : start + chunk])
    return True


# ------------------------------------------------------------------------------------------
# Upstream servers
# ------------------------------------------------------------------------------------------


class Upstream:
    """One upstream server: a thread per connection, speaking the soak's protocol.

    Each connection starts with a header line naming the operation and the planned ending:
      UP n clean | UP n client-reset (answered GO) | UP n upstream-reset k   (UP may repeat)
      DOWN n offset clean | client-reset | upstream-reset k
      ECHO clean | client-reset | upstream-reset
      HALF m offset clean | client-reset
    Knowing the plan, the server checks the ending it sees (a planned client reset must arrive
    as ECONNRESET) and resets on purpose when the plan says so."""

    def __init__(self, name, tally, stop):
        self.name = name
        self.tally = tally
        self.stop = stop
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.active = 0
        self.active_lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, name=f"upstream-{name}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def serve(self):
        """Accepts until stopped; the timeout lets the loop notice the stop."""
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stop.is_set():
                    break
                raise
            conn.settimeout(CLIENT_TIMEOUT)
            with self.active_lock:
                self.active += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        self.listener.close()

    def busy(self):
        with self.active_lock:
            return self.active

    def handle(self, conn):
        """Runs one connection; an unplanned error is counted, never swallowed."""
        stream = Stream(conn)
        try:
            self.dispatch(stream)
        except (OSError, ValueError) as e:
            request = stream.request or "before any request"
            self.tally.problem("exchange_failed", f"upstream {self.name}, {request}: {describe(e)}")
        finally:
            conn.close()
            with self.active_lock:
                self.active -= 1

    def dispatch(self, stream):
        """Reads headers until the client ends cleanly between requests (UP may repeat)."""
        while True:
            line = stream.read_line()
            if line is None:
                return
            stream.request = line
            op, *args = line.split()
            if op == "UP":
                if not self.serve_up(stream, int(args[0]), args[1], args[2:]):
                    return
            elif op == "DOWN":
                return self.serve_down(stream, int(args[0]), int(args[1]), args[2], args[3:])
            elif op == "ECHO":
                return self.serve_echo(stream, args[0])
            elif op == "HALF":
                return self.serve_half(stream, int(args[0]), int(args[1]), args[2])
            else:
                raise ValueError(f"unknown request {line!r}")

    def serve_up(self, stream, n, plan, extra):
        """An upload (a part): answer with the SHA-256 of what came. True: more may follow."""
        hasher = hashlib.sha256()
        if plan == "clean":
            got = stream.read_hashing(n, hasher)
            if got < n:
                raise ValueError(f"upload ended cleanly after {got} of {n} bytes")
            stream.sock.sendall(f"{hasher.hexdigest()}\n".encode())
            return True
        if plan == "client-reset":
            stream.sock.sendall(b"GO\n")  # the client resets only once we know the plan
            try:
                got = stream.read_hashing(n, hasher)
            except OSError as e:
                self.tally.abort_seen("upload, client reset, seen by the upstream", e)
                return False
            how = "clean end of stream" if got < n else "all bytes arrived"
            self.tally.abort_missed("upload, client reset, seen by the upstream", how)
            return False
        if plan == "upstream-reset":
            stream.read_hashing(int(extra[0]), hasher)
            reset_close(stream.sock)
            return False
        raise ValueError(f"unknown plan {plan!r}")

    def serve_down(self, stream, n, offset, plan, extra):
        """A download of DATA[offset:offset+n], ended as planned."""
        sock = stream.sock
        view = payload(offset, n)
        if plan == "clean":
            sock.sendall(view)
            sock.shutdown(socket.SHUT_WR)
            if stream.read_to_end():
                raise ValueError("bytes from a downloading client")
            return
        if plan == "client-reset":
            what = "download, client reset, seen by the upstream"
            try:
                if not send_chunks(sock, view, lambda: fin_seen_or_reset(sock)):
                    return self.tally.abort_missed(what, "clean end of stream")
                sock.shutdown(socket.SHUT_WR)
                stream.read_to_end()
            except OSError as e:
                return self.tally.abort_seen(what, e)
            return self.tally.abort_missed(what, "clean end of stream")
        if plan == "upstream-reset":
            sock.sendall(view[: int(extra[0])])
            reset_close(sock)
            return
        raise ValueError(f"unknown plan {plan!r}")

    def serve_echo(self, stream, plan):
        """Echoes until the client's end; or resets after the first message (upstream-reset)."""
        sock = stream.sock
        if plan == "upstream-reset":
            if stream.recv(64 * KIB):
                reset_close(sock)
            return
        try:
            while True:
                data = stream.recv(64 * KIB)
                if not data:
                    break
                sock.sendall(data)
        except OSError as e:
            if plan == "client-reset":
                return self.tally.abort_seen("echo, client reset, seen by the upstream", e)
            raise
        if plan == "client-reset":
            self.tally.abort_missed("echo, client reset, seen by the upstream", "clean end of stream")

    def serve_half(self, stream, m, offset, plan):
        """Half-close: read to the client's end, answer with its SHA-256 and then m bytes."""
        sock = stream.sock
        hasher = hashlib.sha256()
        stream.read_hashing(DATA_SIZE, hasher)
        sock.sendall(f"{hasher.hexdigest()}\n".encode())
        if plan == "clean":
            sock.sendall(payload(offset, m))
            return
        what = "half-closed client reset, seen by the upstream (already at end of stream)"
        try:
            send_chunks(sock, payload(offset, m))
        except OSError as e:
            return self.tally.abort_seen(what, e, allow_epipe=True)
        self.tally.abort_missed(what, f"all {m} bytes went out without a reset")


# ------------------------------------------------------------------------------------------
# Clients (the load)
# ------------------------------------------------------------------------------------------


class Load:
    """What every load function needs: the routes' ports, the tally, the stop event."""

    def __init__(self, ports, tally, stop, corrupt=NO_CORRUPTION):
        self.ports = ports  # route name -> listening port of the relay
        self.routes = sorted(ports)
        self.tally = tally
        self.stop = stop
        self.corrupt = corrupt

    def connect(self, route, plan):
        """A connection through `route`, counted with the ending it is planned to have."""
        sock = socket.create_connection(("127.0.0.1", self.ports[route]), timeout=CLIENT_TIMEOUT)
        self.tally.add("connections")
        self.tally.add(f"plan_{plan}")
        return sock

    def moved(self, sent=0, received=0):
        self.tally.add("bytes_sent", sent)
        self.tally.add("bytes_received", received)

    # -- bulk -------------------------------------------------------------------------------

    def upload(self, route, n, offset):
        """One upload; the server's SHA-256 must equal the sender's."""
        with self.connect(route, "clean") as sock:
            stream = Stream(sock)
            sock.sendall(f"UP {n} clean\n".encode())
            sock.sendall(payload(offset, n))
            answer = stream.read_line()
            self.moved(sent=n)
            self.tally.hash_check("upload", answer == expected_digest(offset, n), f"{n} B")

    def download(self, route, n, offset, pace=None, what="download"):
        """One download (slow when `pace` is given); its SHA-256 must be the expected one."""
        with self.connect(route, "clean") as sock:
            stream = Stream(sock)
            sock.sendall(f"DOWN {n} {offset} clean\n".encode())
            hasher = hashlib.sha256()
            got = stream.read_hashing(n, hasher, self.corrupt, pace)
            extra = stream.read_to_end()
            self.moved(received=got)
            ok = got == n and not extra and hasher.hexdigest() == expected_digest(offset, n)
            self.tally.hash_check(what, ok, f"{got}+{extra} of {n} B")

    def multipart(self, route, parts, rng):
        """One `aws s3 cp` connection: 8 MiB parts, each waiting for its hash before the next."""
        with self.connect(route, "clean") as sock:
            stream = Stream(sock)
            for _ in range(parts):
                if self.stop.is_set():
                    break
                offset = rng.randrange(0, DATA_SIZE - MULTIPART_PART, MIB)
                sock.sendall(f"UP {MULTIPART_PART} clean\n".encode())
                sock.sendall(payload(offset, MULTIPART_PART))
                answer = stream.read_line()
                self.moved(sent=MULTIPART_PART)
                ok = answer == expected_digest(offset, MULTIPART_PART)
                self.tally.hash_check("multipart part", ok)

    # -- request/response -------------------------------------------------------------------

    def exchange(self, stream, rng):
        """One small message echoed: the answer must be the same bytes."""
        size = rng.randint(*MESSAGE_SIZES)
        offset = rng.randrange(0, DATA_SIZE - size)
        message = payload(offset, size)
        stream.sock.sendall(message)
        answer = b""
        while len(answer) < size:
            data = stream.recv(size - len(answer))
            if not data:
                break
            answer += data
        self.moved(sent=size, received=len(answer))
        self.tally.add("echoes")
        if answer != message:
            self.tally.problem("hash_mismatch", f"echo of {size} B came back as {len(answer)} B")

    def short_echo(self, route, rng):
        """A short connection: 1-3 exchanges, then a clean close (churn)."""
        with self.connect(route, "clean") as sock:
            stream = Stream(sock)
            sock.sendall(b"ECHO clean\n")
            for _ in range(rng.randint(1, 3)):
                self.exchange(stream, rng)

    # -- half-close -------------------------------------------------------------------------

    def half_close(self, route, rng):
        """Send, shut the write side, then read the whole answer: the server's hash of what it
        got and m bytes of DATA, then end of stream."""
        size = rng.randint(64 * KIB, 2 * MIB)
        m = rng.randint(64 * KIB, 4 * MIB)
        offset, answer_offset = rng.randrange(0, DATA_SIZE - size), rng.randrange(0, DATA_SIZE - m)
        with self.connect(route, "clean") as sock:
            stream = Stream(sock)
            sock.sendall(f"HALF {m} {answer_offset} clean\n".encode())
            sock.sendall(payload(offset, size))
            sock.shutdown(socket.SHUT_WR)
            digest = stream.read_line()
            hasher = hashlib.sha256()
            got = stream.read_hashing(m, hasher, self.corrupt)
            extra = stream.read_to_end()
            self.moved(sent=size, received=got)
            ok = (
                digest == expected_digest(offset, size)
                and got == m
                and not extra
                and hasher.hexdigest() == expected_digest(answer_offset, m)
            )
            self.tally.hash_check("half-close", ok, f"sent {size} B, got {got}+{extra} of {m} B")

    # -- resets -----------------------------------------------------------------------------

    def client_reset_upload(self, route, rng):
        """Declares 32 MiB, sends part of it, resets: the upstream must see ECONNRESET. (It
        waits for the upstream's GO first: a reset that overtakes the header would leave the
        upstream unable to tell a planned reset from a broken connection.)"""
        sock = self.connect(route, "client_reset")
        k = rng.randint(64 * KIB, 8 * MIB)
        sock.sendall(f"UP {32 * MIB} client-reset\n".encode())
        if Stream(sock).read_line() != "GO":
            raise ValueError("no GO from the upstream")
        sock.sendall(payload(0, k))
        self.moved(sent=k)
        reset_close(sock)

    def client_reset_download(self, route, rng):
        """Reads part of a 32 MiB download, resets: the upstream must see ECONNRESET."""
        sock = self.connect(route, "client_reset")
        k = rng.randint(64 * KIB, 4 * MIB)
        sock.sendall(f"DOWN {32 * MIB} 0 client-reset\n".encode())
        got = Stream(sock).read_hashing(k, hashlib.sha256())
        self.moved(received=got)
        reset_close(sock)

    def client_reset_echo(self, route, rng):
        """An exchange or two, then a message and a reset: the upstream must see ECONNRESET."""
        sock = self.connect(route, "client_reset")
        stream = Stream(sock)
        sock.sendall(b"ECHO client-reset\n")
        for _ in range(rng.randint(1, 2)):
            self.exchange(stream, rng)
        sock.sendall(payload(0, 1000))
        reset_close(sock)

    def client_reset_half_closed(self, route, rng):
        """Half-close, read part of a 48 MiB answer, reset: the upstream, which has seen our
        end of stream, must see ECONNRESET or EPIPE. The relay logs it as a reset after the
        client's end of stream (its 64 KiB and its end were passed on before the answer came)."""
        sock = self.connect(route, "client_reset_after_end")
        stream = Stream(sock)
        sock.sendall(f"HALF {48 * MIB} 0 client-reset\n".encode())
        sock.sendall(payload(0, 64 * KIB))
        sock.shutdown(socket.SHUT_WR)
        stream.read_line()
        got = stream.read_hashing(rng.randint(64 * KIB, 2 * MIB), hashlib.sha256())
        self.moved(sent=64 * KIB, received=got)
        reset_close(sock)

    def upstream_reset_upload(self, route, rng):
        """The upstream resets after k bytes of a 32 MiB upload: our send or the wait for the
        answer must fail with ECONNRESET."""
        what = "upload, upstream reset, seen by the client"
        k = rng.randint(64 * KIB, 4 * MIB)
        with self.connect(route, "upstream_reset") as sock:
            try:
                sock.sendall(f"UP {32 * MIB} upstream-reset {k}\n".encode())
                sock.sendall(payload(0, 32 * MIB))
                answer = Stream(sock).read_line()
            except OSError as e:
                return self.tally.abort_seen(what, e)
            self.tally.abort_missed(what, "an answer" if answer else "clean end of stream")

    def upstream_reset_download(self, route, rng):
        """The upstream resets after k bytes of a 32 MiB download: we must read ECONNRESET."""
        what = "download, upstream reset, seen by the client"
        k = rng.randint(64 * KIB, 4 * MIB)
        with self.connect(route, "upstream_reset") as sock:
            try:
                sock.sendall(f"DOWN {32 * MIB} 0 upstream-reset {k}\n".encode())
                got = Stream(sock).read_hashing(32 * MIB, hashlib.sha256())
            except OSError as e:
                return self.tally.abort_seen(what, e)
            self.moved(received=got)
            self.tally.abort_missed(what, f"clean end of stream after {got} B")

    def upstream_reset_echo(self, route, rng):
        """The upstream resets on our first message: our read must fail with ECONNRESET."""
        what = "echo, upstream reset, seen by the client"
        with self.connect(route, "upstream_reset") as sock:
            try:
                sock.sendall(b"ECHO upstream-reset\n" + payload(0, rng.randint(*MESSAGE_SIZES)))
                data = Stream(sock).recv(64 * KIB)
            except OSError as e:
                return self.tally.abort_seen(what, e)
            self.tally.abort_missed(what, "bytes" if data else "clean end of stream")

    ABORTS = (
        "client_reset_upload",
        "client_reset_download",
        "client_reset_echo",
        "client_reset_half_closed",
        "upstream_reset_upload",
        "upstream_reset_download",
        "upstream_reset_echo",
    )


# ------------------------------------------------------------------------------------------
# Load loops: each runs until the stop event, with a pause per cycle
# ------------------------------------------------------------------------------------------


def guarded(load, what, fn, *args):
    """Runs one load item; an unplanned error is a failure of that exchange, not a crash. A
    pause follows a failure, so that a relay that died does not make the loops spin."""
    try:
        fn(*args)
    except (OSError, ValueError) as e:
        load.tally.problem("exchange_failed", f"{what}: {describe(e)}")
        load.stop.wait(0.5)


def bulk_loop(load, seed):
    """Uploads and downloads of 8-32 MiB, alternating routes, with a short pause."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        route = rng.choice(load.routes)
        n = rng.randint(*BULK_SIZES_MIB) * MIB
        offset = rng.randrange(0, DATA_SIZE - n + 1, MIB)
        if rng.random() < 0.5:
            guarded(load, "bulk upload", load.upload, route, n, offset)
        else:
            guarded(load, "bulk download", load.download, route, n, offset)
        load.stop.wait(rng.uniform(0.5, 1.5))


def multipart_loop(load, seed):
    """Cycles of 10 parallel multipart uploads (5 per route), then a pause."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        threads = []
        for i in range(MULTIPART_CONNECTIONS):
            route = load.routes[i % len(load.routes)]
            args = (load, "multipart", load.multipart, route, MULTIPART_PARTS, random.Random(rng.random()))
            threads.append(threading.Thread(target=guarded, args=args, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load.tally.add("multipart_cycles")
        load.stop.wait(MULTIPART_PAUSE_S)


def churn_loop(load, seed):
    """Short echo connections at CHURN_RATE_PER_WORKER a second (no catching up when late)."""
    rng = random.Random(seed)
    period = 1.0 / CHURN_RATE_PER_WORKER
    next_at = time.monotonic()
    while not load.stop.is_set():
        guarded(load, "short echo", load.short_echo, rng.choice(load.routes), rng)
        next_at = max(next_at + period, time.monotonic() - 1.0)
        load.stop.wait(max(0.0, next_at - time.monotonic()))


def long_echo_loop(load, route, seed):
    """One connection for the whole soak, a small exchange every 50 ms, closed cleanly."""
    rng = random.Random(seed)

    def run():
        with load.connect(route, "clean") as sock:
            stream = Stream(sock)
            sock.sendall(b"ECHO clean\n")
            while not load.stop.is_set():
                load.exchange(stream, rng)
                load.stop.wait(LONG_ECHO_INTERVAL_S)

    guarded(load, f"long-lived echo on {route}", run)


def abort_loop(load, seed):
    """Every kind of reset in turn, on alternating routes."""
    rng = random.Random(seed)
    i = 0
    while not load.stop.is_set():
        name = Load.ABORTS[i % len(Load.ABORTS)]
        route = load.routes[(i // len(Load.ABORTS)) % len(load.routes)]
        guarded(load, name, getattr(load, name), route, rng)
        i += 1
        load.stop.wait(ABORT_PAUSE_S)


def slow_reader_loop(load, seed):
    """Downloads of 4-8 MiB read 32 KiB at a time with a pause: the relay must hold back."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        n = rng.randint(4, 8) * MIB
        offset = rng.randrange(0, DATA_SIZE - n + 1, MIB)
        pace = (SLOW_READ_CHUNK, SLOW_READ_PAUSE_S)
        guarded(load, "slow reader", load.download, rng.choice(load.routes), n, offset, pace, "slow download")


def half_close_loop(load, seed):
    """Half-closes, one at a time."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        guarded(load, "half-close", load.half_close, rng.choice(load.routes), rng)
        load.stop.wait(HALF_CLOSE_PAUSE_S)


def start_load(load):
    """Starts every load loop; returns the threads (each ends soon after the stop event)."""
    loops = [(bulk_loop, (load, 100 + i)) for i in range(BULK_WORKERS)]
    loops += [(multipart_loop, (load, 200))]
    loops += [(churn_loop, (load, 300 + i)) for i in range(CHURN_WORKERS)]
    loops += [(long_echo_loop, (load, route, 400 + i)) for i, route in enumerate(load.routes)]
    loops += [(abort_loop, (load, 500)), (slow_reader_loop, (load, 600)), (half_close_loop, (load, 700))]
    threads = []
    for fn, args in loops:
        t = threading.Thread(target=fn, args=args, name=fn.__name__, daemon=True)
        t.start()
        threads.append(t)
    return threads


# ------------------------------------------------------------------------------------------
# Abuse of the metrics port, and the health poll (issue 24)
# ------------------------------------------------------------------------------------------

TCP_ESTABLISHED = 1


def tcp_state(sock):
    """The kernel's TCP state of a socket (tcp_info's first byte): no read needed, so a client
    that never reads can still tell that the server closed it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


class MetricsAbuse:
    """Clients of the metrics port that the server must shrug off. Failures of the server's
    defences are `metrics_abuse` problems (judged); the abusers' own errors are counted only."""

    def __init__(self, port, tally, stop):
        self.port = port
        self.tally = tally
        self.stop = stop

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=HEALTH_TIMEOUT_S)

    def idle_loop(self):
        """Opens an idle connection METRICS_IDLE_OPEN_PER_S times a second and keeps the last
        METRICS_IDLE_CLIENTS; notes those the server closed."""
        idle = collections.deque()
        period = 1.0 / METRICS_IDLE_OPEN_PER_S
        while not self.stop.is_set():
            try:
                idle.append(self.connect())
                self.tally.add("metrics_idle_opened")
            except OSError:
                self.tally.add("metrics_abuser_errors")
            if len(idle) > METRICS_IDLE_CLIENTS:
                idle.popleft().close()
            readable, _, _ = select.select(list(idle), [], [], 0)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.tally.add("metrics_idle_closed_by_server")
                    idle.remove(sock)
                    sock.close()
            self.stop.wait(period)
        for sock in idle:
            sock.close()

    def nonreader_loop(self):
        """One client at a time pipelines METRICS_PIPELINED_REQUESTS `GET /metrics` and never
        reads; the server must close it (its write deadline) within METRICS_CLOSE_WAIT_S."""
        requests = b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n" * METRICS_PIPELINED_REQUESTS
        while not self.stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                self.tally.add("metrics_abuser_errors")
                self.stop.wait(1.0)
                continue
            with sock:
                try:
                    sock.sendall(requests)  # bounded by the socket timeout when not read
                except OSError:
                    pass
                started = time.monotonic()
                while tcp_state(sock) == TCP_ESTABLISHED and not self.stop.is_set():
                    if time.monotonic() - started > METRICS_CLOSE_WAIT_S:
                        self.tally.problem(
                            "metrics_abuse",
                            f"a client that never read was still open {METRICS_CLOSE_WAIT_S:g} s after its requests",
                        )
                        break
                    self.stop.wait(0.25)
                else:
                    if not self.stop.is_set():
                        self.tally.add("metrics_nonreaders_closed")

    def oversized_loop(self):
        """Request heads of METRICS_OVERSIZED_HEAD bytes that never end: each must be answered
        431 (or closed), never served nor held."""
        head = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * METRICS_OVERSIZED_HEAD
        while not self.stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                self.tally.add("metrics_abuser_errors")
                self.stop.wait(1.0)
                continue
            with sock:
                try:
                    sock.sendall(head)
                except OSError:
                    pass  # the server stopped reading at its limit and closed
                answer = b""
                try:
                    while True:
                        data = sock.recv(4096)
                        if not data:
                            break
                        answer += data
                except TimeoutError:
                    self.tally.problem("metrics_abuse", "an oversized head was neither answered nor closed in 5 s")
                    continue
                except OSError:
                    pass  # a reset after the answer, or instead of it
                if answer and not answer.startswith(b"HTTP/1.1 431 "):
                    self.tally.problem("metrics_abuse", f"an oversized head was answered {answer[:40]!r}")
                else:
                    self.tally.add("metrics_oversized_refused")
            self.stop.wait(METRICS_OVERSIZED_PAUSE_S)

    def start(self):
        threads = []
        for fn in (self.idle_loop, self.nonreader_loop, self.oversized_loop):
            t = threading.Thread(target=fn, name=f"metrics-{fn.__name__}", daemon=True)
            t.start()
            threads.append(t)
        return threads


def health_get(port):
    """`GET /healthz` on a new connection: (milliseconds to the whole answer, status code; 0
    when it failed or took more than HEALTH_TIMEOUT_S)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HEALTH_TIMEOUT_S) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: soak\r\n\r\n")
            answer = b""
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        parts = answer.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 2 and answer.startswith(b"HTTP/1.") else 0
    except (OSError, ValueError):
        status = 0
    return (time.monotonic() - started) * 1000.0, status


def poll_health(port, out_path):
    """The health poller's process (`soak.py --poll-health PORT --poll-out FILE`): a GET
    /healthz every HEALTH_POLL_INTERVAL_S (no catching up when late), one line per poll
    (`t_s,latency_ms,status`), until SIGTERM."""
    signal.signal(signal.SIGTERM, interrupted)
    t0 = time.monotonic()
    next_at = t0
    try:
        with open(out_path, "w") as f:
            while True:
                latency, status = health_get(port)
                f.write(f"{time.monotonic() - t0:.3f},{latency:.3f},{status}\n")
                f.flush()
                next_at = max(next_at + HEALTH_POLL_INTERVAL_S, time.monotonic())
                time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        return 0


class HealthPoller:
    """Runs poll_health in a process of its own, stopped by its PID."""

    def __init__(self, port, out_path):
        self.out_path = out_path
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--poll-health", str(port), "--poll-out", out_path],
            stdin=subprocess.DEVNULL,
        )

    def stop(self):
        """Stops the poller; returns [(latency_ms, status)] of every poll."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        polls = []
        with open(self.out_path) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) == 3:
                    polls.append((float(fields[1]), int(fields[2])))
        return polls


def percentile(values, p):
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def health_check(run):
    """The verdict on the health answers while the metrics port was abused."""
    polls = run["health"]
    counts = run["counts"]
    abused = (
        f"{counts['metrics_idle_opened']} idle connections opened ({counts['metrics_idle_closed_by_server']} "
        f"closed by the server), {counts['metrics_nonreaders_closed']} non-reading clients of "
        f"{METRICS_PIPELINED_REQUESTS} pipelined GET /metrics closed by the server, "
        f"{counts['metrics_oversized_refused']} oversized heads refused"
    )
    problems = [p for p in run["problems"] if p.startswith("metrics_abuse:")]
    if not polls:
        return (False, "health under metrics abuse", f"no /healthz poll was made; {abused}")
    latencies = [latency for latency, _ in polls]
    failed = sum(1 for _, status in polls if status != 200)
    worst = max(latencies)
    ok = failed == 0 and worst <= HEALTH_LATENCY_LIMIT_MS and counts["metrics_abuse"] == 0
    detail = (
        f"{len(polls)} /healthz polls every {HEALTH_POLL_INTERVAL_S * 1000:.0f} ms: max {worst:.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms, median {percentile(latencies, 50):.1f} ms, "
        f"{failed} not answered 200; needs max <= {HEALTH_LATENCY_LIMIT_MS:g} ms; while {abused}; "
        f"{counts['metrics_abuse']} defences failed"
        + "".join(f"\n        {p}" for p in problems[:5])
    )
    return (ok, "health under metrics abuse", detail)


# ------------------------------------------------------------------------------------------
# The relay: configuration, start, signals, samples
# ------------------------------------------------------------------------------------------


def free_port():
    """A port free on 127.0.0.1 now (the relay binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(listen, upstreams, metrics_port, generation):
    """The relay's configuration; `generation` toggles alpha's idle_timeout so that each
    reload changes a route."""
    idle = RELAY_IDLE_TIMEOUTS[generation % 2]
    return f"""# Written by scripts/soak.py; generation {generation} (rewritten before each SIGHUP).
threads = 2
log_level = "info"
log_format = "json"
metrics = "127.0.0.1:{metrics_port}"
drain_timeout = "{DRAIN_TIMEOUT_S}s"

[defaults]
connect_timeout = "10s"
half_close_timeout = "60s"
idle_timeout = "60s"

# Splice mode; its idle_timeout toggles between {RELAY_IDLE_TIMEOUTS[0]} and {RELAY_IDLE_TIMEOUTS[1]} on each reload.
[[route]]
name = "alpha"
listen = ["127.0.0.1:{listen['alpha']}"]
upstream = "127.0.0.1:{upstreams['alpha']}"
mode = "splice"
idle_timeout = "{idle}"

# Copy mode, so both engines are soaked.
[[route]]
name = "beta"
listen = ["127.0.0.1:{listen['beta']}"]
upstream = "127.0.0.1:{upstreams['beta']}"
mode = "copy"
"""


def write_config(path, text):
    """Writes atomically (rename), so a reload never reads half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def scrape(metrics_port, timeout=2.0):
    """GET /metrics -> {(name, labels): value}; None when the endpoint does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=timeout)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        if response.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    values = {}
    for line in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and not line.startswith("#"):
            try:
                values[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return values


def metric_sum(values, name, label_filter=""):
    """Sum of a metric over its series (those whose labels contain label_filter)."""
    if not values:
        return None
    found = [v for (n, labels), v in values.items() if n == name and label_filter in labels]
    return sum(found) if found else None


class Relay:
    """The `spliceway run` process: started in its own session (Ctrl-C at the terminal reaches
    only this script, which then stops the relay by its PID)."""

    def __init__(self, binary, config_path, log_path):
        self.log = open(log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # the config's level
        self.proc = subprocess.Popen(
            [binary, "run", "--config", config_path, "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout):
        """SIGTERM (drain), then SIGKILL if it outlives `timeout`; returns the exit status
        (None if it had to be killed). Ctrl-C meanwhile sends a second SIGTERM, on which the
        relay resets what is left at once."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.proc.wait(max(0.0, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                status = None
                break
            except KeyboardInterrupt:
                self.signal(signal.SIGTERM)
        self.log.close()
        return status


def cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/PID/stat, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(relay, metrics_port, load, seconds=20.0):
    """Waits for /metrics (served after every listener is bound), then makes one echo exchange
    per route, so the load starts against a relay that relays."""
    deadline = time.monotonic() + seconds
    while scrape(metrics_port, timeout=0.5) is None:
        if relay.proc.poll() is not None:
            raise SystemExit(f"soak: the relay exited with status {relay.proc.returncode}; see relay.log")
        if time.monotonic() > deadline:
            raise SystemExit("soak: the relay's metrics endpoint did not answer in time")
        time.sleep(0.1)
    rng = random.Random(1)
    for route in load.routes:
        load.short_echo(route, rng)


def read_sample(pid, metrics_port, t0):
    """One row of samples.csv: the relay's RSS, descriptors, pipes, threads; the kernel's TCP
    socket memory (system-wide, in pages); pipes and active connections from /metrics; and the
    descriptors that neither an open connection nor a pipe explains."""
    row = {"t_s": round(time.monotonic() - t0, 2)}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                row["rss_kib"] = int(value.split()[0])
            elif key == "Threads":
                row["threads"] = int(value)
    fds, pipes, metrics_fds, own = fd_census(pid, metrics_port)
    row["fds"], row["pipe_fds"], row["metrics_fds"] = fds, pipes, metrics_fds
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                stats = dict(zip(fields[::2], fields[1::2]))
                row["tcp_mem_pages"] = int(stats.get("mem", 0))
                row["tcp_inuse"] = int(stats.get("inuse", 0))
                row["tcp_tw"] = int(stats.get("tw", 0))
    values = scrape(metrics_port)
    pipes_open = metric_sum(values, "spliceway_pipes_open")
    active = metric_sum(values, "spliceway_connections_active")
    row["pipes_open"] = "" if pipes_open is None else int(pipes_open)
    row["conns_active"] = "" if active is None else int(active)
    # Each open connection holds two sockets (one while its upstream is being connected). Left
    # blank when the relay's descriptors changed while /metrics was read (one closed and another
    # opened counts as a change): the two would not describe one moment. Metrics connections
    # come and go all the time under the soak's abuse of that port; they are counted apart.
    steady = active is not None and fd_census(pid, metrics_port)[3] == own
    row["other_fds"] = fds - pipes - metrics_fds - 2 * int(active) if steady else ""
    return row


def fd_census(pid, metrics_port):
    """The relay's descriptors: how many, how many pipes, how many connections of the metrics
    port, and the set of the others as (number, target). A metrics socket counts if the
    kernel listed it just before or just after the descriptors were read (the server closes
    and accepts some every moment)."""
    before = metrics_connection_inodes(metrics_port)
    fds = pipes = 0
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            targets[fd] = ""  # closed between listdir and readlink
        pipes += targets[fd].startswith("pipe:")
    metrics = {f"socket:[{inode}]" for inode in before | metrics_connection_inodes(metrics_port)}
    own = frozenset((fd, target) for fd, target in targets.items() if target not in metrics)
    return fds, pipes, fds - len(own), own


def metrics_connection_inodes(metrics_port):
    """Socket inodes of the connections accepted on the metrics port (/proc/net/tcp{,6}: local
    port in hex, state other than LISTEN), so that the metrics server's clients, which the soak
    keeps at its cap, are told apart from the descriptors that must stay flat."""
    inodes = set()
    local_port = f":{metrics_port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(local_port) and fields[3] != "0A":
                        inodes.add(fields[9])
        except OSError:
            pass
    return inodes


SAMPLE_COLUMNS = [
    "t_s", "rss_kib", "fds", "pipe_fds", "pipes_open", "threads",
    "tcp_mem_pages", "tcp_inuse", "tcp_tw", "conns_active", "metrics_fds", "other_fds",
]


def sampler(relay, metrics_port, t0, csv_path, samples, stop):
    """Once a second until stopped: a row into samples.csv (flushed) and into `samples`."""
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SAMPLE_COLUMNS)
        writer.writeheader()
        next_at = time.monotonic()
        while not stop.is_set() and relay.proc.poll() is None:
            try:
                row = read_sample(relay.pid, metrics_port, t0)
            except (OSError, ValueError):
                break  # the relay went away
            writer.writerow(row)
            f.flush()
            samples.append(row)
            next_at += 1.0
            stop.wait(max(0.0, next_at - time.monotonic()))


def controller(relay, config_path, config_for, stop, counts):
    """Every RELOAD_INTERVAL_S: a changed configuration and SIGHUP. Every SIGNAL_INTERVAL_S
    (offset, so the two do not coincide): SIGUSR1, 3 s, SIGUSR2 (always sent as a pair, so the
    log level comes back to where it was)."""
    start = time.monotonic()
    next_reload = start + RELOAD_INTERVAL_S
    next_signal = start + SIGNAL_OFFSET_S
    generation = 0
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_reload:
            generation += 1
            write_config(config_path, config_for(generation))
            relay.signal(signal.SIGHUP)
            counts["reloads"] += 1
            next_reload += RELOAD_INTERVAL_S
        elif now >= next_signal:
            relay.signal(signal.SIGUSR1)
            time.sleep(min(3.0, SIGNAL_INTERVAL_S / 4))
            relay.signal(signal.SIGUSR2)
            counts["signal_pairs"] += 1
            next_signal += SIGNAL_INTERVAL_S
        stop.wait(max(0.0, min(next_reload, next_signal) - time.monotonic()))


# ------------------------------------------------------------------------------------------
# Analysis (pure functions, exercised by --self-test)
# ------------------------------------------------------------------------------------------


def least_squares(xs, ys):
    """Slope and intercept of the least-squares line; slope's standard error too."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my, float("inf")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    stderr = math.sqrt(residual / (n - 2) / sxx) if n > 2 else float("inf")
    return slope, intercept, stderr


def warmup_seconds(duration):
    """First 20 % or 60 s, whichever is longer, but at most half the run."""
    return min(max(WARMUP_FRACTION * duration, WARMUP_MIN_SECONDS), 0.5 * duration)


def growth(samples, column, duration):
    """Least-squares slope per minute of `column` over the samples after warm-up and before
    the load stopped (the idle tail after it would read as a fall), with its standard error
    widened for correlated samples:
    (slope, stderr, intercept, warm-up seconds, samples used); slope None if too few."""
    warm = warmup_seconds(duration)
    points = [
        (r["t_s"] / 60.0, float(r[column]))
        for r in samples
        if warm <= r["t_s"] <= duration and r.get(column) not in ("", None)
    ]
    if len(points) < 10:
        return None, None, None, warm, len(points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    slope, intercept, stderr = least_squares(xs, ys)
    residuals = [y - intercept - slope * x for x, y in zip(xs, ys)]
    return slope, stderr * correlation_factor(residuals), intercept, warm, len(points)


def correlation_factor(residuals):
    """How much to widen a least-squares standard error when successive residuals are alike
    (RSS moves in steps and stays there; a multipart cycle lasts seconds): sqrt((1+r)/(1-r))
    for the lag-1 autocorrelation r, as for an AR(1) series. Without it a minute of two RSS
    steps would look like a precisely measured slope."""
    n = len(residuals)
    mean = sum(residuals) / n
    spread = sum((e - mean) ** 2 for e in residuals)
    if spread == 0:
        return 1.0
    r = sum((a - mean) * (b - mean) for a, b in zip(residuals, residuals[1:])) / spread
    r = min(max(r, 0.0), 0.99)
    return math.sqrt((1 + r) / (1 - r))


def analyse_log(lines):
    """Reads the relay's JSON log: WARN/ERROR lines other than the expected ones, how many
    each expected pattern matched, the `closed` lines' ends, and the reloads it reports."""
    result = {
        "unexpected": [],
        "unexpected_count": 0,
        "expected": collections.Counter(),
        "ends": collections.Counter(),
        "reloaded": 0,
        "reloaded_unchanged": 0,
        "lines": 0,
    }
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        result["lines"] += 1
        try:
            event = json.loads(raw)
            fields = event.get("fields", {})
            level = event.get("level", "")
            message = str(fields.get("message", ""))
        except (ValueError, AttributeError):
            level, message, fields = "TEXT", raw, {}  # not JSON: a panic, a libc message
        if message == "closed" and "end" in fields:
            result["ends"][fields["end"]] += 1
        if message.startswith("reloaded "):
            result["reloaded"] += 1
            if "changed []" in message:
                result["reloaded_unchanged"] += 1
        if level not in ("WARN", "ERROR", "TEXT"):
            continue
        for pattern, _why in EXPECTED_LOG_PATTERNS:
            if re.search(pattern, message):
                result["expected"][pattern] += 1
                break
        else:
            result["unexpected_count"] += 1
            if len(result["unexpected"]) < 20:
                result["unexpected"].append(f"{level} {message}")
    return result


# (column of samples.csv, check, unit, limit, whether a fall counts too). RSS may fall (memory
# given back); descriptors may not drift either way. `other_fds` (descriptors not held by an
# open connection or a pipe: listeners, epoll, metrics, files) is nearly constant under any
# load, so it shows a leak of a closed connection's socket, or one per reload, even in a short
# run where the load's own ups and downs hide it in `fds`.
SLOPE_CHECKS = (
    ("rss_kib", "RSS flat", "KiB/min", RSS_SLOPE_LIMIT_KIB_PER_MIN, False),
    ("fds", "descriptors flat", "fds/min", FD_SLOPE_LIMIT_PER_MIN, True),
    ("other_fds", "descriptors besides connections and pipes flat", "fds/min", FD_SLOPE_LIMIT_PER_MIN, True),
)


def slope_check(run, column, name, unit, limit, two_sided):
    """PASS when the fitted slope is inside the limit and the fit is precise enough to say
    so: a standard error of half the limit or more (a run too short for the load's ups and
    downs to average out) is a FAIL that says "too short to tell", not a guess."""
    slope, stderr, _, warm, used = growth(run["samples"], column, run["duration_s"])
    if slope is None:
        return (False, name, f"only {used} samples after the {warm:.0f} s warm-up: too short to tell")
    bound = f"|slope| < {limit:g}" if two_sided else f"slope < {limit:g}"
    detail = f"{slope:+.2f} {unit} (± {stderr:.2f}) over {used} samples after {warm:.0f} s; needs {bound} {unit}"
    if 2 * stderr >= limit:
        return (False, name, detail + f" with ± < {limit / 2:g}: too short to tell, run longer")
    ok = abs(slope) < limit if two_sided else slope < limit
    return (ok, name, detail)


def judge(run):
    """The verdict: a list of (passed, title, detail) from the run's figures (a dict: counts,
    problems, samples, duration_s, log, reloads_sent, relay_status, active_at_end, ...)."""
    counts = run["counts"]
    problems = run["problems"]
    checks = []

    def examples(kind):
        found = [p for p in problems if p.startswith(kind + ":")]
        return "".join(f"\n        {p}" for p in found[:5])

    mismatches = counts["hash_mismatch"]
    kinds = ", ".join(f"{k[len('checked_'):]} {v}" for k, v in sorted(counts.items()) if k.startswith("checked_"))
    checks.append((
        mismatches == 0 and counts["hash_checked"] > 0,
        "hashes",
        f"{counts['hash_checked']} transfers checked by SHA-256 ({kinds}) and {counts['echoes']} "
        f"echoes compared; {mismatches} mismatches" + examples("hash_mismatch"),
    ))
    wrong = counts["wrong_ending"]
    checks.append((
        wrong == 0 and counts["abort_checked"] > 0,
        "aborts",
        f"{counts['abort_checked']} resets checked at the other side; {wrong} wrong endings" + examples("wrong_ending"),
    ))
    failed = counts["exchange_failed"]
    checks.append((
        failed == 0,
        "clean exchanges",
        f"{counts['connections']} connections, {counts['plan_clean']} planned clean; {failed} failed" + examples("exchange_failed"),
    ))
    for column, name, unit, limit, two_sided in SLOPE_CHECKS:
        checks.append(slope_check(run, column, name, unit, limit, two_sided))
    log = run["log"]
    expected = ", ".join(f"{n} x /{p}/" for p, n in log["expected"].items()) or "none"
    checks.append((
        log["unexpected_count"] == 0,
        "relay log",
        f"{log['lines']} lines; {log['unexpected_count']} unexpected WARN/ERROR lines; expected: {expected}"
        + "".join(f"\n        {line}" for line in log["unexpected"][:10]),
    ))
    planned = {end: counts[f"plan_{plan}"] for plan, end in RELAY_END_OF_PLAN.items()}
    logged = dict(log["ends"])
    others = {end: n for end, n in logged.items() if end not in planned}
    agree = all(logged.get(end, 0) == n for end, n in planned.items()) and not others
    checks.append((
        agree,
        "relay's closed lines",
        "planned " + ", ".join(f"{n} {end!r}" for end, n in planned.items())
        + "; logged " + ", ".join(f"{logged.get(end, 0)} {end!r}" for end in planned)
        + "".join(f", {n} {end!r} (unplanned)" for end, n in others.items()),
    ))
    reloads = run["reloads_sent"]
    checks.append((
        log["reloaded"] == reloads and log["reloaded_unchanged"] == 0 and reloads > 0,
        "reloads",
        f"{reloads} SIGHUPs sent, {log['reloaded']} reloads logged "
        f"({log['reloaded_unchanged']} that changed nothing); {run['signal_pairs']} SIGUSR1/SIGUSR2 pairs",
    ))
    active = run["active_at_end"]
    checks.append((
        active == 0,
        "idle at the end",
        f"{'an unknown number of (no metrics)' if active is None else active} connections active "
        f"after the load stopped; descriptors {run['fds_first']} at the first sample, {run['fds_end']} at the end "
        f"({run.get('pipe_fds_end')} of them the pool's idle pipes)",
    ))
    checks.append(health_check(run))
    status = run["relay_status"]
    if status is None:
        how = "did not exit within the drain timeout (killed)"
    elif status < 0:
        how = f"was killed by signal {-status}"
    else:
        how = f"exited with status {status} after SIGTERM"
    checks.append((status == 0, "SIGTERM", f"the relay {how} (it must drain and exit 0)"))
    return checks


def totals_lines(run):
    """The run's size, for the reader of the verdict."""
    counts = run["counts"]
    relay_bytes = run.get("relay_bytes")
    lines = [
        f"length: {run['duration_s'] / 60:.1f} min of load, {len(run['samples'])} samples",
        f"connections made: {counts['connections']} (relay accepted {run.get('relay_accepted', '?')})",
        f"bytes moved: {counts['bytes_sent'] / MIB:,.0f} MiB sent, {counts['bytes_received'] / MIB:,.0f} MiB "
        f"received by the clients"
        + (f"; relay: {relay_bytes / MIB:,.0f} MiB both ways" if relay_bytes is not None else ""),
        f"reloads done: {run['reloads_sent']}; multipart cycles: {counts['multipart_cycles']}",
    ]
    if run.get("relay_cpu_s") is not None:
        lines.append(
            f"CPU: relay {run['relay_cpu_s']:.0f} s, this script {run['soak_cpu_s']:.0f} s "
            f"({run['relay_cpu_s'] / run['duration_s'] * 100:.0f} % and "
            f"{run['soak_cpu_s'] / run['duration_s'] * 100:.0f} % of one core)"
        )
    with_metric = [r for r in run["samples"] if r.get("pipes_open") not in ("", None)]
    if with_metric:
        agree = sum(1 for r in with_metric if r["pipe_fds"] == 2 * r["pipes_open"])
        lines.append(f"pipe fds = 2 x spliceway_pipes_open in {agree} of {len(with_metric)} samples (not judged)")
    for column, label in (("threads", "threads"), ("pipe_fds", "pipe fds"), ("tcp_mem_pages", "TCP mem pages (system-wide)")):
        slope, _, _, _, _ = growth(run["samples"], column, run["duration_s"])
        values = [r[column] for r in run["samples"] if r.get(column) != ""]
        if values and slope is not None:
            lines.append(f"{label}: {min(values)}..{max(values)}, slope {slope:+.2f}/min (not judged)")
    return lines


def format_verdict(checks, run):
    """The verdict as text: one PASS/FAIL line per check, then the totals."""
    out = ["spliceway soak verdict", ""]
    for ok, title, detail in checks:
        out.append(f"{'PASS' if ok else 'FAIL'}  {title}: {detail}")
    out.append("")
    out += [f"      {line}" for line in totals_lines(run)]
    out.append("")
    out.append("VERDICT: " + ("PASS" if all(ok for ok, _, _ in checks) else "FAIL"))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# plot.svg, by hand
# ------------------------------------------------------------------------------------------


def nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 0.001:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks


def svg_panel(top, title, ylabel, series, warm, end, fit, width=900, height=250):
    """One chart: axes with ticks and labels, a line per series (name, [(minutes, value)],
    colour), the end of warm-up as a dashed line and the fitted slope (if any) from there to
    the end of the load."""
    left, right, bottom = 80, 20, 45
    pw, ph = width - left - right, height - bottom - 30
    y0 = top + 30
    values = [y for _, points, _ in series for _, y in points]
    xs = [x for _, points, _ in series for x, _ in points]
    yt = nice_ticks(min(values) if values else 0, max(values) if values else 1)
    xt = nice_ticks(0, max(xs) if xs else 1, 8)
    xmax, ylo, yhi = xt[-1], yt[0], yt[-1]

    def px(x):
        return left + pw * x / xmax

    def py(y):
        return y0 + ph - ph * (y - ylo) / (yhi - ylo)

    out = [f'<text x="{left}" y="{top + 18}" font-size="15" font-weight="bold">{title}</text>']
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{y0 + ph}" y2="{y0 + ph + 5}" stroke="#000"/>')
        out.append(f'<text x="{px(t):.1f}" y="{y0 + ph + 18}" font-size="11" text-anchor="middle">{t:g}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{y0}" y2="{y0 + ph}" stroke="#000"/>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y0 + ph}" y2="{y0 + ph}" stroke="#000"/>')
    out.append(f'<text x="{left + pw / 2}" y="{y0 + ph + 36}" font-size="12" text-anchor="middle">time (minutes)</text>')
    out.append(
        f'<text x="18" y="{y0 + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 18 {y0 + ph / 2})">{ylabel}</text>'
    )
    out.append(
        f'<line x1="{px(warm):.1f}" x2="{px(warm):.1f}" y1="{y0}" y2="{y0 + ph}" stroke="#888" stroke-dasharray="5,4"/>'
        f'<text x="{px(warm) + 4:.1f}" y="{y0 + 12}" font-size="11" fill="#666">end of warm-up</text>'
    )
    legend_x = left + pw - 10
    for i, (name, points, colour) in enumerate(series):
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{coords}"/>')
        out.append(f'<text x="{legend_x}" y="{y0 + 14 + 14 * i}" font-size="12" text-anchor="end" fill="{colour}">{name}</text>')
    if fit:
        slope, intercept, label = fit
        x1, x2 = warm, end
        out.append(
            f'<line x1="{px(x1):.1f}" x2="{px(x2):.1f}" y1="{py(intercept + slope * x1):.1f}" '
            f'y2="{py(intercept + slope * x2):.1f}" stroke="#d62728" stroke-width="2"/>'
        )
        out.append(
            f'<text x="{legend_x}" y="{y0 + 14 + 14 * len(series)}" font-size="12" text-anchor="end" '
            f'fill="#d62728">{label}</text>'
        )
    return out


def series_of(samples, column, scale=1.0):
    """[(minutes, value)] of one column, leaving out the samples where it is blank."""
    return [(r["t_s"] / 60.0, r[column] * scale) for r in samples if r.get(column) not in ("", None)]


def write_plot(path, samples, duration):
    """plot.svg: RSS (MiB) and descriptors (all, pipes, and those besides connections and
    pipes) over time, with the fits the verdict judged."""
    warm, end = warmup_seconds(duration) / 60.0, duration / 60.0
    slope, _, intercept, _, _ = growth(samples, "rss_kib", duration)
    fit = (slope / KIB, intercept / KIB, f"fit: {slope:+.1f} KiB/min") if slope is not None else None
    rss = [("VmRSS", series_of(samples, "rss_kib", 1.0 / KIB), "#1f77b4")]
    parts = svg_panel(0, "Relay RSS", "RSS (MiB)", rss, warm, end, fit)
    slope, _, intercept, _, _ = growth(samples, "fds", duration)
    fit = (slope, intercept, f"fit of all fds: {slope:+.2f} fds/min") if slope is not None else None
    descriptors = [
        ("all fds", series_of(samples, "fds"), "#2ca02c"),
        ("pipe fds", series_of(samples, "pipe_fds"), "#9467bd"),
        ("besides connections and pipes", series_of(samples, "other_fds"), "#ff7f0e"),
    ]
    parts += svg_panel(260, "Relay descriptors", "open descriptors", descriptors, warm, end, fit)
    with open(path, "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="900" height="520" font-family="sans-serif">\n')
        f.write('<rect width="100%" height="100%" fill="white"/>\n')
        f.write("\n".join(parts))
        f.write("\n</svg>\n")


# ------------------------------------------------------------------------------------------
# The soak
# ------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Soak one `spliceway run` under a mixed load (issue 13).")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    parser.add_argument("--out", help="output directory (default target/soak/<UTC time>/)")
    parser.add_argument(
        "--binary",
        default=os.path.join(ROOT, "target/release/spliceway"),
        help="the spliceway binary (default target/release/spliceway; soak.sh builds it when stale)",
    )
    # The health poller's process (started by the soak itself).
    parser.add_argument("--poll-health", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--poll-out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check the verdict code on synthetic data and the load's checks without a relay, then exit",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.out = os.path.join(ROOT, "target", "soak", stamp)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def wait_servers_idle(servers, seconds=30.0):
    """Lets the upstreams finish checking the endings they are still waiting for."""
    deadline = time.monotonic() + seconds
    while any(s.busy() for s in servers) and time.monotonic() < deadline:
        time.sleep(0.1)


class Setup:
    """What a soak starts before the relay: the upstream servers, the ports, the configuration,
    the tally and the stop events (servers, load, sampler: stopped in that reverse order)."""

    def __init__(self, args):
        self.out = args.out
        self.tally = Tally()
        self.server_stop, self.load_stop, self.sample_stop = threading.Event(), threading.Event(), threading.Event()
        self.servers = {name: Upstream(name, self.tally, self.server_stop).start() for name in ("alpha", "beta")}
        self.listen = {name: free_port() for name in self.servers}
        self.metrics_port = free_port()
        self.upstream_ports = {name: server.port for name, server in self.servers.items()}
        self.config_path = self.path("spliceway.toml")
        write_config(self.config_path, self.config_for(0))
        corrupt = Corruptor(bool(os.environ.get("SOAK_CORRUPT")))
        self.load = Load(self.listen, self.tally, self.load_stop, corrupt)

    def path(self, name):
        return os.path.join(self.out, name)

    def config_for(self, generation):
        return config_text(self.listen, self.upstream_ports, self.metrics_port, generation)

    def stop_all(self):
        for event in (self.load_stop, self.sample_stop, self.server_stop):
            event.set()


def check_config(binary, config_path):
    """`spliceway check` first: a configuration the relay refuses stops the soak at once."""
    check = subprocess.run([binary, "check", "--config", config_path], capture_output=True, text=True)
    if check.returncode != 0:
        print(check.stdout + check.stderr, file=sys.stderr)
        raise SystemExit(f"soak: `spliceway check` refused {config_path}")


def drive(args, setup, relay):
    """Runs the load for the soak's length with the sampler and the controller, lets it
    finish, reads the relay's final state, then stops the relay with SIGTERM. Returns what
    was measured (a dict)."""
    wait_ready(relay, setup.metrics_port, setup.load)
    t0 = time.monotonic()
    samples, control_counts = [], collections.Counter()
    sample_thread = threading.Thread(
        target=sampler,
        args=(relay, setup.metrics_port, t0, setup.path("samples.csv"), samples, setup.sample_stop),
        daemon=True,
    )
    control = threading.Thread(
        target=controller,
        args=(relay, setup.config_path, setup.config_for, setup.load_stop, control_counts),
        daemon=True,
    )
    sample_thread.start()
    control.start()
    threads = start_load(setup.load)
    threads += MetricsAbuse(setup.metrics_port, setup.tally, setup.load_stop).start()
    poller = HealthPoller(setup.metrics_port, setup.path("health.csv"))
    try:
        duration = wait_for_the_end(relay, t0, args.minutes * 60, setup.tally)
    finally:
        health = poller.stop()
    setup.load_stop.set()
    for t in threads + [control]:
        t.join(CLIENT_TIMEOUT)
    wait_servers_idle(setup.servers.values())
    time.sleep(3.0)  # let the relay close what the last connections left
    alive = relay.proc.poll() is None
    final = scrape(setup.metrics_port)
    last = read_sample(relay.pid, setup.metrics_port, t0) if alive else {}
    measured = {
        "samples": samples,
        "duration_s": duration,
        "reloads_sent": control_counts["reloads"],
        "signal_pairs": control_counts["signal_pairs"],
        "active_at_end": None if final is None else int(metric_sum(final, "spliceway_connections_active") or 0),
        "fds_first": samples[0]["fds"] if samples else None,
        "fds_end": last.get("fds"),
        "pipe_fds_end": last.get("pipe_fds"),
        "relay_accepted": int(metric_sum(final, "spliceway_connections_accepted_total") or 0),
        "relay_bytes": metric_sum(final, "spliceway_bytes_total"),
        "relay_cpu_s": cpu_seconds(relay.pid) if alive else None,
        "health": health,
    }
    setup.sample_stop.set()
    sample_thread.join(5)
    measured["relay_status"] = relay.stop(DRAIN_TIMEOUT_S + 10)
    measured["soak_cpu_s"] = sum(os.times()[:2])
    return measured


def wait_for_the_end(relay, t0, seconds, tally):
    """Sleeps until the soak's length has passed (or the relay died); returns the length."""
    end = t0 + seconds
    while time.monotonic() < end:
        if relay.proc.poll() is not None:
            print(f"soak: the relay exited early with status {relay.proc.returncode}", file=sys.stderr)
            break
        time.sleep(min(5.0, max(0.0, end - time.monotonic())))
        report_progress(t0, tally)
    return time.monotonic() - t0


def write_report(setup, run, checks):
    """verdict.txt and plot.svg in the output directory; the verdict on stdout too."""
    text = format_verdict(checks, run)
    if run["problems"]:
        text += "\nfirst problems:\n" + "".join(f"  {p}\n" for p in run["problems"])
    with open(setup.path("verdict.txt"), "w") as f:
        f.write(text)
    write_plot(setup.path("plot.svg"), run["samples"], run["duration_s"])
    print(text, end="")
    print(f"soak: samples.csv, health.csv, plot.svg, relay.log and verdict.txt in {setup.out}")


def soak(args):
    """Runs the soak; returns the exit status (0: every check passed)."""
    os.makedirs(args.out, exist_ok=True)
    make_data()
    setup = Setup(args)
    check_config(args.binary, setup.config_path)
    relay = Relay(args.binary, setup.config_path, setup.path("relay.log"))
    print(
        f"soak: relay pid {relay.pid}, routes alpha 127.0.0.1:{setup.listen['alpha']} (splice), "
        f"beta 127.0.0.1:{setup.listen['beta']} (copy), metrics 127.0.0.1:{setup.metrics_port}; "
        f"{args.minutes:g} min of load; output in {args.out}",
        flush=True,
    )
    try:
        measured = drive(args, setup, relay)
    except BaseException:
        setup.stop_all()
        status = relay.stop(DRAIN_TIMEOUT_S + 10)
        print(f"\nsoak: stopped; the relay (pid {relay.pid}) exited with status {status}", file=sys.stderr)
        raise
    setup.server_stop.set()
    counts, problems = setup.tally.snapshot()
    with open(setup.path("relay.log"), errors="replace") as f:
        log = analyse_log(f)
    run = {"counts": counts, "problems": problems, "log": log, **measured}
    checks = judge(run)
    write_report(setup, run, checks)
    return 0 if all(ok for ok, _, _ in checks) else 1


def report_progress(t0, tally):
    """A line every minute or so, so a long soak shows it is alive."""
    elapsed = time.monotonic() - t0
    if int(elapsed) % 60 < 5:
        counts, _ = tally.snapshot()
        print(
            f"soak: {elapsed / 60:.1f} min: {counts['connections']} connections, "
            f"{counts['hash_checked']} hashes, {counts['abort_checked']} aborts checked, "
            f"{counts['hash_mismatch'] + counts['wrong_ending'] + counts['exchange_failed']} problems",
            flush=True,
        )


# ------------------------------------------------------------------------------------------
# Self-test
# ------------------------------------------------------------------------------------------


def synthetic_run(rss_per_min=0.0, fds_per_min=0.0, other_per_min=0.0, minutes=10, noise=True, **overrides):
    """A run dict as soak() builds it, with samples growing at the given rates."""
    rng = random.Random(7)
    samples = []
    for i in range(int(minutes * 60)):
        t = float(i)
        samples.append({
            "t_s": t,
            "rss_kib": 20000 + rss_per_min * t / 60 + (rng.uniform(-300, 300) if noise else 0),
            "fds": round(40 + fds_per_min * t / 60 + (rng.randint(-6, 6) if noise else 0)),
            "other_fds": round(14 + other_per_min * t / 60 + (rng.randint(-1, 1) if noise else 0)),
            "pipe_fds": 10, "pipes_open": 5, "threads": 5, "tcp_mem_pages": 100,
        })
    counts = collections.Counter({
        "hash_checked": 500, "checked_upload": 500, "echoes": 900, "abort_checked": 70,
        "connections": 1000, "plan_clean": 930, "plan_client_reset": 40, "plan_client_reset_after_end": 0, "plan_upstream_reset": 30,
    })
    log = {
        "unexpected": [], "unexpected_count": 0, "expected": collections.Counter(), "lines": 1000,
        "ends": collections.Counter({"both finished": 930, "reset by client": 40, "reset by upstream": 30}),
        "reloaded": 20, "reloaded_unchanged": 0,
    }
    run = {
        "counts": counts, "problems": [], "samples": samples, "duration_s": minutes * 60.0, "log": log,
        "reloads_sent": 20, "signal_pairs": 10, "relay_status": 0, "active_at_end": 0,
        "fds_first": 40, "fds_end": 40,
        "health": [(rng.uniform(0.3, 20.0), 200) for _ in range(int(minutes * 600))],
    }
    run.update(overrides)
    return run


def failed_checks(run):
    return {title for ok, title, _ in judge(run) if not ok}


class LaunderingProxy:
    """A deliberately wrong relay for the self-test: it passes bytes on but ends every
    connection with a clean FIN, whatever happened — the soak must call that a wrong ending."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(MIB)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)  # a FIN, never a reset
            except OSError:
                pass


def self_test():
    """Feeds the verdict code synthetic data and runs the load's checks without the relay:
    it must pass a healthy run and catch growth, mismatches, wrong endings and bad logs."""
    assert abs(least_squares([0, 1, 2, 3], [1, 3, 5, 7])[0] - 2.0) < 1e-9
    assert warmup_seconds(120) == 60 and warmup_seconds(1800) == 360 and warmup_seconds(60) == 30

    assert failed_checks(synthetic_run()) == set(), judge(synthetic_run())
    assert failed_checks(synthetic_run(rss_per_min=200)) == {"RSS flat"}
    assert failed_checks(synthetic_run(rss_per_min=-200)) == set(), "shrinking RSS is no leak"
    assert failed_checks(synthetic_run(fds_per_min=2)) == {"descriptors flat"}
    assert failed_checks(synthetic_run(fds_per_min=-2)) == {"descriptors flat"}
    assert failed_checks(synthetic_run(other_per_min=1.5)) == {"descriptors besides connections and pipes flat"}
    slopes = {title for _, title, *_ in SLOPE_CHECKS}
    short = synthetic_run(minutes=0.15, noise=False)  # 9 samples, 4 after warm-up
    assert failed_checks(short) == slopes, judge(short)
    assert all("too short" in d for ok, _, d in judge(short) if not ok)
    assert abs(correlation_factor([1, -1] * 20) - 1.0) < 1e-9  # alternating: no widening
    assert correlation_factor([-1] * 20 + [1] * 20) > 5  # one step: much wider
    stepped = synthetic_run(minutes=2, noise=False)
    for row in stepped["samples"]:
        row["rss_kib"] += 300 if row["t_s"] >= 90 else 0  # one allocator step after warm-up
    assert "RSS flat" in failed_checks(stepped), judge(stepped)
    assert "too short" in dict((t, d) for _, t, d in judge(stepped))["RSS flat"]
    noisy = synthetic_run(minutes=1.5)  # a flat but noisy 90 s: descriptors cannot be told
    assert "descriptors flat" in failed_checks(noisy), judge(noisy)
    assert all("too short" in d for ok, _, d in judge(noisy) if not ok), judge(noisy)

    counts = synthetic_run()["counts"]
    for key, title in (("hash_mismatch", "hashes"), ("wrong_ending", "aborts"), ("exchange_failed", "clean exchanges")):
        bad = collections.Counter(counts)
        bad[key] += 1
        assert failed_checks(synthetic_run(counts=bad, problems=[f"{key}: synthetic"])) == {title}, key

    healthy_log = synthetic_run()["log"]
    lines = [
        json.dumps({"level": "WARN", "fields": {"message": 'log level now "debug" (signal)'}}),
        json.dumps({"level": "INFO", "fields": {"message": "closed", "end": "both finished"}}),
        json.dumps({"level": "INFO", "fields": {"message": 'reloaded x: added [], removed [], changed ["alpha"], unchanged ["beta"]'}}),
        json.dumps({"level": "ERROR", "fields": {"message": "reload failed, the running configuration stays"}}),
        "thread 'worker-1' panicked at src/x.rs:1:1",
    ]
    log = analyse_log(lines)
    assert log["unexpected_count"] == 2 and sum(log["expected"].values()) == 1, log
    assert log["ends"] == {"both finished": 1} and log["reloaded"] == 1, log
    assert failed_checks(synthetic_run(log={**healthy_log, "unexpected_count": 1, "unexpected": ["ERROR x"]})) == {"relay log"}
    ends = collections.Counter(healthy_log["ends"], **{"idle timeout": 1})
    assert failed_checks(synthetic_run(log={**healthy_log, "ends": ends})) == {"relay's closed lines"}
    assert failed_checks(synthetic_run(log={**healthy_log, "reloaded": 19})) == {"reloads"}
    assert failed_checks(synthetic_run(relay_status=1)) == {"SIGTERM"}
    health = synthetic_run()["health"]
    for polls in (health + [(250.0, 200)], health + [(5.0, 503)], health[:1] + [(5000.0, 0)], []):
        assert failed_checks(synthetic_run(health=polls)) == {"health under metrics abuse"}, polls[-1:]
    abused = collections.Counter(counts, metrics_abuse=1)
    assert failed_checks(synthetic_run(counts=abused, problems=["metrics_abuse: x"])) == {"health under metrics abuse"}
    assert percentile([5, 1, 4, 2, 3], 50) == 3 and percentile(list(range(1, 101)), 99) == 99
    assert "p99 " in dict((t, d) for _, t, d in judge(synthetic_run()))["health under metrics abuse"]
    assert failed_checks(synthetic_run(active_at_end=3)) == {"idle at the end"}

    # The load's own checks, straight to an upstream (no relay): all clean, every reset seen.
    make_data()
    tally, stop = Tally(), threading.Event()
    server = Upstream("direct", tally, stop).start()
    load = Load({"direct": server.port}, tally, stop)
    rng = random.Random(3)
    load.upload("direct", 8 * MIB, 0)
    load.download("direct", 8 * MIB, MIB)
    load.multipart("direct", 2, rng)
    load.short_echo("direct", rng)
    load.half_close("direct", rng)
    for name in Load.ABORTS:
        getattr(load, name)("direct", rng)
    wait_servers_idle([server])
    counts, problems = tally.snapshot()
    assert not problems, problems
    assert counts["abort_checked"] == len(Load.ABORTS) and counts["hash_checked"] == 5, counts

    # A flipped byte in a copy of received data is a mismatch.
    load.corrupt = Corruptor(True)
    load.download("direct", 8 * MIB, 0)
    counts, _ = tally.snapshot()
    assert counts["hash_mismatch"] == 1, counts

    # Through a relay that turns resets into clean ends, the resets are wrong endings.
    tally2 = Tally()
    server2 = Upstream("laundered", tally2, stop).start()
    proxy = LaunderingProxy(server2.port)
    load2 = Load({"laundered": proxy.port}, tally2, stop)
    load2.client_reset_upload("laundered", rng)
    load2.upstream_reset_download("laundered", rng)
    wait_servers_idle([server2])
    counts, problems = tally2.snapshot()
    assert counts["wrong_ending"] == 2, (counts, problems)
    stop.set()
    print("soak self-test: passed (slopes, warm-up, verdict on synthetic runs, log analysis, "
          "the load's hash and ending checks direct, a flipped byte, a relay that hides resets)")
    return 0


def interrupted(_signum, _frame):
    """SIGTERM to the soak itself: stop like Ctrl-C (the relay is stopped by its PID)."""
    raise KeyboardInterrupt


def main(argv):
    args = parse_args(argv)
    if args.poll_health:
        return poll_health(args.poll_health, args.poll_out)
    if args.self_test:
        return self_test()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return soak(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
