//! Checks that only the whole file shows: listeners the kernel cannot bind together, `metrics`
//! on a listener's port, and routes that relay (by IP literal) back into the relay, alone or in
//! a ring. Pure functions over what was read; `validate.rs` turns a finding into a located
//! error.

use std::net::SocketAddr;
use std::ops::Range;

use spliceway::check::reached_listener;

/// A listen address as read, with the route it belongs to (its index).
pub(super) struct Listener {
    pub(super) addr: SocketAddr,
    pub(super) route: usize,
    /// A UDP route's: another socket than a TCP listener on the same address.
    pub(super) udp: bool,
}

/// An IP-literal upstream as read (a fixed one or an SNI entry's), with its key and place.
pub(super) struct LiteralUpstream {
    pub(super) addr: SocketAddr,
    pub(super) route: usize,
    pub(super) key: &'static str,
    pub(super) span: Range<usize>,
}

/// What the routes read so far listen on and relay to, for the checks across routes.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) names: Vec<String>,
    pub(super) listeners: Vec<Listener>,
    pub(super) upstreams: Vec<LiteralUpstream>,
}

/// Whether the kernel refuses to bind `b` while `a` listens (both with `SO_REUSEADDR`; the
/// relay's IPv6 listeners are IPv6-only): the same port and family, and the same address or a
/// wildcard on either side.
pub(super) fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a == b || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Whether the metrics endpoint at `metrics` cannot bind next to a relay listener at
/// `listener`. The metrics server's socket is not IPv6-only, so `[::]:P` there also takes
/// the IPv4 port P.
pub(super) fn metrics_overlap(metrics: SocketAddr, listener: SocketAddr) -> bool {
    listeners_overlap(metrics, listener)
        || (metrics.port() == listener.port()
            && metrics.port() != 0
            && metrics.is_ipv6()
            && metrics.ip().is_unspecified()
            && listener.is_ipv4())
}

/// Routes relaying in a ring (or one route to its own listener): where to point the error.
pub(super) struct Ring<'a> {
    /// The route whose upstream starts the ring.
    pub(super) route: &'a str,
    /// Its key (`upstream` or `sni.upstream`).
    pub(super) key: &'static str,
    /// The upstream's place in the file.
    pub(super) span: Range<usize>,
    /// What is wrong, in words for the user.
    pub(super) message: String,
}

/// Routes that relay, by IP literal, to their own listener or round a ring of routes
/// back to themselves: one client connection would grow into connections through the
/// relay until descriptors run out. Refused at the upstream of the ring's first route in
/// the file.
pub(super) fn ring(seen: &Seen) -> Option<Ring<'_>> {
    let routes = seen.names.len();
    // edges[r]: (route reached, the upstream that reaches it, the listener reached).
    let mut edges: Vec<Vec<(usize, &LiteralUpstream, SocketAddr)>> = vec![Vec::new(); routes];
    for upstream in &seen.upstreams {
        for target in 0..routes {
            let listen: Vec<SocketAddr> = seen
                .listeners
                .iter()
                .filter(|l| l.route == target && l.addr.port() != 0 && !l.udp)
                .map(|l| l.addr)
                .collect();
            if let Some(reached) = reached_listener(&listen, upstream.addr)
                && !edges[upstream.route].iter().any(|(t, _, _)| *t == target)
            {
                edges[upstream.route].push((target, upstream, reached));
            }
        }
    }
    let ring = find_cycle(routes, |r| edges[r].iter().map(|e| e.0).collect())?;
    let first = ring[0];
    let next = ring.get(1).copied().unwrap_or(first);
    let (_, upstream, reached) = edges[first]
        .iter()
        .find(|e| e.0 == next)
        .expect("the ring follows edges");
    let name = &seen.names[first];
    let message = if ring.len() == 1 {
        format!(
            "{} reaches this route's own listener {reached}: every connection would loop \
             back into the relay",
            upstream.addr
        )
    } else {
        let path: Vec<String> = ring
            .iter()
            .chain(std::iter::once(&first))
            .map(|&r| format!("{:?}", seen.names[r]))
            .collect();
        format!(
            "{} reaches the listener {reached} of route {:?}, and the routes relay in a \
             ring ({}): every connection would loop through the relay until it runs out of \
             descriptors",
            upstream.addr,
            seen.names[next],
            path.join(" -> ")
        )
    };
    Some(Ring {
        route: name,
        key: upstream.key,
        span: upstream.span.clone(),
        message,
    })
}

/// A cycle in the graph of `nodes` nodes whose edges `next` gives, as the nodes in order,
/// starting from the lowest-numbered one on it (a self-edge is a cycle of one).
fn find_cycle(nodes: usize, next: impl Fn(usize) -> Vec<usize>) -> Option<Vec<usize>> {
    // 0: not visited, 1: on the current path, 2: done.
    let mut state = vec![0u8; nodes];
    let mut path = Vec::new();
    fn visit(
        node: usize,
        next: &dyn Fn(usize) -> Vec<usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[node] = 1;
        path.push(node);
        for to in next(node) {
            match state[to] {
                1 => {
                    let start = path.iter().position(|&n| n == to).expect("on the path");
                    let mut ring = path[start..].to_vec();
                    let lowest = (0..ring.len()).min_by_key(|&i| ring[i]).unwrap_or(0);
                    ring.rotate_left(lowest);
                    return Some(ring);
                }
                0 => {
                    if let Some(ring) = visit(to, next, state, path) {
                        return Some(ring);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state[node] = 2;
        None
    }
    (0..nodes).find_map(|start| {
        if state[start] == 0 {
            visit(start, &next, &mut state, &mut path)
        } else {
            None
        }
    })
}
