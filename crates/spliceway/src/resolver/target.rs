//! What a lookup yields, and the keys lookups and clients are counted under.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::address::client_key as address_key;
use std::sync::Arc;

/// Cache key: which lookup (see `Resolution::id`), host, port.
pub(super) type Key = (usize, String, u16);

/// One resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// Whether the address belongs to this host (loopback, or bindable here).
    pub(crate) local: bool,
}

/// Where a lookup's result goes: called once, on a resolver thread, with the addresses or the
/// error text — unless the request's [`Ticket`] was dropped first.
pub(crate) type Answer = Box<dyn FnOnce(Result<Arc<[Target]>, String>) + Send>;

/// Whether `ip` is an address of this host: loopback, unspecified, or assigned to one of its
/// interfaces (`getifaddrs`).
///
/// Not "whether it can be bound": on hosts with `net.ipv4.ip_nonlocal_bind = 1` (common on
/// keepalived and VIP hosts) any address binds, and a bind test took every upstream for the
/// relay's own listener (hostile testing, docs/reliability.md).
pub(crate) fn is_local(ip: IpAddr) -> bool {
    HostAddresses::read().contains(ip)
}

/// The addresses of this host's interfaces, read once (a netlink dump) for a whole answer.
enum HostAddresses {
    Listed(Vec<IpAddr>),
    /// `getifaddrs` failed: ask the kernel whether it would bind each address (wrong only
    /// under ip_nonlocal_bind).
    Unknown,
}

impl HostAddresses {
    fn read() -> HostAddresses {
        match nix::ifaddrs::getifaddrs() {
            Ok(interfaces) => HostAddresses::Listed(
                interfaces
                    .filter_map(|interface| interface.address)
                    .filter_map(|address| {
                        address
                            .as_sockaddr_in()
                            .map(|a| IpAddr::V4(a.ip()))
                            .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
                    })
                    .collect(),
            ),
            Err(_) => HostAddresses::Unknown,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        match self {
            HostAddresses::Listed(addresses) => addresses.contains(&ip),
            HostAddresses::Unknown => UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok(),
        }
    }
}

/// Whom a connection's lookups count as for [`MAX_PENDING_LOOKUPS_PER_CLIENT`]: the TCP peer
/// it came from and the client address it claims (the same, unless a trusted load balancer's
/// PROXY header gave another). Keyed on both, a peer that claims to be someone else counts
/// apart from that someone's real connections, so it cannot lock them out.
pub(super) type ClientKey = (IpAddr, IpAddr);

/// The [`ClientKey`] of a connection from `peer` that claims to be `claimed`.
pub(super) fn client_key(peer: IpAddr, claimed: IpAddr) -> ClientKey {
    (address_key(peer), address_key(claimed))
}

/// An answer's addresses, deduplicated, each marked local or not.
pub(super) fn to_targets(addrs: Vec<SocketAddr>) -> Arc<[Target]> {
    let host = HostAddresses::read();
    let mut seen = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !seen.iter().any(|t: &Target| t.addr == addr) {
            seen.push(Target {
                addr,
                local: host.contains(addr.ip()),
            });
        }
    }
    seen.into()
}
