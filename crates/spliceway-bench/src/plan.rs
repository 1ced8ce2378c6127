//! The `spliceway bench` flags checked together, with the machine (root, `ip`, `tc`) and remote
//! addresses resolved, into one [`Plan`] before anything starts. Its errors are usage errors.

use std::net::{SocketAddr, ToSocketAddrs as _};

use anyhow::anyhow;

use crate::args::{BenchArgs, DEFAULT_LINK, Nic, Peer, Topology, WorkloadKind};
use crate::error::usage;
use crate::streams::Shape;
use crate::units::{Burst, Rate};

/// Runs per path when --runs is not given.
const DEFAULT_RUNS: u32 = 3;

/// What the flags ask for, validated.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) size: usize,
    pub(crate) runs: u32,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) peers: Vec<Peer>,
    pub(crate) relay_cpu: Option<f64>,
    pub(crate) setting: Setting,
    pub(crate) workload: Workload,
    /// Streams and parts (`--streams`, `--part-size`, `--pattern`).
    pub(crate) shape: Shape,
    /// `--kernel-counters`: the kernel's packet work per run (emulated topology only).
    pub(crate) kernel_counters: bool,
}

/// Round trips per run of `--workload rtt` unless `--requests` says otherwise.
pub(crate) const DEFAULT_ROUND_TRIPS: u64 = 20_000;
/// Connections per run of `--workload connect` unless `--requests` says otherwise.
pub(crate) const DEFAULT_CONNECTIONS: u64 = 3_000;
/// Bytes per request and per answer unless `--message-size` says otherwise.
pub(crate) const DEFAULT_MESSAGE_BYTES: usize = 64;
/// The largest `--message-size`: a request and its answer, not a transfer.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What each run of a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// One upload of `Plan::size` bytes.
    Upload,
    /// `requests` round trips of `message_bytes` on one connection.
    RoundTrips { requests: u64, message_bytes: usize },
    /// `requests` connections, `concurrency` at a time, one exchange of `message_bytes` each.
    Connections {
        requests: u64,
        message_bytes: usize,
        concurrency: u32,
    },
}

impl Workload {
    /// The name used in the JSON's `workload` field (the `--workload` value).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Workload::Upload => "upload",
            Workload::RoundTrips { .. } => "rtt",
            Workload::Connections { .. } => "connect",
        }
    }

    /// Requests per run (round trips or connections); None for an upload.
    pub(crate) fn requests(&self) -> Option<u64> {
        match *self {
            Workload::Upload => None,
            Workload::RoundTrips { requests, .. } | Workload::Connections { requests, .. } => {
                Some(requests)
            }
        }
    }

    fn from_args(args: &BenchArgs) -> anyhow::Result<Workload> {
        let message_bytes = match args.message_size {
            None => DEFAULT_MESSAGE_BYTES,
            Some(size) if size <= MAX_MESSAGE_BYTES as u64 => size as usize,
            Some(size) => {
                return Err(usage(anyhow!(
                    "--message-size {size}: at most {MAX_MESSAGE_BYTES} bytes (1 MiB); for \
                     transfers use --workload upload"
                )));
            }
        };
        let only_for = |flag: &str, given: bool, workloads: &str| {
            if given {
                Err(usage(anyhow!("{flag} applies to {workloads} only")))
            } else {
                Ok(())
            }
        };
        if args.workload != WorkloadKind::Upload {
            for (flag, given) in [
                ("--streams", args.streams.is_some()),
                ("--part-size", args.part_size.is_some()),
                ("--pattern", args.pattern.is_some()),
            ] {
                only_for(flag, given, "--workload upload")?;
            }
        }
        Ok(match args.workload {
            WorkloadKind::Upload => {
                only_for(
                    "--requests",
                    args.requests.is_some(),
                    "--workload rtt|connect",
                )?;
                only_for(
                    "--message-size",
                    args.message_size.is_some(),
                    "--workload rtt|connect",
                )?;
                only_for(
                    "--concurrency",
                    args.concurrency.is_some(),
                    "--workload connect",
                )?;
                Workload::Upload
            }
            WorkloadKind::Rtt => {
                only_for(
                    "--concurrency",
                    args.concurrency.is_some(),
                    "--workload connect",
                )?;
                Workload::RoundTrips {
                    requests: args.requests.unwrap_or(DEFAULT_ROUND_TRIPS),
                    message_bytes,
                }
            }
            WorkloadKind::Connect => {
                let requests = args.requests.unwrap_or(DEFAULT_CONNECTIONS);
                let concurrency = args.concurrency.unwrap_or(1);
                if u64::from(concurrency) > requests {
                    return Err(usage(anyhow!(
                        "--concurrency {concurrency} is more than --requests {requests}"
                    )));
                }
                Workload::Connections {
                    requests,
                    message_bytes,
                    concurrency,
                }
            }
            // `bench::run` hands it to `udp::run` before any plan is made.
            WorkloadKind::Udp => {
                return Err(usage(anyhow!(
                    "--workload udp is run on its own (udp.rs), not planned"
                )));
            }
        })
    }
}

/// Where the uploads go.
#[derive(Debug, Clone)]
pub(crate) enum Setting {
    Loopback,
    Emulated {
        internet: Rate,
        vpc: Rate,
        nic: Nic,
        burst: Burst,
    },
    Remote {
        target: Endpoint,
        via: Option<Endpoint>,
    },
}

impl Setting {
    /// The name used in the JSON's `topology` field.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Setting::Loopback => "loopback",
            Setting::Emulated { .. } => "emulated",
            Setting::Remote { .. } => "remote",
        }
    }
}

/// A remote address as given and as resolved (once, at start).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) given: String,
    pub(crate) addr: SocketAddr,
}

impl Plan {
    /// Checks the flags and the machine (root, `ip`, `tc`) and resolves remote addresses.
    /// Errors are [`UsageError`](crate::error::UsageError)s.
    pub(crate) fn from_args(args: BenchArgs) -> anyhow::Result<Plan> {
        let workload = Workload::from_args(&args)?;
        let size = usize::try_from(args.size)
            .map_err(|_| usage(anyhow!("--size {} is too large", args.size)))?;
        let shape = Shape::from_args(&args)?;
        let mut names: Vec<&str> = vec!["direct", "vpc", "via", "relay-splice", "relay-copy"];
        for peer in &args.peers {
            if names.contains(&peer.name.as_str()) {
                return Err(usage(anyhow!(
                    "--peer {}: that path name is taken; choose another",
                    peer.name
                )));
            }
            names.push(&peer.name);
        }
        let shaping = emulation_flags(&args);
        if !shaping.is_empty() && (args.target.is_some() || args.topology != Topology::Emulated) {
            let (flags, verb) = match shaping.as_slice() {
                [one] => (one.to_string(), "shapes"),
                many => (many.join(", "), "shape"),
            };
            let why = if args.target.is_some() {
                "with --target the network between the hosts is real and is not shaped; leave \
                 them out"
            } else {
                "this run is on loopback, where nothing is shaped: add --topology emulated \
                 (it needs root)"
            };
            return Err(usage(anyhow!("{flags} {verb} the emulated links; {why}")));
        }
        if !args.via.is_empty() && args.target.is_none() {
            return Err(usage(anyhow!("--via needs --target (or --s3)")));
        }
        if args.kernel_counters && (args.target.is_some() || args.topology != Topology::Emulated) {
            return Err(usage(anyhow!(
                "--kernel-counters reads the counters of the emulated topology's namespaces: \
                 add --topology emulated (it needs root)"
            )));
        }
        let setting = match (&args.target, args.topology) {
            (Some(target), _) => Setting::Remote {
                target: resolve("--target", target)?,
                via: match args.via.as_slice() {
                    [] => None,
                    [one] => Some(resolve("--via", one)?),
                    _ => return Err(usage(anyhow!("--target takes one --via"))),
                },
            },
            (None, Topology::Loopback) => Setting::Loopback,
            (None, Topology::Interception) => {
                return Err(usage(anyhow!(
                    "--topology interception compares relays: give --compare NAME=BINARY"
                )));
            }
            (None, Topology::Emulated) => {
                if !nix::unistd::geteuid().is_root() {
                    return Err(usage(anyhow!(
                        "--topology emulated needs root (it creates network namespaces and \
                         shapes links with tc): run it with sudo"
                    )));
                }
                for tool in ["ip", "tc"] {
                    if !on_path(tool) {
                        return Err(usage(anyhow!(
                            "--topology emulated needs `{tool}` (install iproute2)"
                        )));
                    }
                }
                let nic = args.nic.unwrap_or(Nic::Veth);
                if nic == Nic::Ec2 && !on_path("ethtool") {
                    return Err(usage(anyhow!(
                        "--nic ec2 needs `ethtool` (apt-get install ethtool)"
                    )));
                }
                let (internet, vpc) = match args.link {
                    Some(link) => link.rates(),
                    None => {
                        let (internet, vpc) = DEFAULT_LINK.rates();
                        (
                            args.internet_rate.unwrap_or(internet),
                            args.vpc_rate.unwrap_or(vpc),
                        )
                    }
                };
                Setting::Emulated {
                    internet,
                    vpc,
                    nic,
                    burst: args.tbf_burst.unwrap_or(Burst::Auto),
                }
            }
        };
        if args.relay_cpu.is_some() {
            if !nix::unistd::geteuid().is_root() {
                return Err(usage(anyhow!(
                    "--relay-cpu needs root (it creates a cgroup): run it with sudo"
                )));
            }
            if matches!(setting, Setting::Remote { .. }) && args.peers.is_empty() {
                return Err(usage(anyhow!(
                    "--relay-cpu caps relays this command starts; with --target the relay \
                     runs elsewhere"
                )));
            }
        }
        Ok(Plan {
            size,
            runs: args.runs.unwrap_or(DEFAULT_RUNS),
            json: args.json,
            quiet: args.quiet,
            peers: args.peers,
            relay_cpu: args.relay_cpu,
            setting,
            workload,
            shape,
            kernel_counters: args.kernel_counters,
        })
    }
}

/// The flags given that only shape the emulated links. Without `--topology emulated` they
/// would change nothing, and a run that ignored them used to look like a shaped one (issue 25):
/// the caller makes that a usage error. `--link` does not imply the emulated topology instead:
/// that topology needs root, builds namespaces and caps nothing by itself, and a rate flag
/// should not quietly turn a loopback run into one; the fix is one flag, and the error names it.
fn emulation_flags(args: &BenchArgs) -> Vec<&'static str> {
    [
        ("--link", args.link.is_some()),
        ("--internet-rate", args.internet_rate.is_some()),
        ("--vpc-rate", args.vpc_rate.is_some()),
        ("--nic", args.nic.is_some()),
        ("--tbf-burst", args.tbf_burst.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect()
}

fn resolve(flag: &str, given: &str) -> anyhow::Result<Endpoint> {
    let addr = given
        .to_socket_addrs()
        .map_err(|e| usage(anyhow!("{flag} {given}: {e} (give HOST:PORT)")))?
        .next()
        .ok_or_else(|| usage(anyhow!("{flag} {given}: no address")))?;
    Ok(Endpoint {
        given: given.to_owned(),
        addr,
    })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/sbin".into(), "/usr/sbin".into()])
            .any(|dir| dir.join(tool).is_file())
    })
}
