#!/usr/bin/env bash
# Soak (issues 13 and 24): a mixed load through one `spliceway run` with two routes for N
# minutes, and abuse of its metrics port while /healthz is polled every 100 ms, then a verdict
# on hashes, resets, RSS and descriptor growth, the relay's log, health latency and its drain.
# The work is done by `spliceway soak` (crates/spliceway-bench/src/soak); see
# docs/reliability.md#soak. This wrapper builds the release binary and raises the descriptor
# limit.
#
#   scripts/soak.sh                          # 10 minutes, output in target/soak/<UTC time>/
#   scripts/soak.sh --minutes 30 --out /tmp/soak
#   scripts/soak.sh --binary ./spliceway     # soak a given binary (the soak itself runs from
#                                            # target/release/spliceway)
#   scripts/soak.sh --self-test              # the verdict code and the load's checks, seconds
#
# target/release/spliceway is built first (cargo build --release) when it is absent or older
# than the sources. Traffic stays on 127.0.0.1. Ctrl-C stops the relay (by its PID) and the
# load. Exit status: 0 when every check passes, 1 otherwise, 130 when interrupted.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
driver=$root/target/release/spliceway

# Whether a source the binary is built from (the crates' src/, their manifests, the lock file)
# changed after it was built. Tests and benches are not sources of the binary.
sources_newer() {
    [ -n "$(find "$root"/crates/*/src "$root"/crates/*/Cargo.toml "$root/Cargo.toml" "$root/Cargo.lock" \
        -newer "$driver" \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit)" ]
}

build_release() {
    cargo build --release --manifest-path "$root/Cargo.toml" -p spliceway-cli --bin spliceway
    # Cargo leaves a binary it found up to date untouched; mark it so, or every run would
    # announce a rebuild.
    touch "$driver"
}

if [ ! -x "$driver" ]; then
    echo "soak.sh: $driver is absent: building it (cargo build --release)" >&2
    build_release
elif sources_newer; then
    echo "soak.sh: $driver is older than the sources: rebuilding it (cargo build --release)" >&2
    build_release
fi

# Connections churn at ~100/s and each holds a descriptor in the soak and two in the relay;
# the default soft limit is plenty, but raise it to the hard one in case it was set low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Defaults first: a flag given again in "$@" wins (the soak keeps a flag's last value).
exec "$driver" soak --binary "$driver" --out "$root/target/soak/$(date -u +%Y%m%dT%H%M%SZ)" "$@"
