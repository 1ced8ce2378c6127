//! Allow and deny lists of client networks.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::AccessDenied;

/// Allow and deny lists of client networks.
///
/// A client is refused if a deny entry contains its address, or if there are allow entries
/// and none contains it. IPv4-mapped IPv6 addresses are matched as IPv4, on both sides: a
/// client `::ffff:10.1.2.3` is the client `10.1.2.3`, and a rule written in the mapped form
/// (`::ffff:127.0.0.0/104`) matches the IPv4 clients it maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Networks allowed (empty: everyone not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused (checked first).
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may connect.
    ///
    /// # Errors
    ///
    /// The rule that refused it, in words for the log (`10.1.2.3 is in deny 10.0.0.0/8`,
    /// `10.1.2.3 is not in the allow list`).
    pub fn check(&self, ip: IpAddr) -> Result<(), AccessDenied> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(net) = self.deny.iter().find(|n| covers(n, ip)) {
            return Err(AccessDenied::Denied { ip, net: *net });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| covers(n, ip)) {
            return Err(AccessDenied::NotAllowed { ip });
        }
        Ok(())
    }

    /// Whether there is any rule.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Whether `net` contains `ip` (an IPv4 client already unmapped), taking an IPv6 rule to also
/// contain the IPv4 addresses whose mapped form it contains.
fn covers(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&ip)
        || match (net, ip) {
            (IpNet::V6(v6), IpAddr::V4(v4)) => v6.contains(&v4.to_ipv6_mapped()),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let acl = AccessList {
            allow: vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            deny: vec![net("10.9.0.0/16")],
        };
        assert!(acl.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(
            acl.check("10.9.2.3".parse().unwrap())
                .unwrap_err()
                .to_string()
                .contains("deny")
        );
        assert!(
            acl.check("192.168.1.1".parse().unwrap())
                .unwrap_err()
                .to_string()
                .contains("allow")
        );
        assert!(acl.check("2001:db8::5".parse().unwrap()).is_ok());
        // An IPv4 client seen through an IPv6 socket is matched as IPv4.
        assert!(acl.check("::ffff:10.1.2.3".parse().unwrap()).is_ok());
        assert!(
            AccessList::default()
                .check("1.2.3.4".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn rules_in_ipv4_mapped_form_match_ipv4_clients() {
        let deny = AccessList {
            allow: vec![],
            deny: vec![net("::ffff:127.0.0.0/104")],
        };
        assert!(deny.check("127.0.0.2".parse().unwrap()).is_err());
        assert!(deny.check("::ffff:127.0.0.2".parse().unwrap()).is_err());
        assert!(deny.check("10.0.0.1".parse().unwrap()).is_ok());
        assert!(deny.check("::1".parse().unwrap()).is_ok());
        let allow = AccessList {
            allow: vec![net("::ffff:10.0.0.0/120")],
            deny: vec![],
        };
        assert!(allow.check("10.0.0.7".parse().unwrap()).is_ok());
        assert!(allow.check("10.0.1.7".parse().unwrap()).is_err());
    }
}
