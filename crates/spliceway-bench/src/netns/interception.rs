//! `spliceway bench --compare ... --topology interception`: the namespaces of
//! `scripts/interception-netns.sh` that the interception measurement needs (root): a client
//! whose default route is the relay, the relay with the REDIRECT rule of docs/operations.md
//! ("Relaying without touching the clients"), and a server behind it. IPv4 only; the script's
//! second server, TPROXY and IPv6 serve the tests, not this measurement.
//!
//! ```text
//! client ns              relay ns                    server ns
//! c0 10.88.1.1 ---- r0 10.88.1.2    r1 10.88.2.1 ---- a0 10.88.2.2 (the sink, port 7001)
//! ```
//!
//! Unlike the script's, the relay's namespace does not forward: a connection the client makes to
//! the server can only succeed through the REDIRECT rule and the relay, so a rule that does not
//! match fails the round instead of measuring a relay that carried nothing.
//!
//! The relay's namespace has an `/etc/netns/NAME/hosts` naming the server `sink.test`, which
//! `ip netns exec` shows the relay as `/etc/hosts` (for the CONNECT variant's name). Everything
//! is registered with the bench's cleanup (also on Ctrl-C) and removed when dropped.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};

use super::topology::remove_leftovers;
use super::{Netns, command, delete};
use crate::cleanup::{Cleanup, prefix};
use crate::error::usage;

/// The relay's address on the client side.
pub(crate) const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 2);
/// The server's address, where the sink listens.
pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 2, 2);
/// The sink's port, the one the REDIRECT rule sends to the relay.
pub(crate) const SINK_PORT: u16 = 7001;
/// The relay's port for redirected connections.
pub(crate) const REDIRECT_PORT: u16 = 15001;
/// The server's name in the relay namespace's hosts file.
pub(crate) const SINK_NAME: &str = "sink.test";

/// The rule of `scripts/interception-netns.sh rules` this measurement uses.
const RULES: &str = "table inet spliceway {
    chain prerouting_nat {
        type nat hook prerouting priority dstnat; policy accept;
        iifname \"r0\" tcp dport 7001 redirect to :15001
    }
}
";

/// The three namespaces, built.
#[derive(Debug)]
pub(crate) struct Interception {
    pub(crate) client: Netns,
    pub(crate) relay: Netns,
    pub(crate) server: Netns,
    hosts_dir: PathBuf,
    cleanup: Arc<Cleanup>,
}

/// The namespaces' roles, the suffixes of their names.
const ROLES: [&str; 3] = ["ic", "ir", "ia"];

impl Interception {
    /// Needs root and nft: a usage error otherwise. On failure removes what it made.
    pub(crate) fn build(cleanup: &Arc<Cleanup>) -> anyhow::Result<Interception> {
        if !nix::unistd::geteuid().is_root() {
            return Err(usage(anyhow!(
                "--topology interception creates network namespaces and nftables rules: run \
                 as root"
            )));
        }
        if command("nft", &["--version"]).is_err() {
            return Err(usage(anyhow!(
                "--topology interception needs nft (nftables)"
            )));
        }
        remove_leftovers();
        let built = Self::build_inner(cleanup);
        if built.is_err() {
            for role in ROLES {
                cleanup.remove(&format!("{}{role}", prefix()));
            }
        }
        built.context("building the interception topology")
    }

    fn build_inner(cleanup: &Arc<Cleanup>) -> anyhow::Result<Interception> {
        let prefix = prefix();
        let create = |role: &str| -> anyhow::Result<Netns> {
            let name = format!("{prefix}{role}");
            let removed = name.clone();
            cleanup.track(name.clone(), move || {
                delete(&removed);
                let _ = std::fs::remove_dir_all(format!("/etc/netns/{removed}"));
            });
            Netns::add(&name)
        };
        let client = create(ROLES[0])?;
        let relay = create(ROLES[1])?;
        let server = create(ROLES[2])?;
        let hosts_dir = PathBuf::from(format!("/etc/netns/{}", relay.name()));
        let net = Interception {
            client,
            relay,
            server,
            hosts_dir,
            cleanup: Arc::clone(cleanup),
        };
        net.client.veth(
            "c0",
            &net.relay,
            "r0",
            Some("10.88.1.1/24"),
            Some("10.88.1.2/24"),
        )?;
        net.relay.veth(
            "r1",
            &net.server,
            "a0",
            Some("10.88.2.1/24"),
            Some("10.88.2.2/24"),
        )?;
        net.client
            .ip(&["route", "add", "default", "via", "10.88.1.2"])?;
        net.server
            .ip(&["route", "add", "default", "via", "10.88.2.1"])?;
        let in_relay = |argv: &[&str]| -> anyhow::Result<String> {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let argv = net.relay.exec_argv(&argv);
            let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
            command(&argv[0], &args)
        };
        std::fs::create_dir_all(&net.hosts_dir)
            .with_context(|| format!("creating {}", net.hosts_dir.display()))?;
        std::fs::write(
            net.hosts_dir.join("hosts"),
            format!("127.0.0.1 localhost\n{SERVER_IP} {SINK_NAME}\n"),
        )?;
        let rules = tempfile::NamedTempFile::new()?;
        std::fs::write(rules.path(), RULES)?;
        in_relay(&["nft", "-f", &rules.path().to_string_lossy()])?;
        Ok(net)
    }

    /// Where the sink listens, in the server namespace.
    pub(crate) fn sink_addr() -> SocketAddr {
        SocketAddrV4::new(SERVER_IP, SINK_PORT).into()
    }
}

impl Drop for Interception {
    fn drop(&mut self) {
        for ns in [&self.client, &self.relay, &self.server] {
            self.cleanup.remove(ns.name());
        }
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
    }
}
