//! `spliceway bench` flags and the parsers of their values; `plan` checks them as a whole.

use std::path::PathBuf;

use crate::paths::Template;
use crate::plot::Metric;
use crate::units::{Burst, MIN_TBF_BURST_BYTES, Rate, parse_rate, parse_size};

/// The loopback default: the README's first command.
pub(crate) const DEFAULT_SIZE: &str = "512MiB";

/// `--internet-rate` and `--vpc-rate` when neither they nor `--link` are given: the origin's
/// measured 115.94 Mbit/s uplink, and a VPC link faster than it (as `--link home`).
pub(crate) const DEFAULT_LINK: LinkPreset = LinkPreset::Home;

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
  spliceway bench --pattern aws-cli               # as `aws s3 cp`: 10 connections, 8 MiB parts
  sudo spliceway bench --topology emulated --link direct-connect --pattern aws-cli --relay-cpu 0.1
  spliceway bench --target s3-side.example:9000 --via relay.example:9000
  spliceway bench --s3 s3://my-bucket/bench --region ap-northeast-1 --via relay.example:443
  spliceway bench --s3 s3://b --endpoint-url https://minio.lan:9000 --direction both
  spliceway bench --workload rtt --requests 20000 --message-size 64
  spliceway bench --workload connect --requests 3000 --concurrency 4
  spliceway bench --workload udp --peer socat='socat UDP4-LISTEN:{listen},fork,reuseaddr UDP4:{upstream_addr}'
  spliceway bench --size 64MiB --json --plot bench.svg > bench.json
  spliceway bench --plot-from a.json --plot-from b.json --plot out.svg --plot-metric relative
  spliceway bench --plot-from a.json --markdown
  spliceway bench --compare new=target/release/spliceway --compare old=/tmp/old/spliceway --workload connect
  spliceway bench --compare plain=spliceway --workload rtt \\
      --compare proxy='spliceway --accept-proxy v2 --accept-proxy-from 127.0.0.1'
  spliceway bench --compare relay=spliceway --compare-connect-proxy adopt=target/release/examples/connect_proxy
  spliceway bench --compare unlimited=spliceway --compare 'limited=spliceway --rate-limit-up 500mbit' --size 256MiB
  spliceway bench --compare 'route=spliceway --config route-limit.toml' --compare plain=spliceway --streams 10 \\
      --compare-peer nginx='env NGINX_UPLOAD_RATE=62500000 scripts/peers/nginx.sh {listen_addr} {upstream_addr}'
  spliceway bench --compare none=spliceway --compare-top top=spliceway --idle-connections 5000 --size 4GiB
  sudo spliceway bench --compare spliceway=target/release/spliceway --topology interception --workload connect
  spliceway bench --compare thin=/tmp/thin --compare fat=/tmp/fat --release-profile --size 1GiB
  sudo spliceway bench --topology emulated --link direct-connect --pattern aws-cli --kernel-counters

Template placeholders: {listen} {upstream} (port numbers), {listen_addr} {upstream_addr}
(ip:port), {listen_ip} {upstream_ip}. See docs/benchmarks.md.")]
pub struct BenchArgs {
    /// Bytes uploaded per run (e.g. 64MiB, 512MiB, 2GiB).
    #[arg(long, value_parser = parse_size, default_value = DEFAULT_SIZE)]
    pub(crate) size: u64,
    /// Uploads per path (default 3). Runs are interleaved across paths; the table shows
    /// medians. With --compare: rounds, each running every variant once (default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) runs: Option<u32>,
    /// Print the results as one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar, per-run lines or table on stderr.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Measure an external relay as another path: NAME='COMMAND TEMPLATE' (repeatable).
    /// The command is split with shell-word rules (not run by a shell) and must listen on
    /// {listen} and forward to {upstream}.
    #[arg(long = "peer", value_name = "NAME=TEMPLATE", value_parser = parse_peer)]
    pub(crate) peers: Vec<Peer>,
    /// Where the paths run: loopback (one host, no shaping) or emulated (network namespaces
    /// with rate-limited links standing for the internet and the VPC; needs root). With
    /// --compare also interception (the relay's three ways of finding the upstream; root).
    #[arg(long, value_enum, default_value_t = Topology::Loopback)]
    pub(crate) topology: Topology,
    // The five flags of the emulated links (--internet-rate, --vpc-rate, --link, --nic,
    // --tbf-burst) are Options without a clap default, so that `plan` can tell a flag given
    // from a default: given without `--topology emulated` they would shape nothing, and that
    // is a usage error (plan::emulation_flags). The defaults are applied there, and named in
    // the help text by hand.
    /// Rate of the emulated internet links (client <-> S3, client <-> relay host); default
    /// 116mbit. Needs --topology emulated.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(crate) internet_rate: Option<Rate>,
    /// Rate of the emulated VPC link (relay host <-> S3); default 250mbit. Needs --topology
    /// emulated.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(crate) vpc_rate: Option<Rate>,
    /// Cap each relay's CPU to this fraction of one core with a cgroup (e.g. 0.1; needs root).
    #[arg(long, value_name = "FRACTION", value_parser = parse_cpu_fraction)]
    pub(crate) relay_cpu: Option<f64>,
    /// What each run does: upload (--size in one stream), rtt (--requests round trips of
    /// --message-size bytes on one connection) or connect (--requests new connections, each
    /// sending --message-size bytes and reading them back).
    #[arg(long, value_enum, default_value_t = WorkloadKind::Upload)]
    pub(crate) workload: WorkloadKind,
    /// Round trips (rtt; default 20000) or connections (connect; default 3000) per run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) requests: Option<u64>,
    /// Bytes of each request and of its answer (rtt and connect; default 64).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) message_size: Option<u64>,
    /// Connections open at once (connect; default 1, one client making them one after the other).
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=MAX_CONCURRENCY))]
    pub(crate) concurrency: Option<u32>,
    /// Upload to a `spliceway sink` on another host instead of the local paths.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "topology")]
    pub(crate) target: Option<String>,
    /// With --target: also upload through a relay (run elsewhere) that forwards to the target.
    /// With --s3: [NAME=]HOST:PORT (repeatable; a bare HOST:PORT is named `relay`), a relay that
    /// passes TLS through to the S3 endpoint, measured as another path.
    #[arg(long, value_name = "[NAME=]HOST:PORT")]
    pub(crate) via: Vec<String>,
    /// Upload to S3 or an S3-compatible service instead of a sink, the AWS CLI's way
    /// (multipart above --part-size: --streams connections, default 10 and 8MiB): on the
    /// `direct` path and through each --via relay, interleaved. Needs s3:PutObject,
    /// s3:GetObject, s3:DeleteObject, s3:ListBucket, s3:AbortMultipartUpload on the bucket
    /// (docs/s3-benchmark.md).
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]", conflicts_with_all = ["target", "plot_from", "compare"])]
    pub(crate) s3: Option<String>,
    /// With --s3: the service's URL (an S3-compatible service; requests go path-style).
    /// Default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or `https://s3.REGION.amazonaws.com`.
    #[arg(long, value_name = "URL", requires = "s3")]
    pub(crate) endpoint_url: Option<String>,
    /// With --s3: the bucket's region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's).
    #[arg(long, value_name = "REGION", requires = "s3")]
    pub(crate) region: Option<String>,
    /// With --s3: the profile in ~/.aws/config and ~/.aws/credentials to take keys, region
    /// and ca_bundle from (default: the environment's keys, AWS_PROFILE, `default`, then an
    /// EC2 instance role through IMDSv2).
    #[arg(long, value_name = "NAME", requires = "s3")]
    pub(crate) profile: Option<String>,
    /// With --s3: up (default), down (ranged GETs of an object uploaded first) or both.
    #[arg(long, value_enum, requires = "s3")]
    pub(crate) direction: Option<S3Direction>,
    /// With --s3: keep the objects uploaded (default: each is deleted after its run).
    #[arg(long, requires = "s3")]
    pub(crate) keep: bool,
    /// Spread each upload over N concurrent connections (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) streams: Option<u32>,
    /// Send the upload as parts of SIZE, each answered by the sink before its connection sends
    /// the next (an S3 multipart upload); the connections take parts from one queue.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) part_size: Option<u64>,
    /// A named upload pattern. aws-cli: --streams 10 --part-size 8MiB, the AWS CLI's
    /// defaults; --streams or --part-size given too override that half.
    #[arg(long, value_enum)]
    pub(crate) pattern: Option<Pattern>,
    /// Both emulated link rates at once (direct-connect: --internet-rate 1gbit --vpc-rate
    /// 2gbit; home: 116mbit and 250mbit, the defaults). Not together with those flags. Needs
    /// --topology emulated.
    #[arg(long, value_enum, conflicts_with_all = ["internet_rate", "vpc_rate", "target"])]
    pub(crate) link: Option<LinkPreset>,
    /// What the emulated links' network interfaces do: veth (the default; its defaults: the
    /// sender's 64 KiB TSO packets cross whole, no GRO) or ec2 (MTU-sized frames on the wire,
    /// GRO on receive, TSO kept on the relay host's sends, as an ENA or Xen netfront NIC).
    /// Needs ethtool and --topology emulated.
    #[arg(long, value_enum, conflicts_with = "target")]
    pub(crate) nic: Option<Nic>,
    /// The emulated links' tbf bucket: auto (the default: 10 ms of each link's rate, at least
    /// 64 KiB, the minimum tc-tbf(8) gives for the rate to be reached) or a size on every link,
    /// e.g. 64KiB (the bucket of earlier versions, which billed the relay for per-packet
    /// shaping timers). Needs --topology emulated.
    #[arg(long, value_name = "SIZE|auto", value_parser = parse_burst, conflicts_with = "target")]
    pub(crate) tbf_burst: Option<Burst>,
    /// Draw the results as an SVG chart in FILE: a bar per path, upload times with a whisker
    /// from the fastest to the slowest run, or p50 over p99 latency for rtt and connect.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
    /// Do not run: draw (--plot) or tabulate (--markdown) reports saved from --json instead,
    /// one group of bars per report (repeatable).
    #[arg(long, value_name = "REPORT.json")]
    pub(crate) plot_from: Vec<PathBuf>,
    /// What --plot's bars show: seconds (uploads' default), relative (upload time relative to
    /// direct) or latency (rtt and connect, their only one).
    #[arg(long, value_enum, value_name = "METRIC")]
    pub(crate) plot_metric: Option<Metric>,
    /// The --plot chart's title (default: after what it shows).
    #[arg(long, value_name = "TEXT")]
    pub(crate) plot_title: Option<String>,
    /// With --plot-from: print each report as a Markdown table (the docs' tables) on stdout.
    #[arg(long, requires = "plot_from")]
    pub(crate) markdown: bool,
    /// Compare builds instead of paths: NAME=BINARY, optionally followed by more `relay` flags
    /// in the same argument (repeatable, two or more). Each of --runs rounds (default 5) starts
    /// every variant's `BINARY relay` on loopback with one worker and measures its CPU:
    /// --workload connect (µs per connection, --requests default 4000), rtt (µs per round
    /// trip, default 20000) or upload (CPU s/GiB, MB/s and wake-ups/s of one --size upload to
    /// a sink, over --streams connections). With `--config FILE` among its flags a variant
    /// runs as `BINARY run` with FILE (placeholders as --peer's filled in) instead.
    #[arg(long, value_name = "NAME=BINARY", value_parser = parse_variant)]
    pub(crate) compare: Vec<Variant>,
    /// With --compare --workload upload: a variant that is an HTTP CONNECT proxy started as
    /// `BINARY 127.0.0.1:PORT` (the engine's connect_proxy example), asked for a tunnel to the
    /// sink (repeatable).
    #[arg(long, value_name = "NAME=BINARY", value_parser = parse_connect_proxy)]
    pub(crate) compare_connect_proxy: Vec<Variant>,
    /// With --compare: another relay as a variant, NAME='COMMAND TEMPLATE' as --peer takes it
    /// (it listens on {listen} and forwards to {upstream}; its CPU and wake-ups are its
    /// process tree's), e.g. nginx='env NGINX_UPLOAD_RATE=62500000 scripts/peers/nginx.sh
    /// {listen_addr} {upstream_addr}' (repeatable).
    #[arg(long, value_name = "NAME=TEMPLATE", value_parser = parse_compare_peer)]
    pub(crate) compare_peer: Vec<Variant>,
    /// With --compare --workload upload: a variant as --compare's (NAME=BINARY [relay flags])
    /// watched by `BINARY top --interval 1s` through its control socket, in an 80x24 tmux pane,
    /// while the upload runs; top's own CPU is reported too. Every `relay` variant then gets a
    /// control socket (repeatable; needs tmux).
    #[arg(long, value_name = "NAME=BINARY", value_parser = parse_compare_top)]
    pub(crate) compare_top: Vec<Variant>,
    /// With --compare --workload upload: connections held open through each variant's relay
    /// during every round, sending nothing (what --compare-top's listings walk; up to 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) idle_connections: Option<u32>,
    /// With --compare: the release-profile comparison instead: each binary's size (as built and
    /// stripped), start-up (`--version`, `check`; --starts runs each) and the loopback bench's
    /// relay CPU per GiB (`BINARY bench --size SIZE --runs 1 --json`) in --runs rounds.
    #[arg(long)]
    pub(crate) release_profile: bool,
    /// With --release-profile: start-ups timed per binary and command (default 200).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) starts: Option<u32>,
    /// With --topology emulated: after each run's line, the kernel's packet work behind it
    /// (IP and TCP counters of each namespace, the relay host's veth links, softirq and
    /// ksoftirqd ticks) on stderr.
    #[arg(long)]
    pub(crate) kernel_counters: bool,
}

/// Parses `--tbf-burst`: `auto` or a size of at least 64 KiB (one GSO packet).
pub(crate) fn parse_burst(text: &str) -> Result<Burst, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(Burst::Auto);
    }
    let bytes = parse_size(text)?;
    if bytes < MIN_TBF_BURST_BYTES {
        return Err(format!(
            "{text:?}: a tbf bucket must hold a whole GSO packet, at least {MIN_TBF_BURST_BYTES} bytes"
        ));
    }
    Ok(Burst::Bytes(bytes))
}

/// What `--s3` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum S3Direction {
    /// Uploads.
    Up,
    /// Downloads (ranged GETs) of an object uploaded once, untimed.
    Down,
    /// An upload, then a download of it, in each run.
    Both,
}

/// A named upload pattern (`--pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Pattern {
    /// `aws s3 cp` of a large file: 10 connections, 8 MiB parts.
    AwsCli,
}

/// Named rates for the emulated links (`--link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LinkPreset {
    /// An office on AWS Direct Connect: 1 Gbit/s to the VPC and S3, 2 Gbit/s inside the VPC.
    DirectConnect,
    /// The origin's home uplink (115.94 Mbit/s measured) and a 250 Mbit/s VPC link.
    Home,
}

impl LinkPreset {
    /// (internet rate, VPC rate) as `--internet-rate`/`--vpc-rate` would give them.
    pub(crate) fn rates(self) -> (Rate, Rate) {
        let (internet, vpc) = match self {
            LinkPreset::DirectConnect => (1_000_000_000, 2_000_000_000),
            LinkPreset::Home => (116_000_000, 250_000_000),
        };
        (
            Rate {
                bits_per_second: internet,
            },
            Rate {
                bits_per_second: vpc,
            },
        )
    }
}

/// The network interfaces of the emulated topology (`--nic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Nic {
    /// veth as created: TSO/GSO on, GRO off.
    Veth,
    /// As an EC2 instance's NIC: GRO on every end, TSO off outside the instance.
    Ec2,
}

impl BenchArgs {
    /// Whether `--quiet` was given: the caller then logs warnings and errors only.
    pub fn quiet(&self) -> bool {
        self.quiet
    }
}

/// The most connections `--concurrency` opens at once (a thread each).
pub(crate) const MAX_CONCURRENCY: i64 = 256;

/// What each run of a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkloadKind {
    /// One upload of --size, timed to end of stream at the sink.
    Upload,
    /// Request/response round trips on one connection.
    Rtt,
    /// New connections, one small exchange each.
    Connect,
    /// UDP datagrams through `relay --udp` and the peers: datagrams per second and relay CPU
    /// per datagram, 64 B and 1,400 B (or --message-size), 1 and 16 clients (or
    /// --concurrency), --requests answers per run (default 40000). Loopback only.
    Udp,
}

/// Where the paths run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Topology {
    /// Everything on this host over 127.0.0.1.
    Loopback,
    /// Network namespaces client, relay and s3 joined by tbf-shaped veth links.
    Emulated,
    /// With --compare only (root, nftables): each variant's relay with a fixed upstream,
    /// reading the original destination of REDIRECTed connections, and as an HTTP CONNECT
    /// proxy, in namespaces client, relay and server (docs/benchmarks.md).
    Interception,
}

/// An external relay to measure: a name and its command template.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) template: Template,
}

/// Parses `NAME=COMMAND TEMPLATE`.
pub(crate) fn parse_peer(text: &str) -> Result<Peer, String> {
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
    let template = Template::parse(template)?;
    Ok(Peer {
        name: name.to_owned(),
        template,
    })
}

/// One side of a `--compare` comparison.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) name: String,
    /// The binary, then extra `relay` flags (split with shell-word rules).
    pub(crate) argv: Vec<String>,
    /// An HTTP CONNECT proxy (`--compare-connect-proxy`) rather than `spliceway relay`.
    pub(crate) connect_proxy: bool,
    /// Another relay's command (`--compare-peer`): `argv` is its words, placeholders and all.
    pub(crate) peer: Option<Template>,
    /// Watched by `BINARY top` during the upload (`--compare-top`).
    pub(crate) observed: bool,
}

impl Variant {
    pub(crate) fn binary(&self) -> &str {
        &self.argv[0]
    }

    pub(crate) fn extra(&self) -> &[String] {
        &self.argv[1..]
    }

    /// The file after `--config` in the variant's flags: the variant then runs as
    /// `BINARY run --config FILE` (its placeholders filled), for what `relay` has no flag for
    /// (`route_rate_limit`, a burst).
    pub(crate) fn config(&self) -> Option<&str> {
        if self.peer.is_some() || self.connect_proxy {
            return None;
        }
        let extra = self.extra();
        let at = extra.iter().position(|a| a == "--config")?;
        extra.get(at + 1).map(String::as_str)
    }

    /// The bytes a client sends before its payload: a PROXY header if the variant accepts one.
    pub(crate) fn header(&self) -> Vec<u8> {
        let extra = self.extra();
        let Some(at) = extra.iter().position(|a| a == "--accept-proxy") else {
            return Vec::new();
        };
        if extra.get(at + 1).map(String::as_str) == Some("v1") {
            return b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n".to_vec();
        }
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        header.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
        header.extend_from_slice(&51000u16.to_be_bytes());
        header.extend_from_slice(&443u16.to_be_bytes());
        header
    }
}

/// Parses `NAME=BINARY[ EXTRA RELAY FLAGS]`.
pub(crate) fn parse_variant(text: &str) -> Result<Variant, String> {
    let (name, command) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=BINARY"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{text:?}: the name before '=' is empty"));
    }
    let argv = shlex::split(command).ok_or_else(|| format!("{command:?}: unbalanced quotes"))?;
    if argv.is_empty() {
        return Err(format!("{text:?}: no binary after '='"));
    }
    Ok(Variant {
        name: name.to_owned(),
        argv,
        connect_proxy: false,
        peer: None,
        observed: false,
    })
}

/// Parses `--compare-top NAME=BINARY[ EXTRA RELAY FLAGS]`.
pub(crate) fn parse_compare_top(text: &str) -> Result<Variant, String> {
    let mut variant = parse_variant(text)?;
    variant.observed = true;
    Ok(variant)
}

/// Parses `--compare-peer NAME='COMMAND TEMPLATE'` (the rules of `--peer`).
pub(crate) fn parse_compare_peer(text: &str) -> Result<Variant, String> {
    let peer = parse_peer(text)?;
    Ok(Variant {
        name: peer.name,
        argv: peer.template.words.clone(),
        connect_proxy: false,
        peer: Some(peer.template),
        observed: false,
    })
}

/// Parses `--compare-connect-proxy NAME=BINARY`.
pub(crate) fn parse_connect_proxy(text: &str) -> Result<Variant, String> {
    let mut variant = parse_variant(text)?;
    variant.connect_proxy = true;
    Ok(variant)
}

/// Parses the fraction of one core given to each relay.
pub(crate) fn parse_cpu_fraction(text: &str) -> Result<f64, String> {
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
    fn cpu_fractions() {
        assert_eq!(parse_cpu_fraction("0.1").unwrap(), 0.1);
        assert_eq!(parse_cpu_fraction("0.015").unwrap(), 0.015);
        assert!(parse_cpu_fraction("0.001").is_err());
        assert!(parse_cpu_fraction("0").is_err());
        assert!(parse_cpu_fraction("-1").is_err());
        assert!(parse_cpu_fraction("a lot").is_err());
    }

    #[test]
    fn link_presets_parse() {
        for preset in [LinkPreset::DirectConnect, LinkPreset::Home] {
            let (internet, vpc) = preset.rates();
            assert!(vpc.bits_per_second > internet.bits_per_second);
        }
        assert_eq!(
            LinkPreset::DirectConnect.rates(),
            (parse_rate("1gbit").unwrap(), parse_rate("2gbit").unwrap())
        );
        assert_eq!(
            LinkPreset::Home.rates(),
            (
                parse_rate("116mbit").unwrap(),
                parse_rate("250mbit").unwrap()
            )
        );
    }

    #[test]
    fn bursts() {
        assert_eq!(parse_burst("auto").unwrap(), Burst::Auto);
        assert_eq!(parse_burst("64KiB").unwrap(), Burst::Bytes(65_536));
        assert_eq!(parse_burst("2MB").unwrap(), Burst::Bytes(2_000_000));
        assert!(parse_burst("1500").is_err());
        assert!(parse_burst("lots").is_err());
    }

    #[test]
    fn variants_parse_with_their_relay_flags() {
        let v = parse_variant(
            "proxy=target/release/spliceway --accept-proxy v2 --accept-proxy-from 127.0.0.1",
        )
        .unwrap();
        assert_eq!(v.name, "proxy");
        assert_eq!(v.binary(), "target/release/spliceway");
        assert_eq!(v.extra().len(), 4);
        let header = v.header();
        assert_eq!(header.len(), 16 + 12);
        assert!(header.starts_with(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"));
        let v1 = parse_variant("a=bin --accept-proxy v1").unwrap();
        assert!(v1.header().starts_with(b"PROXY TCP4 "));
        assert!(parse_variant("plain=bin").unwrap().header().is_empty());
        assert!(parse_variant("no-equals").is_err());
        assert!(parse_variant("=bin").is_err());
        assert!(parse_variant("a=").is_err());
        assert!(parse_connect_proxy("p=x").unwrap().connect_proxy);
        let limited = parse_variant("route=bin --config 'my dir/route.toml'").unwrap();
        assert_eq!(limited.config(), Some("my dir/route.toml"));
        assert_eq!(parse_variant("plain=bin").unwrap().config(), None);
        let peer =
            parse_compare_peer("nginx=env X=1 nginx.sh {listen_addr} {upstream_addr}").unwrap();
        assert_eq!(peer.name, "nginx");
        assert_eq!(peer.binary(), "env");
        assert!(peer.peer.is_some() && peer.config().is_none());
        assert!(parse_compare_peer("nginx=nginx.sh 127.0.0.1:80").is_err());
        let top = parse_compare_top("top=bin --mode copy").unwrap();
        assert!(top.observed && top.extra() == ["--mode", "copy"]);
        assert!(!parse_variant("plain=bin").unwrap().observed);
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
