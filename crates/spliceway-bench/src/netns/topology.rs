//! The emulated topology: three network namespaces standing for the office client, the relay
//! host (the EC2 instance) and S3, joined by veth links shaped with tbf in both directions.
//!
//! ```text
//!            internet rate                      VPC rate
//!  client 10.201.1.1 ---- 10.201.1.2 relay 10.201.3.1 ---- 10.201.3.2 s3
//!         10.201.2.1 ------------------------------------- 10.201.2.2
//!                              internet rate
//! ```
//!
//! The namespaces are named `swb<pid>-client`, `swb<pid>-relay` and `swb<pid>-s3`; the veth
//! interfaces are created directly inside them, so nothing is added to the host's namespace.
//! Deleting the namespaces (on drop, or from the signal handler: [`delete`], registered with
//! the [`Cleanup`]) deletes the links. The namespaces themselves are the bench's [`Netns`]
//! handles, the same the test kit builds its own on.
//!
//! `--nic` chooses what the interfaces do with offloads. A veth end as created has TSO and GSO
//! on and GRO off: a sender's 64 KiB TSO packet crosses the pair whole, so the receiver gets
//! a 64 KiB packet for the cost of one, as if GRO were perfect and free. A real EC2 NIC (ENA,
//! or Xen netfront on a t2) receives MTU-sized frames from the wire and merges them with GRO
//! in its NAPI poll, a cost per frame on the instance's CPU; it keeps TSO for what the
//! instance sends. `ec2` makes the wire carry MTU-sized frames (TSO off on the client's and
//! S3's ends: GSO cuts their packets before the veth) and turns GRO on at every end, the
//! relay host's ends keeping TSO. The queueing discipline stays tbf with its byte FIFO: an
//! instance's fq_codel (or pfifo_fast) sits on a NIC that is not the bottleneck, and this
//! kernel has neither fq_codel nor fq.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context as _;

use super::{Netns, command, delete, names};
use crate::args::Nic;
use crate::cleanup::{Cleanup, prefix};
use crate::units::{Burst, Rate};

/// tbf queue: how long a packet may wait for tokens before it is dropped.
pub(crate) const TBF_LATENCY: &str = "50ms";

/// Client's end of the client <-> relay link.
pub(crate) const CLIENT_TO_RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
/// Relay's end of the client <-> relay link: relays listen here.
pub(crate) const RELAY_FROM_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
/// Client's end of the client <-> s3 link.
pub(crate) const CLIENT_TO_S3_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 1);
/// S3's end of the client <-> s3 link.
pub(crate) const S3_FROM_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
/// Relay's end of the relay <-> s3 link.
pub(crate) const RELAY_TO_S3_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 1);
/// S3's end of the relay <-> s3 link: relays forward here.
pub(crate) const S3_FROM_RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 2);

/// `--nic` as the report names it.
pub(crate) fn nic_name(nic: Nic) -> &'static str {
    match nic {
        Nic::Veth => "veth",
        Nic::Ec2 => "ec2",
    }
}

/// The offloads of `--nic`, for the report's heading and `links`.
pub(crate) fn nic_settings(nic: Nic) -> &'static str {
    match nic {
        Nic::Veth => "veth defaults: tso/gso on, gro off",
        Nic::Ec2 => {
            "gro on; tso off on the client and s3 ends (MTU frames on the wire), \
                     tso/gso on at the relay host"
        }
    }
}

/// The three namespaces and their links; removed on drop.
#[derive(Debug)]
pub(crate) struct Emulated {
    pub(crate) client: Netns,
    pub(crate) relay: Netns,
    pub(crate) s3: Netns,
    cleanup: Arc<Cleanup>,
}

/// The namespaces' roles, the suffixes of their names.
const ROLES: [&str; 3] = ["client", "relay", "s3"];

impl Emulated {
    /// Creates the namespaces, links, addresses and shaping; on failure removes what it made.
    pub(crate) fn build(
        internet: Rate,
        vpc: Rate,
        nic: Nic,
        burst: Burst,
        cleanup: &Arc<Cleanup>,
    ) -> anyhow::Result<Emulated> {
        remove_leftovers();
        let built = Self::build_inner(internet, vpc, nic, burst, cleanup);
        if built.is_err() {
            for role in ROLES {
                cleanup.remove(&format!("{}{role}", prefix()));
            }
        }
        built.context("building the emulated topology")
    }

    fn build_inner(
        internet: Rate,
        vpc: Rate,
        nic: Nic,
        burst: Burst,
        cleanup: &Arc<Cleanup>,
    ) -> anyhow::Result<Emulated> {
        let prefix = prefix();
        let create = |role: &str| -> anyhow::Result<Netns> {
            let name = format!("{prefix}{role}");
            let removed = name.clone();
            cleanup.track(name.clone(), move || {
                delete(&removed);
            });
            Netns::add(&name)
        };
        let topology = Emulated {
            client: create("client")?,
            relay: create("relay")?,
            s3: create("s3")?,
            cleanup: Arc::clone(cleanup),
        };
        topology.link(
            ("client", "c-r", CLIENT_TO_RELAY_IP),
            ("relay", "r-c", RELAY_FROM_CLIENT_IP),
            internet,
            burst,
        )?;
        topology.link(
            ("client", "c-s", CLIENT_TO_S3_IP),
            ("s3", "s-c", S3_FROM_CLIENT_IP),
            internet,
            burst,
        )?;
        topology.link(
            ("relay", "r-s", RELAY_TO_S3_IP),
            ("s3", "s-r", S3_FROM_RELAY_IP),
            vpc,
            burst,
        )?;
        if nic == Nic::Ec2 {
            for (role, dev) in [
                ("client", "c-r"),
                ("client", "c-s"),
                ("s3", "s-c"),
                ("s3", "s-r"),
            ] {
                topology.offloads(role, dev, &["gro", "on", "tso", "off", "gso", "on"])?;
            }
            for dev in ["r-c", "r-s"] {
                topology.offloads("relay", dev, &["gro", "on", "tso", "on", "gso", "on"])?;
            }
        }
        Ok(topology)
    }

    /// `ethtool -K DEV SETTINGS...` inside the role's namespace.
    fn offloads(&self, role: &str, dev: &str, settings: &[&str]) -> anyhow::Result<()> {
        let argv: Vec<String> = ["ethtool", "-K", dev]
            .iter()
            .chain(settings)
            .map(|s| s.to_string())
            .collect();
        let argv = self.ns(role).exec_argv(&argv);
        let (program, args) = argv.split_first().context("empty command")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        command(program, &args)?;
        Ok(())
    }

    fn ns(&self, role: &str) -> &Netns {
        match role {
            "client" => &self.client,
            "relay" => &self.relay,
            _ => &self.s3,
        }
    }

    /// A veth pair between two namespaces, a /30 on it, tbf at `rate` on both ends.
    fn link(
        &self,
        (a_role, a_dev, a_ip): (&str, &str, Ipv4Addr),
        (b_role, b_dev, b_ip): (&str, &str, Ipv4Addr),
        rate: Rate,
        burst: Burst,
    ) -> anyhow::Result<()> {
        let burst = format!("{}b", burst.bytes(rate));
        let (a, b) = (self.ns(a_role), self.ns(b_role));
        a.veth(
            a_dev,
            b,
            b_dev,
            Some(&format!("{a_ip}/30")),
            Some(&format!("{b_ip}/30")),
        )?;
        let rate = format!("{}bit", rate.bits_per_second);
        for (ns, dev) in [(a, a_dev), (b, b_dev)] {
            command(
                "tc",
                &[
                    "-n",
                    ns.name(),
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &rate,
                    "burst",
                    &burst,
                    "latency",
                    TBF_LATENCY,
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        for ns in [&self.client, &self.relay, &self.s3] {
            self.cleanup.remove(ns.name());
        }
    }
}

/// Namespaces left by an earlier run that had this same PID and crashed; other prefixes are
/// never touched.
pub(crate) fn remove_leftovers() {
    let prefix = prefix();
    for name in names().iter().filter(|name| name.starts_with(&prefix)) {
        delete(name);
    }
}
