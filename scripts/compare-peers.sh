#!/usr/bin/env bash
# Compares spliceway (splice and copy mode) with stone, socat, haproxy and nginx (stream module)
# on the same upload. (rinetd is left out: it closes both sides at the client's end of stream, so
# the sink's answer never comes back; see docs/benchmarks.md.)
#
#   scripts/compare-peers.sh                                   # loopback, 512 MiB, 3 runs
#   scripts/compare-peers.sh --topology emulated --size 128MiB --relay-cpu 0.1   # as root
#
# Extra arguments go to `spliceway bench` and override the defaults set here (--runs 3).
# The results are printed as a table on stderr and saved as JSON to
# target/bench/compare-peers-<topology>-<UTC time>.json, or to $BENCH_JSON when set, for
# scripts/plot-bench.py. Installs the peers with apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in stone socat haproxy nginx; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
    packages=()
    for tool in "${missing[@]}"; do
        case "$tool" in
            nginx) packages+=(nginx-light) ;;
            *) packages+=("$tool") ;;
        esac
    done
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "compare-peers.sh: install ${packages[*]} first (apt-get install ${packages[*]})" >&2
        exit 2
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

# haproxy takes its addresses from a configuration file, so the template is a small wrapper
# that writes one and execs haproxy in the foreground (-db) with the wrapper's PID, so the
# bench measures and stops haproxy itself.
cat >"$tmp/haproxy-peer.sh" <<'WRAPPER'
#!/bin/sh
# usage: haproxy-peer.sh LISTEN_ADDR UPSTREAM_ADDR
set -e
cfg=$(mktemp "$(dirname "$0")/haproxy.XXXXXX")
cat >"$cfg" <<CFG
global
    nbthread 1
    maxconn 1000
defaults
    mode tcp
    option splice-auto
    timeout connect 10s
    timeout client 5m
    timeout server 5m
frontend bench
    bind $1
    default_backend sink
backend sink
    server sink $2
CFG
exec haproxy -db -f "$cfg"
WRAPPER
chmod 755 "$tmp/haproxy-peer.sh"

# nginx's stream module, the same way: one process (master_process off), one worker, no
# splice (nginx copies through its proxy buffer, 16 KiB by default).
cat >"$tmp/nginx-peer.sh" <<'WRAPPER'
#!/bin/sh
# usage: nginx-peer.sh LISTEN_ADDR UPSTREAM_ADDR
set -e
dir=$(mktemp -d "$(dirname "$0")/nginx.XXXXXX")
cat >"$dir/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
stream {
    server {
        listen $1;
        proxy_pass $2;
        proxy_half_close on;
    }
}
CFG
exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
WRAPPER
chmod 755 "$tmp/nginx-peer.sh"

# Name the JSON after the topology and CPU cap given on the command line.
topology=loopback
cap=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --topology) topology=${args[i + 1]:-loopback} ;;
        --topology=*) topology=${args[i]#--topology=} ;;
        --relay-cpu) cap=-cpu${args[i + 1]:-} ;;
        --relay-cpu=*) cap=-cpu${args[i]#--relay-cpu=} ;;
    esac
done
mkdir -p target/bench
json=${BENCH_JSON:-target/bench/compare-peers-$topology$cap-$(date -u +%Y%m%dT%H%M%SZ).json}

status=0
cargo run --release --quiet -- bench --runs 3 \
    --peer stone='stone {upstream_addr} {listen_addr}' \
    --peer socat='socat TCP-LISTEN:{listen},bind={listen_ip},reuseaddr,fork TCP:{upstream_addr}' \
    --peer haproxy="$tmp/haproxy-peer.sh {listen_addr} {upstream_addr}" \
    --peer nginx="$tmp/nginx-peer.sh {listen_addr} {upstream_addr}" \
    "$@" --json >"$json" || status=$?
echo "compare-peers.sh: results saved to $json" >&2
exit "$status"
