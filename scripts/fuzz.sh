#!/usr/bin/env bash
# Runs each cargo-fuzz target of spliceway for a bounded time.
#
#   scripts/fuzz.sh                    # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh   # longer runs
#   scripts/fuzz.sh client_hello       # only the named targets
#
# Needs a nightly toolchain (libFuzzer instrumentation uses -Zsanitizer) and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Each target lives in the cargo-fuzz package of the crate it fuzzes: client_hello,
# proxy_header and http_connect in fuzz/ (the engine), config in crates/spliceway-config/fuzz/. Crashes are written to
# <package>/artifacts/<target>/; new inputs grow <package>/corpus/<target>/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(client_hello proxy_header http_connect config)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; cargo-fuzz needs one." >&2
    echo "         install it with: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed." >&2
    echo "         install it with: cargo install cargo-fuzz" >&2
    exit 2
fi

# The cargo-fuzz package of each target.
package_of() {
    case "$1" in
        client_hello | proxy_header | http_connect) echo "$root/fuzz" ;;
        config) echo "$root/crates/spliceway-config/fuzz" ;;
        *)
            echo "fuzz.sh: unknown target $1 (expected client_hello, proxy_header, http_connect or config)" >&2
            exit 2
            ;;
    esac
}

for target in "${targets[@]}"; do
    package="$(package_of "$target")"
    echo "fuzz.sh: running $target for ${seconds}s"
    (cd "$package" && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds")
done
echo "fuzz.sh: all targets ran ${seconds}s without a crash"
