#!/bin/sh
# A peer relay for the UDP benchmark (`spliceway bench --workload udp`): nginx's stream module
# with `listen ... udp`, one process (master_process off), one worker. It `exec`s nginx, so the
# caller's PID is nginx's own.
#
#   scripts/peers/nginx-udp.sh LISTEN_ADDR UPSTREAM_ADDR
#
# Its configuration and pid file go to a new directory in $PEER_DIR (default: $TMPDIR or /tmp).
set -e
dir=$(mktemp -d "${PEER_DIR:-${TMPDIR:-/tmp}}/nginx-udp.XXXXXX")
cat >"$dir/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
stream {
    server {
        listen $1 udp;
        proxy_pass $2;
        proxy_timeout 60s;
    }
}
CFG
exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
