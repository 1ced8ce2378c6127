//! `spliceway bench` flags, and their validation into one [`Plan`] before anything starts.

use std::net::{SocketAddr, ToSocketAddrs as _};

use anyhow::anyhow;

use super::paths::{self, Template};
use crate::cli::parse_size;
use crate::exit;

/// The loopback default: the README's first command.
pub const DEFAULT_SIZE: &str = "512MiB";

/// The kernel's smallest CFS quota is 1 ms per 100 ms period.
const MIN_RELAY_CPU: f64 = 0.01;

/// Arguments of `spliceway bench`.
#[derive(Debug, clap::Args)]
// A flag given twice keeps its last value, so wrapper scripts can set defaults that "$@" overrides.
#[command(args_override_self = true)]
#[command(after_help = "Examples:
  spliceway bench                                 # 512 MiB over loopback, 3 runs per path
  spliceway bench --size 64MiB --runs 5 --json
  spliceway bench --peer stone='stone 127.0.0.1:{upstream} 127.0.0.1:{listen}'
  sudo spliceway bench --topology emulated --size 128MiB --relay-cpu 0.1
  spliceway bench --target s3-side.example:9000 --via relay.example:9000

Template placeholders: {listen} {upstream} (port numbers), {listen_addr} {upstream_addr}
(ip:port), {listen_ip} {upstream_ip}. See docs/benchmarks.md.")]
pub struct BenchArgs {
    /// Bytes uploaded per run (e.g. 64MiB, 512MiB, 2GiB).
    #[arg(long, value_parser = parse_size, default_value = DEFAULT_SIZE)]
    pub size: u64,
    /// Uploads per path. Runs are interleaved across paths; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Print the results as one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress bar, per-run lines or table on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Measure an external relay as another path: NAME='COMMAND TEMPLATE' (repeatable).
    /// The command is split with shell-word rules (not run by a shell) and must listen on
    /// {listen} and forward to {upstream}.
    #[arg(long = "peer", value_name = "NAME=TEMPLATE", value_parser = parse_peer)]
    pub peers: Vec<Peer>,
    /// Where the paths run: loopback (one host, no shaping) or emulated (network namespaces
    /// with rate-limited links standing for the internet and the VPC; needs root).
    #[arg(long, value_enum, default_value_t = Topology::Loopback)]
    pub topology: Topology,
    /// Rate of the emulated internet links (client <-> S3, client <-> relay host).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "116mbit")]
    pub internet_rate: Rate,
    /// Rate of the emulated VPC link (relay host <-> S3).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "250mbit")]
    pub vpc_rate: Rate,
    /// Cap each relay's CPU to this fraction of one core with a cgroup (e.g. 0.1; needs root).
    #[arg(long, value_name = "FRACTION", value_parser = parse_cpu_fraction)]
    pub relay_cpu: Option<f64>,
    /// Upload to a `spliceway sink` on another host instead of the local paths.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "topology")]
    pub target: Option<String>,
    /// With --target: also upload through a relay (run elsewhere) that forwards to the target.
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    pub via: Option<String>,
}

/// Where the paths run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Everything on this host over 127.0.0.1.
    Loopback,
    /// Network namespaces client, relay and s3 joined by tbf-shaped veth links.
    Emulated,
}

/// A link rate as tc understands it, kept in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bits_per_second: u64,
}

impl Rate {
    /// Megabits per second (10^6), for tables.
    pub fn mbit(self) -> f64 {
        self.bits_per_second as f64 / 1e6
    }
}

/// An external relay to measure: a name and its command template.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub template: Template,
}

/// What the flags ask for, validated.
#[derive(Debug)]
pub struct Plan {
    pub size: usize,
    pub runs: u32,
    pub json: bool,
    pub quiet: bool,
    pub peers: Vec<Peer>,
    pub relay_cpu: Option<f64>,
    pub setting: Setting,
}

/// Where the uploads go.
#[derive(Debug, Clone)]
pub enum Setting {
    Loopback,
    Emulated {
        internet: Rate,
        vpc: Rate,
    },
    Remote {
        target: Endpoint,
        via: Option<Endpoint>,
    },
}

impl Setting {
    /// The name used in the JSON's `topology` field.
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Loopback => "loopback",
            Setting::Emulated { .. } => "emulated",
            Setting::Remote { .. } => "remote",
        }
    }
}

/// A remote address as given and as resolved (once, at start).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub given: String,
    pub addr: SocketAddr,
}

impl Plan {
    /// Checks the flags and the machine (root, `ip`, `tc`) and resolves remote addresses.
    /// Errors carry the usage exit status (2).
    pub fn from_args(args: BenchArgs) -> anyhow::Result<Plan> {
        let size = usize::try_from(args.size)
            .map_err(|_| exit::usage(anyhow!("--size {} is too large", args.size)))?;
        let mut names: Vec<&str> = vec!["direct", "vpc", "via", "relay-splice", "relay-copy"];
        for peer in &args.peers {
            if names.contains(&peer.name.as_str()) {
                return Err(exit::usage(anyhow!(
                    "--peer {}: that path name is taken; choose another",
                    peer.name
                )));
            }
            names.push(&peer.name);
        }
        let setting = match (&args.target, args.topology) {
            (Some(target), _) => Setting::Remote {
                target: resolve("--target", target)?,
                via: args
                    .via
                    .as_deref()
                    .map(|v| resolve("--via", v))
                    .transpose()?,
            },
            (None, Topology::Loopback) => Setting::Loopback,
            (None, Topology::Emulated) => {
                if !nix::unistd::geteuid().is_root() {
                    return Err(exit::usage(anyhow!(
                        "--topology emulated needs root (it creates network namespaces and \
                         shapes links with tc): run it with sudo"
                    )));
                }
                for tool in ["ip", "tc"] {
                    if !on_path(tool) {
                        return Err(exit::usage(anyhow!(
                            "--topology emulated needs `{tool}` (install iproute2)"
                        )));
                    }
                }
                Setting::Emulated {
                    internet: args.internet_rate,
                    vpc: args.vpc_rate,
                }
            }
        };
        if args.relay_cpu.is_some() {
            if !nix::unistd::geteuid().is_root() {
                return Err(exit::usage(anyhow!(
                    "--relay-cpu needs root (it creates a cgroup): run it with sudo"
                )));
            }
            if matches!(setting, Setting::Remote { .. }) && args.peers.is_empty() {
                return Err(exit::usage(anyhow!(
                    "--relay-cpu caps relays this command starts; with --target the relay \
                     runs elsewhere"
                )));
            }
        }
        Ok(Plan {
            size,
            runs: args.runs,
            json: args.json,
            quiet: args.quiet,
            peers: args.peers,
            relay_cpu: args.relay_cpu,
            setting,
        })
    }
}

fn resolve(flag: &str, given: &str) -> anyhow::Result<Endpoint> {
    let addr = given
        .to_socket_addrs()
        .map_err(|e| exit::usage(anyhow!("{flag} {given}: {e} (give HOST:PORT)")))?
        .next()
        .ok_or_else(|| exit::usage(anyhow!("{flag} {given}: no address")))?;
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

/// Parses `NAME=COMMAND TEMPLATE`.
pub fn parse_peer(text: &str) -> Result<Peer, String> {
    let (name, template) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME='COMMAND TEMPLATE'"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "peer name {name:?} must be letters, digits, '-', '_' or '.'"
        ));
    }
    let template = paths::Template::parse(template)?;
    Ok(Peer {
        name: name.to_owned(),
        template,
    })
}

/// Parses a tc-style rate: `116mbit`, `250Mbit`, `1gbit`, `800kbit`, `1000000bit`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("{text:?} is not a rate such as 116mbit or 1gbit")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate such as 116mbit or 1gbit"))?;
    let bits_per_second = (value * scale).round() as u64;
    if bits_per_second < 8_000 {
        return Err(format!("{text:?} is too slow (at least 8kbit)"));
    }
    Ok(Rate { bits_per_second })
}

/// Parses the fraction of one core given to each relay.
pub fn parse_cpu_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a fraction of a core such as 0.1"))?;
    if !(MIN_RELAY_CPU..=1024.0).contains(&value) {
        return Err(format!(
            "{text:?}: give a fraction of one core from {MIN_RELAY_CPU} (the kernel's smallest \
             quota, 1 ms per 100 ms) upwards"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("116mbit").unwrap().bits_per_second, 116_000_000);
        assert_eq!(parse_rate("250Mbit").unwrap().bits_per_second, 250_000_000);
        assert_eq!(
            parse_rate("1.5gbit").unwrap().bits_per_second,
            1_500_000_000
        );
        assert_eq!(parse_rate("800kbit").unwrap().bits_per_second, 800_000);
        assert!(parse_rate("116").is_err());
        assert!(parse_rate("116mbps").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1bit").is_err());
    }

    #[test]
    fn cpu_fractions() {
        assert_eq!(parse_cpu_fraction("0.1").unwrap(), 0.1);
        assert_eq!(parse_cpu_fraction("0.015").unwrap(), 0.015);
        assert!(parse_cpu_fraction("0.001").is_err());
        assert!(parse_cpu_fraction("0").is_err());
        assert!(parse_cpu_fraction("-1").is_err());
        assert!(parse_cpu_fraction("a lot").is_err());
    }

    #[test]
    fn peers() {
        let peer = parse_peer("stone=stone 127.0.0.1:{upstream} 127.0.0.1:{listen}").unwrap();
        assert_eq!(peer.name, "stone");
        assert!(parse_peer("no-equals-sign").is_err());
        assert!(parse_peer("bad name=x {listen} {upstream}").is_err());
        assert!(parse_peer("=x {listen} {upstream}").is_err());
        assert!(parse_peer("x=").is_err());
    }
}
