//! Which resolved addresses a route's names may lead to.
//!
//! A relay on EC2 is one resolved name away from the instance metadata service
//! (169.254.169.254) and from the host's own loopback services. So by default:
//!
//! - a name the relay resolves (a route's upstream name, an SNI entry's upstream name, or a name
//!   taken from SNI) never leads to a link-local address (169.254.0.0/16, which holds the
//!   metadata service, and fe80::/10), nor to an unspecified, multicast or broadcast address;
//! - a name taken from SNI, which the *client* chooses, also never leads to loopback
//!   (127.0.0.0/8, ::1).
//!
//! Private ranges stay allowed: S3 interface endpoints resolve to them. A route lifts the
//! default for the ranges it lists (`upstream_allow`). IP literals written in the
//! configuration are taken as given, and `localhost:8080` as a configured upstream keeps
//! working. A description only: the connection applies it to each resolved address.
//!
//! A route where the client chooses the destination (the original destination of an
//! intercepted connection, the target of an HTTP CONNECT) is *strict*: `upstream_allow` is
//! then the list of the only ranges it may reach, and the defaults above still hold inside
//! those ranges, as for a name the client chose (loopback refused too). A range written
//! entirely inside one of the refused kinds (`169.254.169.254/32`) admits it; a wide one
//! (`0.0.0.0/0`) does not. The relay's own listeners are refused as loops whatever the policy.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Where the name being resolved came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameOrigin {
    /// Written in the configuration (a route's upstream, or an SNI entry's upstream).
    Configured,
    /// Taken from the client's TLS server name (an SNI entry without an upstream).
    Client,
}

/// The addresses a route's resolved names may not lead to, and the ranges it admits anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
    /// Only `allow` may be reached (routes where the client chooses the destination).
    strict: bool,
}

impl AddressPolicy {
    /// The default policy, with `allow` admitted whatever the default says.
    #[must_use]
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy {
            allow,
            strict: false,
        }
    }

    /// The policy of a route where the client chooses the destination: only `allow` may be
    /// reached, and within it the defaults for client-chosen names hold (see the module's
    /// documentation).
    #[must_use]
    pub fn strict(allow: Vec<IpNet>) -> Self {
        AddressPolicy {
            allow,
            strict: true,
        }
    }

    /// Whether only the `upstream_allow` ranges may be reached.
    #[must_use]
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The ranges admitted on top of the default (`upstream_allow`).
    #[must_use]
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Why `ip`, resolved from a name of `origin`, must not be connected to (a short phrase
    /// such as `"link-local"`), or `None` if it may.
    pub fn refusal(&self, ip: IpAddr, origin: NameOrigin) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.strict {
            let Some(kind) = self.allow.iter().find(|net| net.contains(&ip)).map(|net| {
                // Admitted by a range written inside the refused kind itself.
                let kind = refused_kind(ip, NameOrigin::Client);
                let inside = kind.is_some()
                    && refused_kind(net.network(), NameOrigin::Client) == kind
                    && refused_kind(net.broadcast(), NameOrigin::Client) == kind;
                if inside { None } else { kind }
            }) else {
                return Some("outside upstream_allow");
            };
            return kind.map(|kind| match kind {
                "loopback, for a name the client chose" => {
                    "loopback, for a destination the client chose"
                }
                other => other,
            });
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        refused_kind(ip, origin)
    }
}

/// The kind of address the default refuses `ip` as, if it does.
fn refused_kind(ip: IpAddr, origin: NameOrigin) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if link_local {
        Some("link-local")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if broadcast {
        Some("broadcast")
    } else if origin == NameOrigin::Client && ip.is_loopback() {
        Some("loopback, for a name the client chose")
    } else {
        None
    }
}

impl fmt::Display for AddressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.strict {
            let allowed: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            return write!(
                f,
                "only {}; never link-local, loopback, unspecified, multicast or broadcast \
                 addresses unless a range lies inside them",
                if allowed.is_empty() {
                    "(nothing)".to_string()
                } else {
                    allowed.join(", ")
                }
            );
        }
        f.write_str(
            "names never reach link-local, unspecified, multicast or broadcast addresses; \
             names from SNI never reach loopback",
        )?;
        if !self.allow.is_empty() {
            let allowed: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            write!(f, "; allowed anyway: {}", allowed.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_refuses_what_leads_to_the_metadata_service_and_similar() {
        let policy = AddressPolicy::default();
        for (addr, why) in [
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
        ] {
            for origin in [NameOrigin::Configured, NameOrigin::Client] {
                assert_eq!(
                    policy.refusal(ip(addr), origin),
                    Some(why),
                    "{addr} {origin:?}"
                );
            }
        }
        for addr in [
            "10.0.0.5",
            "172.16.1.1",
            "192.168.0.1",
            "52.219.0.1",
            "2600::1",
        ] {
            assert_eq!(policy.refusal(ip(addr), NameOrigin::Client), None, "{addr}");
        }
    }

    #[test]
    fn loopback_is_refused_only_for_names_the_client_chose() {
        let policy = AddressPolicy::default();
        for addr in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(
                policy.refusal(ip(addr), NameOrigin::Client).is_some(),
                "{addr}"
            );
            assert_eq!(
                policy.refusal(ip(addr), NameOrigin::Configured),
                None,
                "{addr}"
            );
        }
    }

    #[test]
    fn a_strict_policy_admits_only_its_ranges_and_never_the_metadata_service() {
        let policy =
            AddressPolicy::strict(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
        for (addr, why) in [
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("127.0.0.1", "loopback, for a destination the client chose"),
            ("::1", "loopback, for a destination the client chose"),
            ("0.0.0.0", "unspecified"),
        ] {
            assert_eq!(
                policy.refusal(ip(addr), NameOrigin::Client),
                Some(why),
                "{addr}"
            );
        }
        assert_eq!(policy.refusal(ip("52.219.0.1"), NameOrigin::Client), None);
        let s3 = AddressPolicy::strict(vec!["52.219.0.0/16".parse().unwrap()]);
        assert_eq!(s3.refusal(ip("52.219.1.2"), NameOrigin::Configured), None);
        assert_eq!(
            s3.refusal(ip("52.220.1.2"), NameOrigin::Configured),
            Some("outside upstream_allow")
        );
        assert_eq!(
            s3.refusal(ip("169.254.169.254"), NameOrigin::Client),
            Some("outside upstream_allow")
        );
        let metadata = AddressPolicy::strict(vec!["169.254.169.254/32".parse().unwrap()]);
        assert_eq!(
            metadata.refusal(ip("169.254.169.254"), NameOrigin::Client),
            None
        );
        assert!(s3.to_string().starts_with("only 52.219.0.0/16"));
    }

    #[test]
    fn upstream_allow_admits_what_it_names() {
        let policy = AddressPolicy::new(vec!["169.254.0.0/16".parse().unwrap()]);
        assert_eq!(
            policy.refusal(ip("169.254.169.254"), NameOrigin::Client),
            None
        );
        assert!(policy.refusal(ip("fe80::1"), NameOrigin::Client).is_some());
        assert!(
            policy
                .to_string()
                .contains("allowed anyway: 169.254.0.0/16")
        );
    }
}
