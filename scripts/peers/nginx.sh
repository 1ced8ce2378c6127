#!/bin/sh
# A peer relay for the benchmarks: nginx's stream module, one process (master_process off), one
# worker, no splice (nginx copies through its proxy buffer, 16 KiB by default), half-close passed
# on. It `exec`s nginx, so the caller's PID is nginx's own.
#
#   scripts/peers/nginx.sh LISTEN_ADDR UPSTREAM_ADDR
#
# NGINX_UPLOAD_RATE=BYTES sets proxy_upload_rate (bytes a second the client -> upstream direction
# of each connection may read; default 0, no limit): the peer of docs/rate-limits.md.
#
# Its configuration and pid file go to a new directory in $PEER_DIR (default: $TMPDIR or /tmp);
# the caller removes that directory when it is done.
set -e
dir=$(mktemp -d "${PEER_DIR:-${TMPDIR:-/tmp}}/nginx.XXXXXX")
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
        proxy_upload_rate ${NGINX_UPLOAD_RATE:-0};
    }
}
CFG
exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
