//! `--kernel-counters`: the kernel's packet work behind each run of `--topology emulated`,
//! read before and after the run and printed as deltas beside the run's line, so a relay's CPU
//! can be read beside the packets it handled. It replaces scripts/packets-per-run.py and
//! scripts/softirq-per-run.py.
//!
//! Per namespace (client, relay, S3): the IP and TCP MIB counters of /proc/net/snmp and
//! /proc/net/netstat (what `nstat -az` prints), and for the relay host its two veth ends'
//! packets and bytes (/proc/net/dev: `r-c` from the client, `r-s` to S3). For the machine: the
//! softirq column of /proc/stat's `cpu` line and the CPU ticks of every ksoftirqd thread (on a
//! kernel without CONFIG_IRQ_TIME_ACCOUNTING softirq work done on the relay's thread counts as
//! the relay's CPU; the ksoftirqd ticks show the work that was deferred instead). Each
//! namespace's files are read by a thread that entered it (`netns::run_in`), through
//! /proc/thread-self, which follows the thread's namespace.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use crate::netns::topology::Emulated;
use crate::netns::{self, Netns};

/// The MIB counters read per namespace, as `nstat` names them.
const MIB_KEYS: [&str; 12] = [
    "IpInReceives",
    "IpOutRequests",
    "IpExtInOctets",
    "IpExtOutOctets",
    "TcpInSegs",
    "TcpOutSegs",
    "TcpRetransSegs",
    "TcpExtDelayedACKs",
    "TcpExtTCPPureAcks",
    "TcpExtTCPHPAcks",
    "TcpExtTCPAutoCorking",
    "TcpExtTCPOrigDataSent",
];

/// The relay host's veth ends.
const RELAY_LINKS: [&str; 2] = ["r-c", "r-s"];

/// Counters at one moment, by name (`relay.TcpInSegs`, `relay.r-c.rx_packets`, `softirq`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading(BTreeMap<String, u64>);

impl Reading {
    /// Reads every counter; a file that cannot be read leaves its counters out.
    pub(crate) fn take(topology: &Emulated) -> Reading {
        let mut values = BTreeMap::new();
        for (role, ns) in [
            ("client", &topology.client),
            ("relay", &topology.relay),
            ("s3", &topology.s3),
        ] {
            for (key, value) in read_namespace(ns) {
                values.insert(format!("{role}.{key}"), value);
            }
        }
        if let Some(ticks) = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| softirq_ticks(&t))
        {
            values.insert("softirq".into(), ticks);
        }
        values.insert("ksoftirqd".into(), ksoftirqd_ticks());
        Reading(values)
    }

    /// `later - self` per counter present in both.
    pub(crate) fn delta(&self, later: &Reading) -> Reading {
        Reading(
            later
                .0
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.saturating_sub(*self.0.get(k)?))))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// The delta as indented lines under a run's line.
    pub(crate) fn describe(&self) -> String {
        let d = |k: &str| self.get(k);
        let per = |num: u64, den: u64| {
            num.checked_div(den)
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        };
        let mut out = format!(
            "  relay IP in {} pkts ({} B/pkt), out {} pkts ({} B/pkt)\n",
            d("relay.IpInReceives"),
            per(d("relay.IpExtInOctets"), d("relay.IpInReceives")),
            d("relay.IpOutRequests"),
            per(d("relay.IpExtOutOctets"), d("relay.IpOutRequests")),
        );
        let _ = writeln!(
            out,
            "  relay TCP in {} segs, out {} (data {}, retrans {}); pure ACKs in {}, delayed ACKs {}, autocorked {}",
            d("relay.TcpInSegs"),
            d("relay.TcpOutSegs"),
            d("relay.TcpExtTCPOrigDataSent"),
            d("relay.TcpRetransSegs"),
            d("relay.TcpExtTCPPureAcks"),
            d("relay.TcpExtDelayedACKs"),
            d("relay.TcpExtTCPAutoCorking"),
        );
        for link in RELAY_LINKS {
            for way in ["rx", "tx"] {
                let packets = d(&format!("relay.{link}.{way}_packets"));
                let bytes = d(&format!("relay.{link}.{way}_bytes"));
                let _ = writeln!(
                    out,
                    "  link {link} {way}: {packets} pkts, {} B/pkt",
                    per(bytes, packets)
                );
            }
        }
        let retransmits: u64 = ["client", "relay", "s3"]
            .iter()
            .map(|r| d(&format!("{r}.TcpRetransSegs")))
            .sum();
        let _ = write!(
            out,
            "  softirq {} ticks, ksoftirqd {} ticks; client segs out {}, s3 segs out {}, retransmits (all) {retransmits}",
            d("softirq"),
            d("ksoftirqd"),
            d("client.TcpOutSegs"),
            d("s3.TcpOutSegs"),
        );
        out
    }
}

/// One namespace's MIB counters and links, read on a thread inside it.
fn read_namespace(ns: &Netns) -> Vec<(String, u64)> {
    netns::run_in(Some(ns), || {
        let read = |name: &str| fs::read_to_string(format!("/proc/thread-self/net/{name}"));
        let mut values = Vec::new();
        for file in ["snmp", "netstat"] {
            if let Ok(text) = read(file) {
                values.extend(
                    mib_counters(&text)
                        .into_iter()
                        .filter(|(k, _)| MIB_KEYS.contains(&k.as_str())),
                );
            }
        }
        if let Ok(text) = read("dev") {
            values.extend(link_counters(&text, &RELAY_LINKS));
        }
        values
    })
    .unwrap_or_default()
}

/// /proc/net/snmp or /proc/net/netstat: pairs of lines `Tcp: Name1 Name2` and `Tcp: 1 2`,
/// named as nstat names them (`TcpInSegs`, `TcpExtDelayedACKs`, `IpExtInOctets`).
pub(crate) fn mib_counters(text: &str) -> Vec<(String, u64)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((prefix, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse::<u64>() {
                out.push((format!("{prefix}{name}"), value));
            }
        }
    }
    out
}

/// /proc/net/dev: rx and tx packets and bytes of the interfaces named.
pub(crate) fn link_counters(text: &str, links: &[&str]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !links.contains(&name) {
            continue;
        }
        let fields: Vec<u64> = fields
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() < 10 {
            continue;
        }
        for (key, index) in [
            ("rx_bytes", 0),
            ("rx_packets", 1),
            ("tx_bytes", 8),
            ("tx_packets", 9),
        ] {
            out.push((format!("{name}.{key}"), fields[index]));
        }
    }
    out
}

/// The softirq column of the `cpu` line of /proc/stat (clock ticks).
pub(crate) fn softirq_ticks(stat: &str) -> Option<u64> {
    stat.lines()
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .nth(7)?
        .parse()
        .ok()
}

/// utime + stime of every ksoftirqd thread, in clock ticks.
fn ksoftirqd_ticks() -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(ksoftirqd/"))
        .filter_map(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_pairs_are_named_as_nstat_names_them() {
        let snmp =
            "Ip: Forwarding InReceives\nIp: 1 120\nTcp: RtoAlgorithm InSegs OutSegs\nTcp: 1 7 9\n";
        let values = mib_counters(snmp);
        assert!(values.contains(&("IpInReceives".into(), 120)));
        assert!(values.contains(&("TcpInSegs".into(), 7)));
        assert!(values.contains(&("TcpOutSegs".into(), 9)));
        let netstat = "TcpExt: DelayedACKs TCPPureAcks\nTcpExt: 3 4\nIpExt: InOctets OutOctets\nIpExt: 1000 2000\n";
        let values = mib_counters(netstat);
        assert!(values.contains(&("TcpExtDelayedACKs".into(), 3)));
        assert!(values.contains(&("IpExtOutOctets".into(), 2000)));
    }

    #[test]
    fn links_and_softirq_ticks_are_read() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n\
                      lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n   r-c: 9000 6 0 0 0 0 0 0 300 5 0 0 0 0 0 0\n";
        let values = link_counters(dev, &RELAY_LINKS);
        assert_eq!(
            values,
            vec![
                ("r-c.rx_bytes".into(), 9000),
                ("r-c.rx_packets".into(), 6),
                ("r-c.tx_bytes".into(), 300),
                ("r-c.tx_packets".into(), 5)
            ]
        );
        assert_eq!(
            softirq_ticks("cpu  1 2 3 4 5 6 77 8 0 0\ncpu0 1 2 3 4 5 6 7 8\n"),
            Some(77)
        );
        assert_eq!(softirq_ticks("intr 5\n"), None);
    }

    #[test]
    fn deltas_and_their_lines() {
        let before = Reading(BTreeMap::from([
            ("relay.IpInReceives".into(), 10),
            ("relay.IpExtInOctets".into(), 1000),
            ("softirq".into(), 5),
        ]));
        let after = Reading(BTreeMap::from([
            ("relay.IpInReceives".into(), 110),
            ("relay.IpExtInOctets".into(), 151_000),
            ("softirq".into(), 9),
            ("ksoftirqd".into(), 3),
        ]));
        let delta = before.delta(&after);
        assert_eq!(delta.get("relay.IpInReceives"), 100);
        assert_eq!(delta.get("ksoftirqd"), 0, "absent before: left out");
        let text = delta.describe();
        assert!(text.contains("relay IP in 100 pkts (1500 B/pkt)"), "{text}");
        assert!(text.contains("softirq 4 ticks"), "{text}");
    }
}
