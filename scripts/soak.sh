#!/usr/bin/env bash
# Soak (issue 13): a mixed load through one `spliceway run` with two routes for N minutes, and
# abuse of its metrics port while /healthz is polled every 100 ms (issue 24), then a verdict on
# hashes, resets, RSS and descriptor growth, the relay's log, health latency and its drain. The work
# is done by scripts/soak.py (Python 3, standard library only); see docs/reliability.md#soak.
#
#   scripts/soak.sh                          # 10 minutes, output in target/soak/<UTC time>/
#   scripts/soak.sh --minutes 30 --out /tmp/soak
#   scripts/soak.sh --binary ./spliceway     # a given binary (not rebuilt)
#   scripts/soak.sh --self-test              # the verdict code against synthetic data
#
# Without --binary it uses target/release/spliceway and builds it first (cargo build --release)
# when it is absent or older than the sources. Traffic stays on 127.0.0.1. Ctrl-C stops the
# relay (by its PID) and the load. Exit status: 0 when every check passes, 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=$root/target/release/spliceway
given_binary=
build=yes
for arg in "$@"; do
    case $arg in
        --binary | --binary=*) given_binary=yes ;;
        -h | --help | --self-test) build= ;;
    esac
done

# Whether a source the binary is built from (the crates' src/, their manifests, the lock file)
# changed after it was built. Tests and benches are not sources of the binary.
sources_newer() {
    [ -n "$(find "$root"/crates/*/src "$root"/crates/*/Cargo.toml "$root/Cargo.toml" "$root/Cargo.lock" \
        -newer "$binary" \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit)" ]
}

build_release() {
    cargo build --release --manifest-path "$root/Cargo.toml" -p spliceway-cli --bin spliceway
    # Cargo leaves a binary it found up to date untouched; mark it so, or every run would
    # announce a rebuild.
    touch "$binary"
}

if [ -z "$given_binary" ] && [ -n "$build" ]; then
    if [ ! -x "$binary" ]; then
        echo "soak.sh: $binary is absent: building it (cargo build --release)" >&2
        build_release
    elif sources_newer; then
        echo "soak.sh: $binary is older than the sources: rebuilding it (cargo build --release)" >&2
        build_release
    fi
fi

# Connections churn at ~100/s and each holds a descriptor in this process and two in the relay;
# the default soft limit is plenty, but raise it to the hard one in case it was set low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# exec: the Python driver gets Ctrl-C itself and stops the relay it started.
exec python3 "$root/scripts/soak.py" "$@"
