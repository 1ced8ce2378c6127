//! Allow and deny lists of client networks.

use std::net::IpAddr;

use ipnet::IpNet;

/// Allow and deny lists of client networks.
///
/// A client is refused if a deny entry contains its address, or if there are allow entries
/// and none contains it. IPv4-mapped IPv6 addresses are matched as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Networks allowed (empty: everyone not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused (checked first).
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may connect; `Err` says which rule refused it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(format!("{ip} is in deny {net}"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(format!("{ip} is not in the allow list"));
        }
        Ok(())
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
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
                .contains("deny")
        );
        assert!(
            acl.check("192.168.1.1".parse().unwrap())
                .unwrap_err()
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
}
