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
//! Deleting the namespaces (on drop, or from the signal handler: this module's [`delete`],
//! registered with the [`Cleanup`]) deletes the links.
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

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

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

/// A namespace this process created, open so threads can enter it.
#[derive(Debug)]
pub(crate) struct Netns {
    pub(crate) name: String,
    file: File,
}

/// The three namespaces and their links; removed on drop.
#[derive(Debug)]
pub(crate) struct Emulated {
    pub(crate) client: Netns,
    pub(crate) relay: Netns,
    pub(crate) s3: Netns,
    cleanup: Arc<Cleanup>,
}

impl Netns {
    /// Another handle on the same namespace, for a thread that outlives the borrow.
    pub(crate) fn try_clone(&self) -> anyhow::Result<Netns> {
        Ok(Netns {
            name: self.name.clone(),
            file: self.file.try_clone()?,
        })
    }
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
            cleanup.track(name.clone(), move || delete(&removed));
            run("ip", &["netns", "add", &name])?;
            run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
            let file = File::open(format!("/run/netns/{name}"))
                .with_context(|| format!("opening namespace {name}"))?;
            Ok(Netns { name, file })
        };
        let mut topology = Emulated {
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
        let argv = Self::exec_in(self.ns(role), &argv);
        let (program, args) = argv.split_first().context("empty command")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
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
        &mut self,
        (a_role, a_dev, a_ip): (&str, &str, Ipv4Addr),
        (b_role, b_dev, b_ip): (&str, &str, Ipv4Addr),
        rate: Rate,
        burst: Burst,
    ) -> anyhow::Result<()> {
        let burst = format!("{}b", burst.bytes(rate));
        let a = self.ns(a_role).name.clone();
        let b = self.ns(b_role).name.clone();
        run(
            "ip",
            &[
                "link", "add", a_dev, "netns", &a, "type", "veth", "peer", "name", b_dev, "netns",
                &b,
            ],
        )?;
        let rate = format!("{}bit", rate.bits_per_second);
        for (ns, dev, ip) in [(&a, a_dev, a_ip), (&b, b_dev, b_ip)] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run(
                "tc",
                &[
                    "-n",
                    ns,
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

    /// `ip netns exec NS` followed by a command.
    pub(crate) fn exec_in(ns: &Netns, argv: &[String]) -> Vec<String> {
        ["ip", "netns", "exec", &ns.name]
            .into_iter()
            .map(String::from)
            .chain(argv.iter().cloned())
            .collect()
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        for ns in [&self.client, &self.relay, &self.s3] {
            self.cleanup.remove(&ns.name);
        }
    }
}

/// Deletes a namespace (its veth ends go with it); a missing one is not an error.
fn delete(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Namespaces left by an earlier run that had this same PID and crashed; other prefixes are
/// never touched.
pub(crate) fn remove_leftovers() {
    let prefix = prefix();
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split_whitespace().next()
            && name.starts_with(&prefix)
        {
            delete(name);
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (setns moves only the calling thread),
/// or on this thread when `ns` is `None`.
pub(crate) fn run_in<T: Send>(
    ns: Option<&Netns>,
    f: impl FnOnce() -> T + Send,
) -> anyhow::Result<T> {
    let Some(ns) = ns else {
        return Ok(f());
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&ns.file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {}", ns.name))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Enters `ns` on the calling thread, for long-lived threads (the in-process sink).
pub(crate) fn enter(ns: &Netns) -> anyhow::Result<()> {
    setns(&ns.file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", ns.name))
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
