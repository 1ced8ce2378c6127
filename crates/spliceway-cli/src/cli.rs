//! Command-line definitions (clap). The man page and shell completions are generated from
//! these same definitions (`spliceway man`, `spliceway completions SHELL`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use spliceway::PoolLimits;
use spliceway::defaults::{
    DEFAULT_BULK_LOW_WATER_BYTES, DEFAULT_CONNECT_TIMEOUT, DEFAULT_COPY_BUFFER_BYTES,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HALF_CLOSE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PIPE_SIZE_BYTES, DEFAULT_PROXY_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};

use crate::logging::LogFormat;

/// A zero-copy TCP relay for Linux: moves bytes between sockets with splice(2), kernel to
/// kernel, so the relay is not the bottleneck.
#[derive(Debug, Parser)]
#[command(name = "spliceway", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay one listen address to one upstream (host:port or ip:port).
    ///
    /// Example: spliceway relay 0.0.0.0:443 s3-ap-northeast-1.amazonaws.com:443
    Relay(Box<RelayArgs>),
    /// Run a relay from a configuration file (many routes, SNI, access lists, metrics).
    Run(ConfigArgs),
    /// Check a configuration file and print a summary of its routes.
    Check(CheckArgs),
    /// Replace the running relay by a new process (the binary now installed) without refusing
    /// or dropping a connection: it takes over the listening sockets, the old one drains.
    /// Prints `pid N` of the new process; exits 1, the old relay still serving, if it fails.
    Upgrade(UpgradeArgs),
    /// What the running relay is doing: version, uptime, routes, connections open, totals,
    /// current rates, draining or not, the last reload (over its control socket).
    Status(StatusArgs),
    /// The running relay's live connections, one a line: id, route, client, upstream, phase,
    /// age, bytes and rates each way, mode; with --udp its UDP sessions.
    Connections(ConnectionsArgs),
    /// Reset live connections of the running relay (both peers see a reset), by id or by
    /// client network; logged by the relay with who asked.
    Close(CloseArgs),
    /// A live view of the running relay: per-route rates and the busiest connections (and UDP
    /// sessions), refreshed every second; q quits.
    Top(TopArgs),
    /// Benchmark a 512 MiB upload direct, through spliceway (splice and copy), and through peers.
    Bench(Box<spliceway_bench::BenchArgs>),
    /// The far end of a benchmark: read each connection to its end, answer its size and SHA-256.
    Sink {
        #[command(flatten)]
        args: spliceway_bench::SinkArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// A relay that flips the first byte each client sends (for the benchmark's tests).
    #[command(hide = true)]
    CorruptingRelay(spliceway_bench::CorruptingRelayArgs),
    /// Soak a `spliceway run` under a mixed load for minutes, then judge it (a developer's
    /// tool, run by scripts/soak.sh; see docs/reliability.md#soak).
    #[command(hide = true)]
    Soak(spliceway_bench::SoakArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): spliceway(1); with a command's name its own page,
    /// spliceway-COMMAND(1) (e.g. `spliceway man relay`); with `spliceway.toml` the
    /// configuration file's, spliceway.toml(5). Try `spliceway man run | man -l -`.
    Man {
        /// relay, run, check, upgrade, bench, sink, completions or spliceway.toml (default:
        /// the main page).
        #[arg(value_name = "PAGE")]
        page: Option<String>,
    },
}

/// Logging flags of `relay` and `sink`, whose level starts at the program's default.
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// More detail; repeat for more: -v logs each closed connection, -vv also each accepted one
    /// (with peer and chosen upstream address), -vvv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less detail (-q: warnings and errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    /// Log format.
    #[arg(long, value_parser = log_format_parser(), default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// `spliceway relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on: an IP and a port, e.g. 0.0.0.0:443 or [::]:443.
    // The help text is this comment, verbatim: `[::]` stays as users type it, not as a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    pub listen: String,
    /// Where to relay to: host:port or ip:port (host names are resolved per connection; may be
    /// left out when --upstream gives the upstreams);
    /// `original-destination`: the address each client dialled before an nftables REDIRECT,
    /// DNAT or TPROXY rule sent it here (needs --upstream-allow); `http-connect`: the target of
    /// each client's HTTP CONNECT request (HTTPS_PROXY; needs --connect-allow and
    /// --upstream-allow).
    pub upstream: Option<String>,
    /// The ranges the relay may reach (CIDR; repeat or separate with commas), as
    /// `upstream_allow` in the configuration file. Required with original-destination and
    /// http-connect, where they are the only ranges reached; otherwise they admit ranges the
    /// address policy refuses (link-local ...).
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',')]
    pub upstream_allow: Vec<ipnet::IpNet>,
    /// With http-connect: the targets relayed, a name pattern with its port (e.g.
    /// '*.amazonaws.com:443'; repeat or separate with commas), as `connect_allow`.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub connect_allow: Vec<spliceway::http_connect::ConnectPattern>,
    /// Another upstream (host:port or ip:port; repeat for more): connections are balanced over
    /// every upstream given (see --balance), an upstream that refuses a connect is skipped for
    /// 10 s (max_fails 1, fail_timeout 10s) and the client's connection moves on to the next.
    /// With --udp, sessions are balanced, and an ICMP error ending a session counts as a
    /// refused connect.
    #[arg(long = "upstream", id = "more_upstreams", value_name = "HOST:PORT")]
    pub more_upstreams: Vec<String>,
    /// How connections spread over several upstreams: round-robin, least-connections or
    /// client-hash (as `balance` in the configuration file).
    #[arg(long, value_name = "BALANCE", default_value = "round-robin", value_parser = ["round-robin", "least-connections", "client-hash"])]
    pub balance: String,
    /// Client networks allowed (CIDR or a single address; repeat or separate with commas), as
    /// `allow` in the configuration file. Without it every client not denied is relayed: an
    /// open relay to the upstream for whoever reaches the listen address.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',')]
    pub allow: Vec<ipnet::IpNet>,
    /// Client networks refused, checked before --allow (as `deny` in the configuration file).
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',')]
    pub deny: Vec<ipnet::IpNet>,
    /// When started as root: switch to this user (name or uid) once the listening sockets are
    /// bound, keeping only CAP_NET_BIND_SERVICE, as `user` in the configuration file.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The group to switch to with --user (name or gid; default: the user's primary group).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Relay UDP datagrams instead of TCP connections (as `protocol = "udp"` in the
    /// configuration file): each client address is a session with its own upstream socket.
    #[arg(long, conflicts_with_all = ["accept_proxy", "send_proxy"])]
    pub udp: bool,
    /// With --udp: end a session silent both ways this long (as `udp_idle_timeout`).
    #[arg(long, value_parser = parse_duration, requires = "udp",
          default_value_t = Delay(spliceway::defaults::DEFAULT_UDP_IDLE_TIMEOUT))]
    pub udp_idle_timeout: Delay,
    /// With --udp: most sessions at once (at least 1); datagrams of new clients beyond it
    /// are dropped and counted.
    #[arg(long, value_parser = parse_limit, requires = "udp")]
    pub max_sessions: Option<usize>,
    /// With --udp: most sessions of one client IP address at once (at least 1).
    #[arg(long, value_parser = parse_limit, requires = "udp")]
    pub max_sessions_per_client: Option<usize>,
    /// With --udp: answers the upstream gives each client datagram (as `udp_responses`, 0 to
    /// 1000): a session ends once each of its datagrams has had them (1 for DNS), instead of
    /// idling out; 0: no answer is expected, a session ends once its datagrams have left.
    #[arg(long, value_name = "N", requires = "udp",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub udp_responses: Option<u32>,
    #[command(flatten)]
    pub options: RelayOptions,
    /// Listen on this unix socket (mode 0600) for `spliceway upgrade --control-socket PATH`.
    #[arg(long, value_name = "PATH", value_parser = parse_control_socket)]
    pub control_socket: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address (e.g.
    /// 127.0.0.1:9898), as `metrics` in the configuration file.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Options of `spliceway relay`.
#[derive(Debug, Args, Clone)]
pub struct RelayOptions {
    /// How bytes are moved: splice (kernel to kernel) or copy (through a user-space buffer).
    #[arg(long, value_parser = parse_mode, default_value_t = spliceway::Mode::default())]
    pub mode: spliceway::Mode,
    /// Pipe size per direction in splice mode (e.g. 64KiB, 256KiB, 1MiB).
    #[arg(long, value_parser = parse_size, default_value_t = Size(DEFAULT_PIPE_SIZE_BYTES as u64))]
    pub pipe_size: Size,
    /// Buffer size per direction in copy mode.
    #[arg(long, value_parser = parse_size, default_value_t = Size(DEFAULT_COPY_BUFFER_BYTES as u64))]
    pub buffer_size: Size,
    /// Empty pipes each worker keeps for reuse (a busy direction takes one, an idle one holds
    /// none).
    #[arg(long, default_value_t = PoolLimits::default().max_idle_pipes)]
    pub pool_idle_pipes: usize,
    /// Total capacity of the full-size pipes each worker holds; past it new transfers get
    /// 16 KiB pipes.
    #[arg(long, value_parser = parse_size,
          default_value_t = Size(PoolLimits::default().pipe_budget_bytes as u64))]
    pub pipe_budget: Size,
    /// Once a transfer is in bulk, wake up only when this many bytes are queued (SO_RCVLOWAT;
    /// fewer wake-ups at link speed); 0 turns it off.
    #[arg(long, value_parser = parse_size_or_zero,
          default_value_t = Size(DEFAULT_BULK_LOW_WATER_BYTES as u64))]
    pub bulk_low_water: Size,
    /// Fail connections instead of falling back to copy mode if splice is unsupported.
    #[arg(long)]
    pub require_splice: bool,
    /// Time allowed to resolve and connect to the upstream, per address tried (e.g. 10s).
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_CONNECT_TIMEOUT))]
    pub connect_timeout: Delay,
    /// Reset a connection after this long without a byte in either direction.
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout: Delay,
    /// Reset a connection when one direction has ended and the other stays silent this long.
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_HALF_CLOSE_TIMEOUT))]
    pub half_close_timeout: Delay,
    /// On SIGINT/SIGTERM, wait this long for open connections before resetting them.
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_DRAIN_TIMEOUT))]
    pub drain_timeout: Delay,
    /// On SIGINT/SIGTERM, keep accepting this long while /readyz already answers 503, so a
    /// load balancer can stop sending clients first (e.g. 10s); then the drain timeout runs.
    #[arg(long, value_parser = parse_duration_or_zero, default_value_t = Delay(Duration::ZERO))]
    pub drain_delay: Delay,
    /// Read a PROXY protocol header (v1, v2 or any) from each client first; its client
    /// address is the one logged and judged. Connections without a valid one are reset.
    /// Needs --accept-proxy-from.
    #[arg(long, value_name = "VERSION", requires = "accept_proxy_from")]
    pub accept_proxy: Option<spliceway::proxy_protocol::Accept>,
    /// The peers allowed to send a PROXY header: the load balancers' addresses or networks
    /// (CIDR, repeat or separate with commas). Any other peer is reset at once. To believe
    /// anyone (any client could then choose its address), write 0.0.0.0/0,::/0.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',',
          requires = "accept_proxy")]
    pub accept_proxy_from: Vec<ipnet::IpNet>,
    /// Time a client has to send its whole PROXY protocol header.
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_PROXY_TIMEOUT))]
    pub proxy_timeout: Delay,
    /// With http-connect: time a client has to send its whole CONNECT request (answered 400
    /// after it).
    #[arg(long, value_parser = parse_duration, default_value_t = Delay(DEFAULT_REQUEST_TIMEOUT))]
    pub request_timeout: Delay,
    /// The source address of upstream connections: auto (the kernel's choice), client (the
    /// client's own address; IP_TRANSPARENT, needs CAP_NET_ADMIN and the answers routed back
    /// through the relay) or an IP address of this host, as `source`.
    #[arg(long, value_name = "SOURCE", default_value_t = spliceway::Source::Auto)]
    pub source: spliceway::Source,
    /// Listen with IP_TRANSPARENT (needs CAP_NET_ADMIN) so that an nftables TPROXY rule can
    /// deliver connections addressed to other hosts; with original-destination.
    #[arg(long)]
    pub transparent: bool,
    /// Write a PROXY protocol header (v1 or v2) with the client's address to each upstream
    /// before the payload.
    #[arg(long, value_name = "VERSION")]
    pub send_proxy: Option<spliceway::proxy_protocol::Version>,
    /// Worker threads (event loops); 0 = one per CPU.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
    /// Most connections held at once (at least 1); at the limit new clients wait in the
    /// kernel's backlog.
    #[arg(long, value_parser = parse_limit)]
    pub max_connections: Option<usize>,
    /// Bandwidth limit of each connection from client to upstream, in bits (600mbit, 1gbit)
    /// or bytes (75MB) a second, as `rate_limit.up` in the configuration file. Splice stays
    /// zero copy.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate_limit_up: Option<spliceway::Rate>,
    /// Bandwidth limit of each connection from upstream to client (as --rate-limit-up).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate_limit_down: Option<spliceway::Rate>,
    /// Measurement only (docs/rate-limits.md): enforce --rate-limit-up/--rate-limit-down with
    /// the kernel's SO_MAX_PACING_RATE on the sending sockets when no shared limit applies
    /// (auto, the default), always with the relay's token buckets (bucket), or always with
    /// the kernel's pacing (kernel-pacing).
    #[arg(long, value_name = "HOW", default_value = "auto", hide = true,
          value_parser = ["auto", "bucket", "kernel-pacing"])]
    pub rate_limit_by: String,
    /// Enable TCP keepalive on both sockets with this idle time (e.g. 60s; 1s to 32767s, the
    /// kernel's range).
    #[arg(long, value_parser = parse_keepalive)]
    pub keepalive: Option<Delay>,
    /// Leave Nagle's algorithm on (TCP_NODELAY is set on both sockets by default).
    #[arg(long)]
    pub no_nodelay: bool,
    /// TCP congestion control on both sockets (e.g. cubic, bbr); default: the system's
    /// (net.ipv4.tcp_congestion_control). See docs/benchmark-results.md for what it changes.
    #[arg(long, value_name = "NAME")]
    pub congestion: Option<String>,
}

/// `spliceway upgrade`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct UpgradeArgs {
    /// The running relay's configuration file (its control_socket is used).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The running relay's control socket.
    #[arg(long, value_name = "PATH", value_parser = parse_control_socket)]
    pub control_socket: Option<PathBuf>,
}

/// How the observing commands find the running relay, as `spliceway upgrade` does: its
/// control socket, or the configuration file that names it (default: the default file).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ControlArgs {
    /// The running relay's configuration file (its control_socket is used); default
    /// /etc/spliceway/spliceway.toml.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The running relay's control socket.
    #[arg(long, value_name = "PATH", value_parser = parse_control_socket)]
    pub control_socket: Option<PathBuf>,
}

/// `spliceway status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print the relay's answer as JSON (one object).
    #[arg(long)]
    pub json: bool,
}

/// The order of `spliceway connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortArg {
    /// Oldest first.
    Age,
    /// Most bytes (both ways) first.
    Bytes,
    /// Fastest (both ways, over the last seconds) first.
    Rate,
}

impl SortArg {
    pub fn as_str(self) -> &'static str {
        match self {
            SortArg::Age => "age",
            SortArg::Bytes => "bytes",
            SortArg::Rate => "rate",
        }
    }
}

/// `spliceway connections`.
#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Only this route's connections.
    #[arg(long, value_name = "ROUTE")]
    pub route: Option<String>,
    /// Only clients in this network (CIDR) or with this address.
    #[arg(long, value_name = "CIDR")]
    pub client: Option<String>,
    /// The order.
    #[arg(long, value_enum, default_value = "age")]
    pub sort: SortArg,
    /// At most this many.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array of objects (id, route, client, via, upstream, phase, age_seconds,
    /// bytes_up, bytes_down, rate_up, rate_down, mode).
    #[arg(long)]
    pub json: bool,
    /// List the UDP routes' sessions instead: route, client, upstream, age, idle time,
    /// datagrams and bytes each way (--sort rate orders by bytes: sessions have no rates); with
    /// --json an array of objects (route, client, upstream, age_seconds, idle_seconds,
    /// datagrams_up, bytes_up, datagrams_down, bytes_down).
    #[arg(long)]
    pub udp: bool,
}

/// `spliceway close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// The connections' ids (as `spliceway connections` shows them).
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["client", "route", "udp"],
        conflicts_with_all = ["client", "route", "udp"]
    )]
    pub ids: Vec<u64>,
    /// Every connection from this network (CIDR) or address instead.
    #[arg(long, value_name = "CIDR")]
    pub client: Option<String>,
    /// Every connection of this route instead (with --client: of both).
    #[arg(long, value_name = "ROUTE")]
    pub route: Option<String>,
    /// End UDP sessions instead (selected by --client and --route): the client's next
    /// datagram opens a new session, to the route's upstreams as they are now.
    #[arg(long)]
    pub udp: bool,
    /// Print the relay's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `spliceway top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
}

/// `--interval`: a duration of 100ms to an hour.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err("between 100ms and 1h".into());
    }
    Ok(d)
}

/// `--control-socket`: as `control_socket` in the configuration.
fn parse_control_socket(text: &str) -> Result<PathBuf, String> {
    spliceway_config::control_socket_path(text)
}

/// `spliceway run`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(flatten)]
    pub log: RunLogArgs,
}

/// Where `run` and `check` read their file unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/spliceway/spliceway.toml";

/// Logging flags of `run`: they shift the configuration file's `log_level` and `log_format`
/// rather than set them (the same names as [`LogArgs`], with help that says so).
#[derive(Debug, Args, Clone)]
pub struct RunLogArgs {
    /// One step more detail than the file's log_level; repeat for more (notice, info, debug,
    /// trace): info logs each closed connection, debug also each accepted one.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less detail, whatever log_level says: -q warnings and errors only, -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Log format; json here or log_format = "json" in the file gives JSON lines.
    #[arg(long, value_parser = log_format_parser(), default_value = "text")]
    pub log_format: LogFormat,
}

/// `spliceway check`: it reads the file and prints; it logs nothing.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print nothing when the file is valid (errors and warnings still go to stderr; the exit
    /// status tells: 0 valid, 78 not).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also resolve every upstream name now, as `run` does at start-up (which exits 2 when one
    /// does not resolve); prints the addresses found.
    #[arg(long)]
    pub resolve: bool,
}

/// A size given on the command line, in bytes; shown in help the way it is typed (`512KiB`),
/// so that defaults can come from the library's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 > 0 && self.0.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A duration given on the command line; shown in help as humantime writes it (`10s`, `5m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay(pub Duration);

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Parses rates such as `600mbit` or `75MB` (a second), as the configuration file reads them.
pub fn parse_rate(text: &str) -> Result<spliceway::Rate, String> {
    let bytes = spliceway_config::parse_rate(text).map_err(|e| e.to_string())?;
    spliceway::Rate::bytes_per_second(bytes).ok_or_else(|| "a rate must be more than zero".into())
}

/// Parses sizes such as `65536`, `64KiB`, `1MiB`, `2GiB` (and decimal `64KB`), as the
/// configuration file reads them; a bare `512K` is refused as ambiguous.
pub fn parse_size(text: &str) -> Result<Size, String> {
    let bytes = spliceway_config::parse_size(text).map_err(|e| e.to_string())?;
    if bytes == 0 {
        return Err("a size must be more than zero".into());
    }
    Ok(Size(bytes))
}

/// Like [`parse_size`], but 0 is allowed (meaning "off").
pub fn parse_size_or_zero(text: &str) -> Result<Size, String> {
    if text.trim() == "0" {
        return Ok(Size(0));
    }
    parse_size(text)
}

/// Parses durations such as `500ms`, `10s`, `5m`, `1h`, up to the configuration's
/// [`MAX_TIMEOUT`](spliceway_config::MAX_TIMEOUT).
pub fn parse_duration(text: &str) -> Result<Delay, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 500ms, 10s or 5m ({e})"))?;
    if d.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    if d > spliceway_config::MAX_TIMEOUT {
        return Err(format!(
            "{text:?} is longer than the longest time accepted, {}",
            Delay(spliceway_config::MAX_TIMEOUT)
        ));
    }
    Ok(Delay(d))
}

/// Like [`parse_duration`], but zero is allowed (meaning "none").
pub fn parse_duration_or_zero(text: &str) -> Result<Delay, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Ok(Delay(d)),
        _ => parse_duration(text),
    }
}

/// A keepalive idle time: a duration the kernel takes for `TCP_KEEPIDLE`.
fn parse_keepalive(text: &str) -> Result<Delay, String> {
    let d = parse_duration(text)?;
    spliceway::check::check_keepalive(d.0).map_err(|e| e.to_string())?;
    Ok(d)
}

/// `--threads`: 0 (one per CPU) to the configuration's `MAX_THREADS`.
fn parse_threads(text: &str) -> Result<usize, String> {
    let max = spliceway_config::MAX_THREADS;
    match text.trim().parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of threads from 0 to {max}"
        )),
    }
}

/// `--max-connections`: at least 1, as in the configuration file (0 would never accept).
fn parse_limit(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1 (leave it out for no limit)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a number ({e})")),
    }
}

/// `--log-format`: the names of the configuration's [`LogFormat`], each with a line of help.
fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    let help = |format| match format {
        LogFormat::Text => "Human-readable lines",
        LogFormat::Json => "One JSON object per line",
        _ => "",
    };
    PossibleValuesParser::new(
        LogFormat::ALL.map(|(name, format)| PossibleValue::new(name).help(help(format))),
    )
    .map(|name| LogFormat::from_name(&name).unwrap_or_default())
}

/// A network in CIDR notation, or a single address.
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|e| {
            text.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| e)
        })
        .map_err(|e| format!("invalid CIDR {text:?}: {e} (e.g. 10.0.0.0/8 or 192.0.2.7)"))
}

fn parse_mode(text: &str) -> Result<spliceway::Mode, spliceway::ModeError> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256KiB").unwrap(), Size(256 * 1024));
        assert_eq!(parse_size("1MiB").unwrap(), Size(1 << 20));
        assert_eq!(parse_size("65536").unwrap(), Size(65536));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        // Issue 25: `512K` was read as 512,000 bytes; KiB and KB are taken as written.
        assert_eq!(parse_size("512KB").unwrap(), Size(512_000));
        assert!(parse_size("512K").unwrap_err().contains("write 512KiB"));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Delay(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("5m").unwrap(),
            Delay(Duration::from_secs(300))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("7days").is_ok());
        assert!(parse_duration("8days").is_err());
        assert!(parse_keepalive("32767s").is_ok());
        assert!(parse_keepalive("32768s").is_err());
        assert_eq!(parse_threads("1024"), Ok(1024));
        assert!(parse_threads("1025").is_err());
        assert!(parse_limit("0").is_err());
        assert_eq!(parse_limit("1"), Ok(1));
    }

    #[test]
    fn defaults_are_the_librarys_and_read_as_typed() {
        let cli =
            Cli::try_parse_from(["spliceway", "relay", "127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        let Command::Relay(args) = cli.command else {
            panic!("not relay");
        };
        let o = args.options;
        assert_eq!(o.pipe_size, Size(DEFAULT_PIPE_SIZE_BYTES as u64));
        assert_eq!(o.connect_timeout, Delay(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(o.pool_idle_pipes, PoolLimits::default().max_idle_pipes);
        assert_eq!(Size(512 * 1024).to_string(), "512KiB");
        assert_eq!(Size(256 << 20).to_string(), "256MiB");
        assert_eq!(Size(1000).to_string(), "1000");
        assert_eq!(Size(0).to_string(), "0");
        assert_eq!(Delay(Duration::from_secs(300)).to_string(), "5m");
    }
}
