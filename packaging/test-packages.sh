#!/usr/bin/env bash
# Builds the packages (packaging/build-packages.sh) and tests them on this machine, as root:
#   .deb: contents, install with apt-get, files where dpkg says, --version, `check` of the
#         shipped configuration, man pages (every page spliceway(1) names, spliceway.toml(5)),
#         the installed README's links resolving to installed files, bash completion, unit enabled but socket not, remove
#         (the conffile stays), purge (nothing stays), lintian (no E: lines; warnings printed);
#   .rpm: `rpm -qlp` contents, `rpm -qp --scripts` scripts, `--configfiles`, %config(noreplace);
#   `cargo install --path crates/spliceway-cli` into a temporary root.
# Not root: prints "skipped: not root" and exits 0. Installs and purges the package `spliceway`:
# run it on a CI or throw-away machine. --no-build tests the packages already in target/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "skipped: not root (test-packages.sh installs and purges the spliceway package)"
    exit 0
fi

fail() {
    printf 'test-packages.sh: FAIL: %b\n' "$*" >&2
    exit 1
}
step() { echo "-- $*"; }

build=1
[ "${1:-}" = "--no-build" ] && build=0

for tool in apt-get dpkg dpkg-deb lintian rpm man readelf; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (apt-get install lintian rpm man-db binutils)"
done
[ -r /usr/share/bash-completion/bash_completion ] || fail "bash-completion is not installed"
# Minimal images (debian:*-slim) tell dpkg to skip man pages and docs: the package's would not
# be installed, and the checks below could not pass.
excluded=$(grep -rhs '^path-exclude.*/usr/share/\(man\|doc\)' /etc/dpkg/dpkg.cfg.d/ || true)
[ -z "$excluded" ] || fail "dpkg is told to skip files this test checks (/etc/dpkg/dpkg.cfg.d): $excluded"

# Nothing of a spliceway installed otherwise may be in the way: the purge below deletes
# /etc/spliceway.
if dpkg-query -W -f '${Status}' spliceway 2>/dev/null | grep -q "installed\|config-files"; then
    fail "the package spliceway is already installed here; purge it first (apt-get purge spliceway)"
fi
for path in /etc/spliceway /usr/bin/spliceway; do
    [ ! -e "$path" ] || fail "$path exists without the package; refusing to install over it"
done

if [ "$build" = 1 ]; then
    packaging/build-packages.sh
fi

version=$(cargo pkgid -p spliceway-cli | sed 's/.*[#@]//')
[ -n "$version" ] || fail "cannot read the crate version (cargo pkgid -p spliceway-cli)"
shopt -s nullglob
debs=(target/debian/spliceway_"$version"-*.deb)
rpms=(target/generate-rpm/spliceway-"$version"-*.rpm)
dbgsyms=(target/debian/spliceway-dbgsym_"$version"-*.ddeb)
shopt -u nullglob
[ "${#debs[@]}" = 1 ] || fail "expected one target/debian/spliceway_$version-*.deb, found ${#debs[@]}"
[ "${#rpms[@]}" = 1 ] || fail "expected one target/generate-rpm/spliceway-$version-*.rpm, found ${#rpms[@]}"
[ "${#dbgsyms[@]}" = 1 ] || fail "expected one target/debian/spliceway-dbgsym_$version-*.ddeb, found ${#dbgsyms[@]}"
deb=${debs[0]}
rpm_file=${rpms[0]}
echo "== testing $deb, $rpm_file (crate version $version)"

# What the .deb must install (files; dpkg -L lists their directories too).
deb_files=(
    /usr/bin/spliceway
    /lib/systemd/system/spliceway.service
    /lib/systemd/system/spliceway.socket
    /etc/spliceway/spliceway.toml
    /usr/share/man/man1/spliceway.1.gz
    /usr/share/bash-completion/completions/spliceway
    /usr/share/zsh/vendor-completions/_spliceway
    /usr/share/fish/vendor_completions.d/spliceway.fish
    /usr/share/doc/spliceway/copyright
    /usr/share/doc/spliceway/changelog.Debian.gz
    /usr/share/doc/spliceway/README.md
    /usr/share/doc/spliceway/packaging/README.md
    /usr/share/man/man5/spliceway.toml.5.gz
)
# The documents README.md links to, installed beside it (docs/*.md).
for doc in docs/*.md; do
    deb_files+=("/usr/share/doc/spliceway/$doc")
done

# The commands' pages, one per command the main page names (build-packages.sh makes them).
for page in packaging/generated/man/spliceway-*.1.gz; do
    [ -e "$page" ] || fail "no command man pages in packaging/generated/man"
    deb_files+=("/usr/share/man/man1/${page##*/}")
done

step "deb contents (dpkg-deb -c)"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
for f in "${deb_files[@]}"; do
    grep -qxF "$f" <<<"$contents" || fail "$deb does not contain $f; it has:\n$contents"
done
# Nothing besides those files (and their directories).
extra=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' \
    | grep -vxF -f <(printf '%s\n' "${deb_files[@]}") || true)
[ -z "$extra" ] || fail "$deb contains files not in the intended list: $extra"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/spliceway/spliceway.toml \
    || fail "/etc/spliceway/spliceway.toml is not a conffile of $deb"
for script in postinst prerm postrm; do
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$script" | cmp -s - "packaging/debian/$script" \
        || fail "$script in $deb differs from packaging/debian/$script"
done

step "lintian (errors fail; warnings and info printed)"
lintian_out=$(lintian "$deb" 2>&1 || true)
[ -z "$lintian_out" ] || printf '%s\n' "$lintian_out"
if grep -q '^E: ' <<<"$lintian_out"; then
    fail "lintian reports errors on $deb"
fi

step "apt-get install ./$deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" \
    || fail "apt-get install ./$deb failed"
dpkg-query -W -f '${Status} ${Version}\n' spliceway | grep -q "install ok installed $version-" \
    || fail "spliceway $version is not installed: $(dpkg-query -W -f '${Status} ${Version}' spliceway)"

step "every file of dpkg -L exists, and every intended file is listed"
listed=$(dpkg -L spliceway)
while IFS= read -r path; do
    [ -e "$path" ] || fail "dpkg -L spliceway lists $path, which does not exist"
done <<<"$listed"
for f in "${deb_files[@]}"; do
    grep -qxF "$f" <<<"$listed" || fail "dpkg -L spliceway does not list $f"
    [ -f "$f" ] || fail "$f is not a file"
done
[ -x /usr/bin/spliceway ] || fail "/usr/bin/spliceway is not executable"

step "the installed binary is stripped; its symbols are in the dbgsym package"
if readelf -S /usr/bin/spliceway | grep -q '\.debug_info'; then
    fail "/usr/bin/spliceway carries .debug_info (debug symbols belong in the dbgsym package)"
fi
readelf -S /usr/bin/spliceway | grep -q '\.gnu_debuglink' \
    || fail "/usr/bin/spliceway has no .gnu_debuglink to its separate debug file"
dpkg-deb -c "${dbgsyms[0]}" | grep -q '/usr/lib/debug/.build-id/.*\.debug$' \
    || fail "${dbgsyms[0]} holds no /usr/lib/debug/.build-id/*.debug"

step "spliceway --version"
got=$(/usr/bin/spliceway --version)
[ "$got" = "spliceway $version" ] || fail "spliceway --version printed '$got', expected 'spliceway $version'"

step "spliceway check --config /etc/spliceway/spliceway.toml"
/usr/bin/spliceway check --config /etc/spliceway/spliceway.toml \
    || fail "spliceway check rejects the shipped /etc/spliceway/spliceway.toml"

step "man -w spliceway"
page=$(man -w spliceway 2>&1) || fail "man -w spliceway finds no page: $page"
[ "$page" = /usr/share/man/man1/spliceway.1.gz ] || fail "man -w spliceway found $page"
zcat /usr/share/man/man1/spliceway.1.gz | grep -q '^\.TH' || fail "spliceway.1.gz is not a man page"
# Every page the main page's SEE ALSO names is installed (one a line:
# `\fBspliceway\-relay\fR(1),`), and the configuration file's, spliceway.toml(5).
for command in $(zcat /usr/share/man/man1/spliceway.1.gz | sed -n 's/^\\fBspliceway\\-\([a-z-]*\)\\fR(1).*/\1/p'); do
    man -w "spliceway-$command" >/dev/null 2>&1 || fail "SEE ALSO names spliceway-$command(1), which is not installed"
done
page=$(man -w 5 spliceway.toml 2>&1) || fail "man -w 5 spliceway.toml finds no page: $page"
[ "$page" = /usr/share/man/man5/spliceway.toml.5.gz ] || fail "man -w 5 spliceway.toml found $page"
for noise in help man; do
    [ ! -e "/usr/share/man/man1/spliceway-$noise.1.gz" ] || fail "spliceway-$noise(1) is installed"
done

step "the installed README's links resolve where it is installed"
# Relative Markdown links outside code fences and spans, as crates/spliceway-repo-checks/tests/docs_links.rs reads them.
links=$(awk '/^```/ {fence = !fence; next} !fence' /usr/share/doc/spliceway/README.md \
    | sed 's/`[^`]*`//g' | grep -o '](\([^)]*\))' | sed 's/^](//; s/)$//; s/#.*//' \
    | grep -v -e '^[a-z]*:' -e '^$' | sort -u)
[ -n "$links" ] || fail "found no relative link in the installed README.md"
while IFS= read -r link; do
    [ -e "/usr/share/doc/spliceway/$link" ] \
        || fail "the installed README.md links to $link: /usr/share/doc/spliceway/$link is missing"
done <<<"$links"

step "bash completion loads"
completion=$(bash -c 'source /usr/share/bash-completion/bash_completion;
    source /usr/share/bash-completion/completions/spliceway; complete -p spliceway' 2>&1) \
    || fail "the bash completion does not load: $completion"
grep -q 'spliceway$' <<<"$completion" || fail "complete -p spliceway printed: $completion"
# bash-completion's own loader finds it too (by the command's name).
bash -c 'source /usr/share/bash-completion/bash_completion; _completion_loader spliceway; complete -p spliceway' \
    >/dev/null 2>&1 || fail "bash-completion's loader does not find the completion of spliceway"
zsh_file=/usr/share/zsh/vendor-completions/_spliceway
head -1 "$zsh_file" | grep -q '^#compdef spliceway' || fail "$zsh_file does not start with #compdef"
grep -q 'complete -c spliceway' /usr/share/fish/vendor_completions.d/spliceway.fish \
    || fail "the fish completion does not complete spliceway"

step "the service is enabled, the socket unit is not, nothing was started"
[ -L /etc/systemd/system/multi-user.target.wants/spliceway.service ] \
    || fail "spliceway.service is not enabled (no multi-user.target.wants link)"
[ ! -e /etc/systemd/system/sockets.target.wants/spliceway.socket ] \
    || fail "spliceway.socket was enabled on install"
# (By its path: other spliceway binaries, from target/, may be running tests.)
if pgrep -f '^/usr/bin/spliceway' >/dev/null; then
    fail "/usr/bin/spliceway runs after the install (pids $(pgrep -f '^/usr/bin/spliceway' | tr '\n' ' '))"
fi

step "apt-get remove: the conffile stays"
echo "# edited by test-packages.sh" >> /etc/spliceway/spliceway.toml
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q spliceway || fail "apt-get remove spliceway failed"
dpkg-query -W -f '${Status}\n' spliceway | grep -q "deinstall ok config-files" \
    || fail "after remove, dpkg says: $(dpkg-query -W -f '${Status}' spliceway)"
[ -f /etc/spliceway/spliceway.toml ] || fail "apt-get remove deleted /etc/spliceway/spliceway.toml"
grep -q "edited by test-packages.sh" /etc/spliceway/spliceway.toml \
    || fail "apt-get remove replaced the edited /etc/spliceway/spliceway.toml"
for f in "${deb_files[@]}"; do
    [ "$f" = /etc/spliceway/spliceway.toml ] && continue
    [ ! -e "$f" ] || fail "$f is still there after apt-get remove"
done

step "apt-get purge: nothing stays"
# A file the administrator added goes too: purge deletes /etc/spliceway.
echo "# added by test-packages.sh" > /etc/spliceway/local-notes.toml
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q spliceway || fail "apt-get purge spliceway failed"
if dpkg-query -W -f '${Status}\n' spliceway 2>/dev/null | grep -q "installed\|config-files"; then
    fail "after purge, dpkg says: $(dpkg-query -W -f '${Status}' spliceway)"
fi
[ ! -e /etc/spliceway ] || fail "/etc/spliceway is still there after purge: $(ls -la /etc/spliceway)"
for f in "${deb_files[@]}"; do
    [ ! -e "$f" ] || fail "$f is still there after purge"
done
left=$(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked -name 'spliceway*' 2>/dev/null || true)
[ -z "$left" ] || fail "systemd state left after purge: $left"

step "rpm -qlp: contents"
rpm_expected=$(printf '%s\n' \
    /etc/spliceway/spliceway.toml \
    /usr/bin/spliceway \
    /usr/lib/systemd/system/spliceway.service \
    /usr/lib/systemd/system/spliceway.socket \
    /usr/share/bash-completion/completions/spliceway \
    /usr/share/doc/spliceway/README.md \
    /usr/share/doc/spliceway/packaging/README.md \
    $(printf '/usr/share/doc/spliceway/%s\n' docs/*.md) \
    /usr/share/fish/vendor_completions.d/spliceway.fish \
    $(cd packaging/generated/man && printf '/usr/share/man/man1/%s\n' *.1.gz) \
    /usr/share/man/man5/spliceway.toml.5.gz \
    /usr/share/zsh/site-functions/_spliceway | sort)
rpm_got=$(rpm -qlp "$rpm_file" 2>/dev/null | sort)
[ "$rpm_got" = "$rpm_expected" ] \
    || fail "rpm -qlp $rpm_file:\n$rpm_got\nexpected:\n$rpm_expected"
rpm_version=$(rpm -qp --qf '%{NAME} %{VERSION}' "$rpm_file" 2>/dev/null)
[ "$rpm_version" = "spliceway $version" ] || fail "the RPM is '$rpm_version', expected 'spliceway $version'"

step "rpm -qp --configfiles and %config(noreplace)"
rpm -qp --configfiles "$rpm_file" 2>/dev/null | grep -qx /etc/spliceway/spliceway.toml \
    || fail "/etc/spliceway/spliceway.toml is not a config file of $rpm_file"
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm_file" 2>/dev/null \
    | awk '$1 == "/etc/spliceway/spliceway.toml" {print $2}')
[[ "$flags" == *c* && "$flags" == *n* ]] \
    || fail "/etc/spliceway/spliceway.toml has file flags '$flags', expected config and noreplace (cn)"

step "rpm -qp --scripts: the scripts of packaging/rpm"
scripts=$(rpm -qp --scripts "$rpm_file" 2>/dev/null)
for pair in "postinstall:post.sh" "preuninstall:preun.sh" "postuninstall:postun.sh"; do
    name=${pair%%:*}
    file=packaging/rpm/${pair#*:}
    # The scriptlet's text, from its header line to the next header.
    body=$(awk -v name="$name" '
        /^[a-z]+ scriptlet( \(using [^)]*\))?:$/ { on = ($1 == name); next }
        on { print }' <<<"$scripts")
    grep -q "^$name scriptlet (using /bin/sh):" <<<"$scripts" \
        || fail "the $name scriptlet does not run with /bin/sh:\n$scripts"
    [ -n "$body" ] || fail "$rpm_file has no $name scriptlet; rpm --scripts:\n$scripts"
    [ "$body" = "$(cat "$file")" ] || fail "the $name scriptlet differs from $file:\n$body"
done
grep -q 'systemctl --no-reload enable spliceway.service' <<<"$scripts" \
    || fail "the RPM does not enable spliceway.service"
# Nothing starts a unit (comments and the messages telling how to start it aside; try-restart
# restarts only a running relay, disable --now stops).
starts=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*echo ' <<<"$scripts" \
    | grep -E 'systemctl .*(start|--now)' | grep -v -e 'try-restart' -e 'disable --now' || true)
[ -z "$starts" ] || fail "an RPM scriptlet starts a unit: $starts"

step "the separate debug file of the RPM's binary"
[ -s target/generate-rpm/spliceway.debug ] || fail "target/generate-rpm/spliceway.debug is missing"
readelf -S target/generate-rpm/spliceway.debug | grep -q '\.debug_info' \
    || fail "target/generate-rpm/spliceway.debug has no .debug_info"

step "cargo install --path crates/spliceway-cli"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cargo install --quiet --locked --path crates/spliceway-cli --root "$root" \
    || fail "cargo install --path crates/spliceway-cli failed"
[ -x "$root/bin/spliceway" ] || fail "cargo install did not install bin/spliceway: $(ls -R "$root")"
got=$("$root/bin/spliceway" --version)
[ "$got" = "spliceway $version" ] || fail "the cargo-installed spliceway --version printed '$got'"

echo "== packages: every check passed"
