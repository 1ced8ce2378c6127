#!/usr/bin/env bash
# The fault tests' topology, by hand: three network namespaces joined by veth links, to
# reproduce a fault with the spliceway binary (see docs/reliability.md). Needs root.
#
#   client ns                 relay ns                        server ns
#   c0 10.77.1.1 ---- r0 10.77.1.2      r1 10.77.2.1 ---- s0 10.77.2.2
#                                        10.77.2.99: a neighbour that never answers (black hole)
#
#   scripts/netns-topology.sh up   [NAME]        # create NAME-client, NAME-relay, NAME-server
#   scripts/netns-topology.sh down [NAME]        # delete them (and the links with them)
#   scripts/netns-topology.sh cut  [NAME]        # take the server's end of its link down
#   scripts/netns-topology.sh heal [NAME]        # bring it back up
#   scripts/netns-topology.sh shape [NAME] RATE  # tbf on the relay -> client link, e.g. 8mbit
#                                                # (116mbit: the home uplink; 1gbit: Direct Connect)
#   scripts/netns-topology.sh ec2nic [NAME]      # offloads as an EC2 NIC (bench --nic ec2): GRO on,
#                                                # TSO off at client and server (MTU frames), needs ethtool
#   ip netns exec NAME-relay spliceway relay --idle-timeout 1s 10.77.1.2:8080 10.77.2.2:7000
#
# NAME defaults to swf-manual (tests use swf<pid>n<seq>, and delete theirs when they end).
set -euo pipefail

command="${1:-}"
name="${2:-swf-manual}"
c="$name-client" r="$name-relay" s="$name-server"

case "$command" in
up)
    for ns in "$c" "$r" "$s"; do ip netns add "$ns"; done
    trap 'for ns in "$c" "$r" "$s"; do ip netns delete "$ns" 2>/dev/null || true; done' ERR
    ip -n "$c" link add c0 type veth peer name r0 netns "$r"
    ip -n "$r" link add r1 type veth peer name s0 netns "$s"
    ip -n "$c" addr add 10.77.1.1/24 dev c0
    ip -n "$r" addr add 10.77.1.2/24 dev r0
    ip -n "$r" addr add 10.77.2.1/24 dev r1
    ip -n "$s" addr add 10.77.2.2/24 dev s0
    for ns in "$c" "$r" "$s"; do ip -n "$ns" link set lo up; done
    ip -n "$c" link set c0 up
    ip -n "$r" link set r0 up
    ip -n "$r" link set r1 up
    ip -n "$s" link set s0 up
    # Frames for this MAC reach the server ns and are dropped there: SYNs vanish silently.
    ip -n "$r" neigh add 10.77.2.99 lladdr 02:00:00:00:00:99 dev r1 nud permanent
    echo "up: $c $r $s"
    ;;
down)
    for ns in "$c" "$r" "$s"; do ip netns delete "$ns" 2>/dev/null || true; done
    ;;
cut) ip -n "$s" link set s0 down ;;
heal) ip -n "$s" link set s0 up ;;
shape)
    rate="${3:?shape needs a rate, e.g. 8mbit}"
    tc -n "$r" qdisc replace dev r0 root tbf rate "$rate" burst 32kb latency 50ms
    ;;
ec2nic)
    ip netns exec "$c" ethtool -K c0 gro on tso off gso on
    ip netns exec "$s" ethtool -K s0 gro on tso off gso on
    for dev in r0 r1; do ip netns exec "$r" ethtool -K "$dev" gro on tso on gso on; done
    ;;
*)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
