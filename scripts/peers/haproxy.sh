#!/bin/sh
# A peer relay for the benchmarks: haproxy in TCP mode with `option splice-auto`, in the
# foreground (-db), from a configuration written here. It `exec`s haproxy, so the caller's PID is
# haproxy's own and the benchmark measures and stops haproxy itself.
#
#   scripts/peers/haproxy.sh LISTEN_ADDR UPSTREAM_ADDR [NBTHREAD]
#
# The configuration goes to a new file in $PEER_DIR (default: $TMPDIR or /tmp); the caller
# removes that directory when it is done.
set -e
cfg=$(mktemp "${PEER_DIR:-${TMPDIR:-/tmp}}/haproxy.XXXXXX")
cat >"$cfg" <<CFG
global
    nbthread ${3:-1}
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
