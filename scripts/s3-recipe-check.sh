#!/usr/bin/env bash
# The S3 recipe of docs/operations.md, end to end, with today's AWS CLI (issue 25).
#
# Three network namespaces on this machine, nothing leaves it:
#
#   office ns (the client, aws CLI)      relay ns (spliceway run -v)       s3 ns (the stand-in)
#   o0 10.77.1.2 ------------------------ r0 10.77.1.1
#                                         r1 10.77.2.1 ------------------- s0 10.77.2.2
#   o1 10.77.3.2 ----------------------------------(the "internet")------- s1 10.77.3.1
#
# The S3 stand-in is moto's S3 server over TLS (moto_server -c/-k) with a certificate from a
# throw-away test CA for s3.ap-northeast-1.amazonaws.com, *.s3.ap-northeast-1.amazonaws.com
# and the legacy s3-ap-northeast-1.amazonaws.com (and its wildcard), as the real one has. Each
# namespace gets its own /etc/hosts through /etc/netns/NAME/ (ip netns exec bind-mounts it);
# resolv.conf points at 127.0.0.1 inside the namespace, where nothing answers, so a name not in
# that hosts file fails to resolve at once and no query leaves the machine. In the relay ns the
# S3 names resolve to 10.77.2.2 (the real S3, seen from the VPC); in the office ns, per variant:
#
#   legacy   the old recipe: only s3-ap-northeast-1.amazonaws.com -> the relay; the names today's
#            CLI uses resolve "publicly", to the stand-in over the o1/s1 link. Expected: every
#            command works and the relay logs NOTHING (the blocker of issue 25); only the old
#            per-command --endpoint-url https://s3-ap-northeast-1.amazonaws.com reaches it.
#   config   ~/.aws/config: a `services` section with s3 endpoint_url =
#            https://s3.ap-northeast-1.amazonaws.com, addressing_style = path; hosts: that one
#            name -> the relay. Expected: every request through the relay.
#   env      AWS_ENDPOINT_URL_S3=https://s3.ap-northeast-1.amazonaws.com alone (no config file,
#            no addressing_style: botocore goes path style by itself when an endpoint is set).
#   zone     no client setting at all, default (virtual-hosted) addressing; the office resolves
#            s3.ap-northeast-1.amazonaws.com and *.s3.ap-northeast-1.amazonaws.com to the relay.
#            A hosts file has no wildcards, so the "zone" is emulated by listing the test
#            bucket's virtual-hosted name; a real deployment needs a DNS zone. The relay runs the
#            SNI route of the recipe (admits those names, refuses others: checked with a
#            ClientHello for www.example.com).
#
# For each of config, env and zone: aws s3 mb, aws s3 cp up (20 MiB: a multipart upload in 8 MiB
# parts), aws s3 ls and aws s3 ls s3://BUCKET, aws s3 cp down, SHA-256 before and after, and
# the number of connections the relay logged for each command (lines of `spliceway run -v`).
#
# Documented in docs/operations.md, "Checked end to end".
#
# Usage (root; an explicit command, not part of `cargo test`: it needs pip packages):
#   pip install 'moto[server]' awscli     # the current v1 CLI on current botocore
#   cargo build -p spliceway-cli           # or --release; SPLICEWAY=/path/to/spliceway
#   sudo scripts/s3-recipe-check.sh        # exit 0: every expectation held, 1: one failed
#
# Environment: SPLICEWAY (binary; default target/release/spliceway if built — mind a stale one —
# else target/debug/spliceway),
# PYTHON (the interpreter with moto and awscli; default python3), S3RC_KEEP=1 keeps the work
# directory (logs, certificates) for reading. Runs in about a minute; every wait is bounded.
# Namespaces, /etc/netns/ entries and processes it started are removed on any exit.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
region="ap-northeast-1"
name="s3.$region.amazonaws.com"        # what current SDKs use for bucket-less calls
legacy="s3-$region.amazonaws.com"      # what the original recipe mapped
size_mib=20

die() { echo "s3-recipe-check: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for cmd in ip openssl sha256sum ss timeout; do
    command -v "$cmd" >/dev/null || die "needs $cmd"
done
python="$(command -v "$python")" || die "no $python"
"$python" -c 'import moto.server, awscli, botocore' 2>/dev/null ||
    die "needs moto[server] and awscli for $python: pip install 'moto[server]' awscli"
spliceway="${SPLICEWAY:-}"
if [ -z "$spliceway" ]; then
    for candidate in "$here/target/release/spliceway" "$here/target/debug/spliceway"; do
        if [ -x "$candidate" ]; then spliceway="$candidate"; break; fi
    done
fi
[ -n "$spliceway" ] && [ -x "$spliceway" ] || die "no spliceway binary: cargo build -p spliceway-cli"

# Unique names: other namespaces on this machine (tests, other scripts) are never touched.
tag="s3rc$$"
office="$tag-office" relay="$tag-relay" s3="$tag-s3"
work="$(mktemp -d /tmp/s3-recipe-check.XXXXXX)"
pids=()
created=()

cleanup() {
    local status=$?
    set +e
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    for ns in "${created[@]}"; do
        ip netns delete "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    if [ "${S3RC_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }

# --- A test CA and the stand-in's certificate ----------------------------------------------
(
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem \
        -subj "/CN=spliceway s3-recipe-check test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout s3.key -out s3.csr -subj "/CN=$name" 2>/dev/null
    cat >s3.ext <<EOF
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:$name, DNS:*.$name, DNS:$legacy, DNS:*.$legacy
EOF
    openssl x509 -req -in s3.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile s3.ext -out s3.pem 2>/dev/null
)

# --- Namespaces and links ------------------------------------------------------------------
for ns in "$office" "$relay" "$s3"; do
    ip netns add "$ns"
    created+=("$ns")
    ip -n "$ns" link set lo up
    mkdir -p "/etc/netns/$ns"
    echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"
    printf '127.0.0.1 localhost\n' >"/etc/netns/$ns/hosts"
done
ip -n "$office" link add o0 type veth peer name r0 netns "$relay"
ip -n "$relay" link add r1 type veth peer name s0 netns "$s3"
ip -n "$office" link add o1 type veth peer name s1 netns "$s3"
ip -n "$office" addr add 10.77.1.2/24 dev o0
ip -n "$relay" addr add 10.77.1.1/24 dev r0
ip -n "$relay" addr add 10.77.2.1/24 dev r1
ip -n "$s3" addr add 10.77.2.2/24 dev s0
ip -n "$office" addr add 10.77.3.2/24 dev o1
ip -n "$s3" addr add 10.77.3.1/24 dev s1
ip -n "$office" link set o0 up
ip -n "$office" link set o1 up
ip -n "$relay" link set r0 up
ip -n "$relay" link set r1 up
ip -n "$s3" link set s0 up
ip -n "$s3" link set s1 up

# wait_listen NS PORT: bounded wait (10 s) for a listening TCP socket, without connecting.
wait_listen() {
    for _ in $(seq 100); do
        if [ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2")" ]; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- The S3 stand-in -----------------------------------------------------------------------
ip netns exec "$s3" "$python" -m moto.server -H 0.0.0.0 -p 443 \
    -c "$work/s3.pem" -k "$work/s3.key" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_listen "$s3" 443 || { cat "$work/moto.log"; die "the S3 stand-in did not start"; }

# The relay's view: every S3 name (and the test buckets' names, for the SNI route's per-name
# connections) resolves to the stand-in, as the real S3 names resolve to S3 from the VPC.
{
    echo "127.0.0.1 localhost"
    for host in "$name" "$legacy" s3rc-legacy.$name s3rc-config.$name s3rc-env.$name \
        s3rc-zone.$name; do
        echo "10.77.2.2 $host"
    done
} >"/etc/netns/$relay/hosts"

# --- The relay -----------------------------------------------------------------------------
cat >"$work/fixed.toml" <<EOF
# Recipe, variants "endpoint setting" (and the legacy one): one fixed route.
[[route]]
name = "s3"
listen = ["10.77.1.1:443"]
upstream = "$name:443"
allow = ["10.77.1.0/24"]
EOF
cat >"$work/sni.toml" <<EOF
# Recipe, variant "DNS zone": admit the regional name and every bucket name, refuse the rest.
[[route]]
name = "s3"
listen = ["10.77.1.1:443"]
allow = ["10.77.1.0/24"]

[[route.sni]]
match = "$name"

[[route.sni]]
match = "*.$name"
EOF

relay_pid=""
relay_log=""
start_relay() { # CONFIG LOG
    stop_relay
    ip netns exec "$relay" "$spliceway" check --config "$1" >"$work/check.out" 2>&1 ||
        { cat "$work/check.out"; die "spliceway check refused $1"; }
    relay_log="$2"
    ip netns exec "$relay" "$spliceway" run -v --config "$1" >"$relay_log" 2>&1 &
    relay_pid=$!
    pids+=("$relay_pid")
    wait_listen "$relay" 443 || { cat "$relay_log"; die "the relay did not start"; }
}
stop_relay() {
    if [ -n "$relay_pid" ]; then
        kill "$relay_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
        relay_pid=""
    fi
}
# Lines the relay logs per connection at -v: one `closed id=N` when it ends. Counted after a
# command, the connections the CLI pooled are closed once it exits.
relayed() { grep -c ' closed id=' "$relay_log" || true; }
# Requests the stand-in served (its access log names the peer): through the relay the peer is
# the relay's 10.77.2.1, directly from the office it is 10.77.3.2. A second witness, independent
# of the relay's own log.
served_from() { grep -c "^$1 " "$work/moto.log" || true; }

# --- The client ----------------------------------------------------------------------------
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/upload.bin"
want="$(sha256sum <"$work/upload.bin" | cut -d' ' -f1)"
mkdir -p "$work/home"

office_hosts() { # LINES...
    { echo "127.0.0.1 localhost"; printf '%s\n' "$@"; } >"/etc/netns/$office/hosts"
}
# aws ARGS...: the CLI in the office ns with a clean environment (no ~/.aws of this machine,
# dummy credentials, the test CA), extra variables from $aws_env.
aws_env=()
aws() {
    ip netns exec "$office" env -i PATH="$PATH" HOME="$work/home" \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
        AWS_DEFAULT_REGION="$region" AWS_CA_BUNDLE="$work/ca.pem" \
        AWS_CONFIG_FILE="$work/home/config" AWS_SHARED_CREDENTIALS_FILE="$work/home/none" \
        AWS_EC2_METADATA_DISABLED=true AWS_MAX_ATTEMPTS=2 \
        "${aws_env[@]}" timeout 120 "$python" -m awscli \
        --cli-connect-timeout 5 --cli-read-timeout 60 "$@"
}
# step WHAT ARGS...: run one CLI command, print it and how many connections the relay logged.
step() {
    local before after out
    before="$(relayed)"
    if out="$(aws "$@" 2>&1)"; then
        sleep 0.3
        after="$(relayed)"
        ok "aws $* -> relayed $((after - before)) connection(s)"
        last_relayed=$((after - before))
        return 0
    fi
    echo "$out" | tail -n 3 | sed 's/^/      /'
    fail "aws $*"
    last_relayed=0
    return 1
}

# run_variant NAME BUCKET EXPECT: the recipe's commands; EXPECT is "relay" (every command must
# show connections in the relay's log) or "bypass" (none may).
run_variant() {
    local variant="$1" bucket="$2" expect="$3" total=0 got via_relay direct
    via_relay="$(served_from 10.77.2.1)" direct="$(served_from 10.77.3.2)"
    echo
    echo "== variant $variant (bucket $bucket, expect: $expect)"
    rm -f "$work/download.bin"
    for args in "s3 mb s3://$bucket" "s3 cp $work/upload.bin s3://$bucket/upload.bin" \
        "s3 ls" "s3 ls s3://$bucket" "s3 cp s3://$bucket/upload.bin $work/download.bin"; do
        # shellcheck disable=SC2086  # the words of $args are the command's arguments
        step $args || continue
        total=$((total + last_relayed))
        if [ "$expect" = relay ] && [ "$last_relayed" -eq 0 ]; then
            fail "$variant: aws $args did not go through the relay"
        elif [ "$expect" = bypass ] && [ "$last_relayed" -ne 0 ]; then
            fail "$variant: aws $args went through the relay"
        fi
    done
    got="$(sha256sum <"$work/download.bin" 2>/dev/null | cut -d' ' -f1 || true)"
    if [ "$got" = "$want" ]; then
        ok "$variant: SHA-256 after the round trip matches ($want)"
    else
        fail "$variant: SHA-256 differs (up $want, down ${got:-none})"
    fi
    via_relay=$(($(served_from 10.77.2.1) - via_relay)) direct=$(($(served_from 10.77.3.2) - direct))
    echo "   $variant: $total connection(s) in the relay's log; the stand-in served" \
        "$via_relay request(s) from the relay, $direct directly from the office"
    if [ "$expect" = relay ] && [ "$direct" -ne 0 ]; then
        fail "$variant: $direct request(s) reached the stand-in without the relay"
    elif [ "$expect" = bypass ] && [ "$via_relay" -ne 0 ]; then
        fail "$variant: $via_relay request(s) came through the relay"
    fi
}

echo "spliceway: $spliceway"
echo "aws CLI:   $(aws --version 2>&1)"
echo "namespaces: $office $relay $s3; work directory: $work"

# legacy: the old recipe's hosts line; the current names resolve publicly (to the stand-in
# over the "internet" link), as they do on a real network.
start_relay "$work/fixed.toml" "$work/relay-legacy.log"
rm -f "$work/home/config"
aws_env=()
office_hosts "10.77.1.1 $legacy" "10.77.3.1 $name" "10.77.3.1 s3rc-legacy.$name"
run_variant legacy s3rc-legacy bypass
step s3 ls "s3://s3rc-legacy" --endpoint-url "https://$legacy" &&
    { [ "$last_relayed" -gt 0 ] || fail "legacy: --endpoint-url did not go through the relay"; }

# config: the services section of ~/.aws/config; one hosts line.
start_relay "$work/fixed.toml" "$work/relay-config.log"
cat >"$work/home/config" <<EOF
[default]
region = $region
services = via-relay
s3 =
  addressing_style = path

[services via-relay]
s3 =
  endpoint_url = https://$name
EOF
office_hosts "10.77.1.1 $name"
run_variant config s3rc-config relay

# env: AWS_ENDPOINT_URL_S3 alone.
start_relay "$work/fixed.toml" "$work/relay-env.log"
rm -f "$work/home/config"
aws_env=(AWS_ENDPOINT_URL_S3="https://$name")
office_hosts "10.77.1.1 $name"
run_variant env s3rc-env relay

# zone: no client setting; the names resolve to the relay; the relay routes by SNI.
start_relay "$work/sni.toml" "$work/relay-zone.log"
aws_env=()
office_hosts "10.77.1.1 $name" "10.77.1.1 s3rc-zone.$name"
run_variant zone s3rc-zone relay
# A name outside the route's list is refused: the relay reads the ClientHello and closes.
echo | ip netns exec "$office" timeout 10 openssl s_client -connect 10.77.1.1:443 \
    -servername www.example.com -CAfile "$work/ca.pem" >"$work/refused.out" 2>&1 || true
sleep 0.3
if grep -q 'refused by SNI routing: server name "www.example.com"' "$relay_log" &&
    ! grep -q 'Server certificate' "$work/refused.out"; then
    ok "zone: a ClientHello for www.example.com was refused by the relay"
else
    fail "zone: a ClientHello for www.example.com was not refused"
fi
stop_relay

echo
for variant in legacy config env zone; do
    echo "-- relay log, variant $variant (first connections):"
    { grep ' INFO closed id=' "$work/relay-$variant.log" | head -n 3
        grep ' refused: ' "$work/relay-$variant.log" || true; } | sed 's/^/   /'
done
echo
if [ "$failures" -eq 0 ]; then
    echo "s3-recipe-check: all expectations held"
else
    echo "s3-recipe-check: $failures expectation(s) failed"
    exit 1
fi
