#!/usr/bin/env bash
# Compares spliceway (splice and copy mode) with stone, socat, haproxy and nginx (stream module)
# on the same upload. (rinetd is left out: it closes both sides at the client's end of stream, so
# the sink's answer never comes back; see docs/benchmarks.md.)
#
#   scripts/compare-peers.sh                                   # loopback, 512 MiB, 3 runs
#   scripts/compare-peers.sh --topology emulated --size 128MiB --relay-cpu 0.1   # as root
#   scripts/compare-peers.sh --workload rtt                    # 20,000 round trips of 64 B
#   scripts/compare-peers.sh --all-workloads --runs 5          # upload, then rtt, then connect
#   scripts/compare-peers.sh --pattern aws-cli                 # as `aws s3 cp`: 10 connections, 8 MiB parts
#   scripts/compare-peers.sh --topology emulated --link direct-connect --pattern aws-cli --relay-cpu 0.1
#   COMPARE_PEERS="haproxy nginx" scripts/compare-peers.sh ... # only these peers (default: all four)
#
# Extra arguments go to `spliceway bench` and override the defaults set here (--runs 3), so
# every bench flag works here (--workload, --requests, --message-size, --concurrency, --streams,
# --part-size, --pattern, --link, --nic, ...).
# --all-workloads (taken by this script) runs the upload, rtt and connect workloads one after
# the other with the same other flags, a JSON file each.
# The results are printed as a table on stderr and saved as JSON to
# target/bench/compare-peers-<topology>-<UTC time>.json, or to $BENCH_JSON when set, for
# `spliceway bench --plot-from FILE.json --plot FILE.svg`. Installs the peers with apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a wanted <<<"${COMPARE_PEERS:-stone socat haproxy nginx}"
missing=()
for tool in "${wanted[@]}"; do
    case "$tool" in
        stone | socat | haproxy | nginx) ;;
        *)
            echo "compare-peers.sh: unknown peer $tool in COMPARE_PEERS (stone socat haproxy nginx)" >&2
            exit 2
            ;;
    esac
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ " ${wanted[*]} " == *" nginx "* ]] && [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    missing+=(libnginx-mod-stream)
fi
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

# haproxy and nginx take their addresses from a configuration file: scripts/peers/ has a small
# wrapper for each that writes one into $PEER_DIR and execs the relay in the foreground.
export PEER_DIR="$tmp"
peers="$PWD/scripts/peers"

# Name the JSON after the workload, topology, link preset, pattern and CPU cap given on the
# command line.
topology=loopback
cap=""
more=""
workloads=(upload)
args=()
for arg in "$@"; do
    if [ "$arg" = --all-workloads ]; then
        workloads=(upload rtt connect)
    else
        args+=("$arg")
    fi
done
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --workload) workloads=("${args[i + 1]:-upload}") ;;
        --workload=*) workloads=("${args[i]#--workload=}") ;;
        --topology) topology=${args[i + 1]:-loopback} ;;
        --topology=*) topology=${args[i]#--topology=} ;;
        --relay-cpu) cap=-cpu${args[i + 1]:-} ;;
        --relay-cpu=*) cap=-cpu${args[i]#--relay-cpu=} ;;
        --link | --pattern) more+=-${args[i + 1]:-} ;;
        --link=* | --pattern=*) more+=-${args[i]#*=} ;;
    esac
done
mkdir -p target/bench
if ((${#workloads[@]} > 1)) && [ -n "${BENCH_JSON:-}" ]; then
    echo "compare-peers.sh: BENCH_JSON names one file; --all-workloads writes three" >&2
    exit 2
fi

peer_args=()
for tool in "${wanted[@]}"; do
    case "$tool" in
        stone) peer_args+=(--peer stone='stone {upstream_addr} {listen_addr}') ;;
        socat) peer_args+=(--peer socat='socat TCP-LISTEN:{listen},bind={listen_ip},reuseaddr,fork TCP:{upstream_addr}') ;;
        haproxy) peer_args+=(--peer haproxy="$peers/haproxy.sh {listen_addr} {upstream_addr}") ;;
        nginx) peer_args+=(--peer nginx="$peers/nginx.sh {listen_addr} {upstream_addr}") ;;
    esac
done

status=0
for workload in "${workloads[@]}"; do
    name=$workload
    [ "$workload" = upload ] && name=""
    json=${BENCH_JSON:-target/bench/compare-peers-$topology$more$cap${name:+-$name}-$(date -u +%Y%m%dT%H%M%SZ).json}
    cargo run --release --quiet -- bench --runs 3 "${peer_args[@]}" "${args[@]}" \
        --workload "$workload" --json >"$json" || status=$?
    echo "compare-peers.sh: $workload results saved to $json" >&2
done
exit "$status"
