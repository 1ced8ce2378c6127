#!/usr/bin/env bash
# Builds the Debian and RPM packages of spliceway from this tree:
#   target/debian/spliceway_VERSION-1_ARCH.deb        (+ spliceway-dbgsym_….ddeb, debug symbols)
#   target/generate-rpm/spliceway-VERSION-1.ARCH.rpm  (+ spliceway.debug next to it)
#
# The man pages (spliceway(1), a page per command, spliceway.toml(5)) and the bash, zsh and fish
# completions are generated from the binary just built (`spliceway man [PAGE]`,
# `spliceway completions SHELL`) into packaging/generated/; nothing generated is kept in
# git. Needs cargo-deb, cargo-generate-rpm and binutils (objcopy).
# SPLICEWAY_MAINTAINER="Name <address>" overrides the Debian Maintainer field.
set -euo pipefail
cd "$(dirname "$0")/.."

# The package metadata paths assume ./target (see crates/spliceway-cli/Cargo.toml).
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ "$(realpath -m "$CARGO_TARGET_DIR")" != "$(realpath -m target)" ]; then
    echo "build-packages.sh: unset CARGO_TARGET_DIR (the packages are built from ./target)" >&2
    exit 1
fi
for tool in cargo-deb cargo-generate-rpm objcopy gzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-packages.sh: $tool is missing" >&2; exit 1; }
done

echo "== cargo build --release -p spliceway-cli"
cargo build --release --locked -p spliceway-cli
bin=target/release/spliceway
gen=packaging/generated
rm -rf "$gen"
mkdir -p "$gen"

echo "== man pages and completions from $bin"
mkdir -p "$gen/man" "$gen/man5"
"$bin" man > "$gen/spliceway.1"
gzip -9n < "$gen/spliceway.1" > "$gen/man/spliceway.1.gz"
# A page for each command the main page's SEE ALSO names, one a line as
# `\fBspliceway\-relay\fR(1),` (crates/spliceway-cli/src/man/mod.rs writes them so).
for command in $(sed -n 's/^\\fBspliceway\\-\([a-z-]*\)\\fR(1).*/\1/p' "$gen/spliceway.1"); do
    "$bin" man "$command" | gzip -9n > "$gen/man/spliceway-$command.1.gz"
done
[ "$(ls "$gen/man" | wc -l)" -gt 1 ] || { echo "build-packages.sh: no command pages" >&2; exit 1; }
# The configuration file's page, spliceway.toml(5), which the main page names too.
grep -q '^\\fBspliceway\.toml\\fR(5)' "$gen/spliceway.1" \
    || { echo "build-packages.sh: spliceway(1) does not name spliceway.toml(5)" >&2; exit 1; }
"$bin" man spliceway.toml | gzip -9n > "$gen/man5/spliceway.toml.5.gz"
"$bin" completions bash > "$gen/spliceway.bash"
"$bin" completions zsh > "$gen/_spliceway"
"$bin" completions fish > "$gen/spliceway.fish"
for f in spliceway.1 spliceway.bash _spliceway spliceway.fish; do
    [ -s "$gen/$f" ] || { echo "build-packages.sh: $gen/$f is empty" >&2; exit 1; }
done

# The RPM gets a stripped copy; its debug symbols go to spliceway.debug (found by gdb through
# the .gnu_debuglink section, e.g. when installed as /usr/lib/debug/usr/bin/spliceway.debug).
objcopy --only-keep-debug --compress-debug-sections=zlib "$bin" "$gen/spliceway.debug"
objcopy --strip-debug --strip-unneeded --remove-section=.comment \
    --add-gnu-debuglink="$gen/spliceway.debug" "$bin" "$gen/spliceway"

echo "== cargo deb"
deb_args=(--no-build --dbgsym --compress-debug-symbols=zlib -p spliceway-cli)
if [ -n "${SPLICEWAY_MAINTAINER:-}" ]; then
    deb_args+=(--maintainer "$SPLICEWAY_MAINTAINER")
fi
rm -f target/debian/spliceway_*.deb target/debian/spliceway-dbgsym_*.ddeb
cargo deb "${deb_args[@]}"

echo "== cargo generate-rpm"
rm -f target/generate-rpm/spliceway-*.rpm
cargo generate-rpm -p crates/spliceway-cli
cp "$gen/spliceway.debug" target/generate-rpm/spliceway.debug

ls -l target/debian/spliceway*.*deb target/generate-rpm/spliceway-*.rpm target/generate-rpm/spliceway.debug
