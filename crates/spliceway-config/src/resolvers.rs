//! How routes resolve upstream names ([`ResolverChoice`]), and the DNS resolvers built for them,
//! kept across reloads ([`Resolvers`]).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use spliceway::Resolution;

/// How a route resolves upstream host names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ResolverChoice {
    /// `getaddrinfo`: `/etc/hosts`, then DNS as nsswitch says (the default).
    #[default]
    System,
    /// Ask DNS servers directly, bypassing `/etc/hosts`, honouring record TTLs: the given
    /// servers, or those of `/etc/resolv.conf` when the list is empty (`resolver = "dns"`).
    Dns {
        /// `ip:port` of each server; empty for `/etc/resolv.conf`.
        servers: Vec<SocketAddr>,
    },
}

impl fmt::Display for ResolverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolverChoice::System => f.write_str("system"),
            ResolverChoice::Dns { servers } if servers.is_empty() => {
                f.write_str("dns (servers of /etc/resolv.conf, /etc/hosts ignored)")
            }
            ResolverChoice::Dns { servers } => {
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                write!(f, "dns ({}, /etc/hosts ignored)", list.join(", "))
            }
        }
    }
}

/// The DNS resolvers built for routes, one per list of servers, to be kept from one reading of
/// the file to the next.
///
/// Why it exists: answers are cached per resolver (by the DNS client, and by the engine, which
/// tells [`Resolution`]s apart by identity), and that cache should survive a reload. A reload
/// that built a new resolver for an unchanged route would throw its cached answers away and
/// count the route as changed; building the routes of every reading through the same
/// `Resolvers` ([`Config::routes_with`](crate::Config::routes_with),
/// [`Config::relay_builder_with`](crate::Config::relay_builder_with)) gives an unchanged route
/// the very resolver it had.
#[derive(Debug, Default)]
pub struct Resolvers {
    #[cfg_attr(not(feature = "dns"), allow(dead_code))] // only DNS resolvers are kept
    resolvers: HashMap<Vec<SocketAddr>, Resolution>,
}

impl Resolvers {
    /// The resolution asking `servers` (those of `/etc/resolv.conf` if empty): the one built
    /// before for the same servers, or a new one, kept from now on.
    #[cfg(feature = "dns")]
    pub(crate) fn dns(&mut self, servers: &[SocketAddr]) -> Result<Resolution, String> {
        let servers = if servers.is_empty() {
            crate::dns::system_servers().map_err(|e| format!("cannot use /etc/resolv.conf: {e}"))?
        } else {
            servers.to_vec()
        };
        if let Some(resolution) = self.resolvers.get(&servers) {
            return Ok(resolution.clone());
        }
        let resolution = crate::dns::resolution(&servers)
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
        self.resolvers.insert(servers, resolution.clone());
        Ok(resolution)
    }

    /// Without the DNS client there is no DNS resolution to give.
    #[cfg(not(feature = "dns"))]
    pub(crate) fn dns(&mut self, _servers: &[SocketAddr]) -> Result<Resolution, String> {
        Err("this build of spliceway has no DNS client (cargo feature `dns`)".into())
    }
}
