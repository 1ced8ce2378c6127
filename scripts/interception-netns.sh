#!/usr/bin/env bash
# The interception tests' topology (crates/spliceway/tests/interception), by hand: a client
# namespace, a relay namespace with the nftables rules of docs/operations.md ("Relaying without
# touching the clients"), and two server namespaces. Needs root, iproute2 and nftables.
#
#   client ns            relay ns                          server A ns / server B ns
#   c0 10.88.1.1 ---- r0 10.88.1.2     r1 10.88.2.1 ---- a0 10.88.2.2
#      fd88:1::1         fd88:1::2        fd88:2::1         fd88:2::2
#                                      r2 10.88.3.1 ---- b0 10.88.3.2, 10.88.3.3
#                                         fd88:3::1         fd88:3::2, fd88:3::3
#
# The client's default route is the relay, as an office's (or a VPC's) route for the S3 prefix
# list points at the relay instance; the servers route back through it. Nothing else exists:
# 169.254.169.254 is no one's address, so a connection to it could only be seen leaving the
# relay (the `metadata` counter below).
#
# Rules in the relay namespace (table inet spliceway):
#   - REDIRECT: TCP from the client side to ports 7001, 7002 -> the relay's port 15001, and
#     7004 -> 15003 (the relay reads the original destination with SO_ORIGINAL_DST);
#   - TPROXY: TCP to port 7003 -> a transparent listener on 15002, marked 1; the mark routes
#     to the local table (the destination is the accepted socket's own address);
#   - packets of the relay's transparent sockets (source = "client": bound to the client's
#     address) are marked 1 too, so that the servers' answers to the client's address are
#     delivered to the relay instead of being forwarded to the client;
#   - the `metadata` counter counts packets the relay sends to 169.254.0.0/16.
#
#   scripts/interception-netns.sh up   [NAME]   # create NAME-c, NAME-r, NAME-a, NAME-b
#   scripts/interception-netns.sh down [NAME]   # delete them (and the links with them)
#   scripts/interception-netns.sh rules         # print the nftables rules
#
# NAME defaults to swi-manual (tests use swi<pid>n<seq>, and delete theirs when they end).
set -euo pipefail

command="${1:-}"
name="${2:-swi-manual}"
c="$name-c" r="$name-r" a="$name-a" b="$name-b"

rules() {
    cat <<'EOF'
table inet spliceway {
    counter metadata { }

    chain prerouting_nat {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "r0" tcp dport { 7001, 7002 } redirect to :15001
        iifname "r0" tcp dport 7004 redirect to :15003
    }

    chain prerouting_mangle {
        type filter hook prerouting priority mangle; policy accept;
        # Answers to the relay's transparent sockets (source = "client") stay here.
        meta l4proto tcp socket transparent 1 meta mark set 1 accept
        iifname "r0" meta nfproto ipv4 tcp dport 7003 tproxy ip to :15002 meta mark set 1 accept
        iifname "r0" meta nfproto ipv6 tcp dport 7003 tproxy ip6 to :15002 meta mark set 1 accept
    }

    chain output {
        type filter hook output priority filter; policy accept;
        ip daddr 169.254.0.0/16 counter name metadata
    }
}
EOF
}

case "$command" in
up)
    for ns in "$c" "$r" "$a" "$b"; do ip netns add "$ns"; done
    trap 'for ns in "$c" "$r" "$a" "$b"; do ip netns delete "$ns" 2>/dev/null || true; done' ERR
    # No duplicate address detection, set before the links exist: an interface takes the
    # `default` value when it is created. Otherwise each link-local address stays tentative
    # for a second or more after the link comes up, neighbour discovery cannot send from it,
    # and the first IPv6 packets through the relay wait (a connect can outlast its timeout).
    for ns in "$c" "$r" "$a" "$b"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
        ip -n "$ns" link set lo up
    done
    ip -n "$c" link add c0 type veth peer name r0 netns "$r"
    ip -n "$r" link add r1 type veth peer name a0 netns "$a"
    ip -n "$r" link add r2 type veth peer name b0 netns "$b"
    ip -n "$c" addr add 10.88.1.1/24 dev c0
    ip -n "$c" addr add fd88:1::1/64 dev c0 nodad
    ip -n "$r" addr add 10.88.1.2/24 dev r0
    ip -n "$r" addr add fd88:1::2/64 dev r0 nodad
    ip -n "$r" addr add 10.88.2.1/24 dev r1
    ip -n "$r" addr add fd88:2::1/64 dev r1 nodad
    ip -n "$r" addr add 10.88.3.1/24 dev r2
    ip -n "$r" addr add fd88:3::1/64 dev r2 nodad
    ip -n "$a" addr add 10.88.2.2/24 dev a0
    ip -n "$a" addr add fd88:2::2/64 dev a0 nodad
    ip -n "$b" addr add 10.88.3.2/24 dev b0
    ip -n "$b" addr add 10.88.3.3/24 dev b0
    ip -n "$b" addr add fd88:3::2/64 dev b0 nodad
    ip -n "$b" addr add fd88:3::3/64 dev b0 nodad
    for dev in "$c c0" "$r r0" "$r r1" "$r r2" "$a a0" "$b b0"; do
        set -- $dev
        ip -n "$1" link set "$2" up
    done
    ip -n "$c" route add default via 10.88.1.2
    ip -n "$c" -6 route add default via fd88:1::2
    ip -n "$a" route add default via 10.88.2.1
    ip -n "$a" -6 route add default via fd88:2::1
    ip -n "$b" route add default via 10.88.3.1
    ip -n "$b" -6 route add default via fd88:3::1
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    # Marked packets (TPROXY, and answers to transparent sockets) are delivered locally.
    ip -n "$r" rule add fwmark 1 lookup 100
    ip -n "$r" route add local 0.0.0.0/0 dev lo table 100
    # 10.88.2.99: inside the servers' range, a neighbour nobody answers for: SYNs vanish (timeouts).
    ip -n "$r" neigh add 10.88.2.99 lladdr 02:00:00:00:00:99 dev r1
    ip -n "$r" -6 rule add fwmark 1 lookup 100
    ip -n "$r" -6 route add local ::/0 dev lo table 100
    rules | ip netns exec "$r" nft -f -
    # Ready when every link has its carrier and no address is tentative (bounded at 5 s).
    for _ in $(seq 50); do
        waiting=""
        for ns in "$c" "$r" "$a" "$b"; do
            waiting+="$(ip -n "$ns" link show | grep NO-CARRIER || true)"
            waiting+="$(ip -n "$ns" -6 addr show tentative)"
        done
        [ -z "$waiting" ] && break
        sleep 0.1
    done
    if [ -n "$waiting" ]; then
        echo "interception-netns.sh: links not ready after 5 s: $waiting" >&2
        exit 1
    fi
    ;;
down)
    for ns in "$c" "$r" "$a" "$b"; do ip netns delete "$ns" 2>/dev/null || true; done
    ;;
rules)
    rules
    ;;
*)
    sed -n '2,31p' "$0"
    exit 2
    ;;
esac
