#!/usr/bin/env bash
# Scale benchmark (issue 5): idle, active and churning connections through the spliceway binary,
# compared with HAProxy, on this machine. Output is kept under target/bench/.
#
#   scripts/scale.sh            # the standard set: 9,000 idle, 9,000 active x 1 MiB, 100,000 churned
#   scripts/scale.sh --quick    # 500 idle, 200 active x 256 KiB, 5,000 churned (a minute)
#   scripts/scale.sh --idle 2000 --active 0 --churn 0   # any option of the scale binary
#
# Needs: a Rust toolchain; haproxy on PATH for the comparison (skipped with a message if not).
# The open-file limit must allow 2 descriptors per relayed connection in the relay and in the
# benchmark process each (9,000 connections: 18,000 + a few).
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release -p spliceway-cli -p spliceway-microbench --bin spliceway --bin scale

# Raise the soft descriptor limit to the hard one (the scale binary does it too; children inherit).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 18200 ]; then
    echo "scale.sh: the open-file limit is $(ulimit -n); 9,000 connections need about 18,200" >&2
fi

# 9,000 connections moving 1 MiB both ways at once hold up to ~17 GiB in socket buffers; the
# kernel's default TCP memory limit (net.ipv4.tcp_mem, ~2 GiB here) then makes it abort
# sockets. As root, raise it for the run (4x) and put it back afterwards; SCALE_KEEP_TCP_MEM=1
# leaves it alone.
if [ "$(id -u)" = 0 ] && [ -z "${SCALE_KEEP_TCP_MEM:-}" ]; then
    old_tcp_mem=$(cat /proc/sys/net/ipv4/tcp_mem)
    read -r lo mid hi <<<"$old_tcp_mem"
    echo "$((lo * 4)) $((mid * 4)) $((hi * 4))" >/proc/sys/net/ipv4/tcp_mem
    trap 'echo "$old_tcp_mem" >/proc/sys/net/ipv4/tcp_mem' EXIT
    echo "scale.sh: net.ipv4.tcp_mem raised to $(cat /proc/sys/net/ipv4/tcp_mem) for this run" >&2
fi

args=(--spliceway target/release/spliceway)
if command -v haproxy >/dev/null; then
    args+=(--haproxy "$(command -v haproxy)")
else
    echo "scale.sh: haproxy not found: no comparison" >&2
fi

mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
text=target/bench/scale-$stamp.txt
json=target/bench/scale-$stamp.json

status=0
target/release/scale "${args[@]}" --json "$json" "$@" 2>&1 | tee "$text" || status=$?
echo "scale.sh: tables in $text, figures in $json" >&2
exit "$status"
