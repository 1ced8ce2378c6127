//! `spliceway relay LISTEN UPSTREAM`: one route from the command line.

use anyhow::Context as _;
use spliceway::internal::ConnectionLimitBy;
use spliceway::{
    AccessList, Balance, ConnectTable, ConnectionOptions, PoolLimits, Protocol, Relay, RelayHandle,
    Route, UdpOptions, Upstream, UpstreamAddr, UpstreamGroup, UpstreamServer, parse_listen_addr,
};

use crate::cli::{RelayArgs, RelayOptions};
use crate::exit;
use crate::logging::{self, LogControl};
use crate::privileges;
use crate::signals::{self, SignalActions};

/// Turns the command-line options into the library's connection options.
pub fn connection_options(options: &RelayOptions) -> ConnectionOptions {
    let mut o = ConnectionOptions::default();
    o.mode = options.mode;
    o.pipe_size = options.pipe_size.0 as usize;
    o.copy_buffer_size = options.buffer_size.0 as usize;
    o.require_splice = options.require_splice;
    o.connect_timeout = options.connect_timeout.0;
    o.idle_timeout = options.idle_timeout.0;
    o.half_close_timeout = options.half_close_timeout.0;
    o.keepalive = options.keepalive.map(|k| k.0);
    o.nodelay = !options.no_nodelay;
    o.bulk_low_water = options.bulk_low_water.0 as usize;
    o.congestion = options.congestion.clone();
    o.accept_proxy = options.accept_proxy;
    o.proxy_timeout = options.proxy_timeout.0;
    o.send_proxy = options.send_proxy;
    o.source = options.source;
    o.transparent = options.transparent;
    if options.rate_limit_up.is_some() || options.rate_limit_down.is_some() {
        o.rate_limit = Some(spliceway::RateLimit::new(
            options.rate_limit_up,
            options.rate_limit_down,
        ));
    }
    let by = match options.rate_limit_by.as_str() {
        "bucket" => ConnectionLimitBy::Bucket,
        "kernel-pacing" => ConnectionLimitBy::KernelPacing,
        _ => ConnectionLimitBy::Auto,
    };
    spliceway::internal::set_connection_limit_by(&mut o, by);
    o
}

/// The `UPSTREAM` argument: an address, or one of the two ways to let the client choose.
fn upstream_of(args: &RelayArgs) -> anyhow::Result<Upstream> {
    let needs_allow = |what: &str| {
        if args.upstream_allow.is_empty() {
            Err(exit::usage(anyhow::anyhow!(
                "{what} needs --upstream-allow CIDR: the ranges the relay may reach (e.g. the \
                 S3 prefix list's); without it the relay would be an open relay"
            )))
        } else {
            Ok(())
        }
    };
    let chosen_by_client = args
        .upstream
        .as_deref()
        .filter(|u| matches!(*u, "original-destination" | "http-connect"));
    if let (Some(what), Some(_)) = (chosen_by_client, args.more_upstreams.first()) {
        return Err(exit::usage(anyhow::anyhow!(
            "--upstream adds fixed upstreams: it cannot be combined with {what}"
        )));
    }
    let upstream = match chosen_by_client {
        Some("original-destination") => {
            needs_allow("original-destination")?;
            Upstream::OriginalDestination
        }
        Some(_) => {
            needs_allow("http-connect")?;
            if args.connect_allow.is_empty() {
                return Err(exit::usage(anyhow::anyhow!(
                    "http-connect needs --connect-allow PATTERN: the names (with a port) it \
                     may relay to, e.g. --connect-allow '*.amazonaws.com:443'"
                )));
            }
            Upstream::HttpConnect(
                ConnectTable::new(args.connect_allow.clone())
                    .request_timeout(args.options.request_timeout.0),
            )
        }
        None => fixed_upstreams(args)?,
    };
    if !args.connect_allow.is_empty() && !matches!(upstream, Upstream::HttpConnect(_)) {
        return Err(exit::usage(anyhow::anyhow!(
            "--connect-allow is for http-connect only"
        )));
    }
    if args.options.transparent && !matches!(upstream, Upstream::OriginalDestination) {
        return Err(exit::usage(anyhow::anyhow!(
            "--transparent is for original-destination only"
        )));
    }
    Ok(upstream)
}

/// Turns the command-line options into each worker's pipe-pool bounds.
pub fn pool_limits(options: &RelayOptions) -> PoolLimits {
    PoolLimits::default()
        .with_max_idle_pipes(options.pool_idle_pipes)
        .with_pipe_budget_bytes(options.pipe_budget.0 as usize)
}

struct Stop(RelayHandle);

impl SignalActions for Stop {
    fn shutdown(&mut self) {
        log_drain(&self.0, self.0.drain_delay(), None);
        self.0.shutdown();
    }
    fn shutdown_now(&mut self) {
        self.0.shutdown_now();
    }
}

/// The upstream (or group of upstreams) of the positional UPSTREAM and every --upstream.
fn fixed_upstreams(args: &RelayArgs) -> anyhow::Result<Upstream> {
    let mut addrs = Vec::new();
    for text in args.upstream.iter().chain(&args.more_upstreams) {
        addrs.push(UpstreamAddr::parse(text).map_err(exit::usage)?);
    }
    match addrs.len() {
        0 => Err(exit::usage(anyhow::anyhow!(
            "give an upstream: spliceway relay LISTEN UPSTREAM, or --upstream HOST:PORT (repeatable)"
        ))),
        1 => Ok(Upstream::Fixed(addrs.remove(0))),
        _ => {
            let balance = match args.balance.as_str() {
                "least-connections" => Balance::LeastConnections,
                "client-hash" => Balance::ClientHash,
                _ => Balance::RoundRobin,
            };
            let group = UpstreamGroup::new(addrs.into_iter().map(UpstreamServer::new).collect())
                .balance(balance);
            group.validate().map_err(exit::usage)?;
            Ok(Upstream::Group(group))
        }
    }
}

/// Runs the `relay` command until a signal stops it.
pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    let origin = crate::upgrade::Origin::now().context("finding this executable")?;
    let log: LogControl = logging::init(
        logging::level_from_flags(args.log.verbose, args.log.quiet),
        args.log.log_format,
    );
    // Validate both addresses before anything else, with one-line errors.
    let listen = parse_listen_addr(&args.listen).map_err(exit::usage)?;
    let upstream = upstream_of(&args)?;
    let accounts = Accounts::check(&args)?;
    let options = connection_options(&args.options);
    let access = AccessList {
        allow: args.allow.clone(),
        deny: args.deny.clone(),
    };
    warn_if_open(listen, &access);
    let mut route = Route::with_upstream("relay", upstream.clone())
        .listen(listen)
        .options(options.clone())
        .access(access.clone());
    if !args.upstream_allow.is_empty() {
        route = route.upstream_allow(args.upstream_allow.clone());
    }
    let net_admin = crate::privileges::net_admin_needed([&route]);
    crate::privileges::require_net_admin(net_admin.as_deref())?;
    if !args.options.accept_proxy_from.is_empty() {
        if args
            .options
            .accept_proxy_from
            .iter()
            .any(|n| n.prefix_len() == 0)
        {
            tracing::warn!(
                "--accept-proxy-from admits every address: any client can send a PROXY header \
                 and choose the address the log and the upstream see"
            );
        }
        route = route.accept_proxy_from(args.options.accept_proxy_from.clone());
    }
    if args.udp {
        // Flags without effect on datagrams are refused rather than ignored.
        let tcp_only = [
            ("--rate-limit-up", args.options.rate_limit_up.is_some()),
            ("--rate-limit-down", args.options.rate_limit_down.is_some()),
            ("--max-connections", args.options.max_connections.is_some()),
        ];
        if let Some((flag, _)) = tcp_only.iter().find(|(_, set)| *set) {
            return Err(exit::usage(anyhow::anyhow!(
                "{flag} is for TCP relays: with --udp, --max-sessions and \
                 --max-sessions-per-client bound the sessions (UDP has no rate limits)"
            )));
        }
        let mut udp = UdpOptions::default();
        udp.idle_timeout = args.udp_idle_timeout.0;
        udp.max_sessions = args.max_sessions;
        udp.max_sessions_per_client = args.max_sessions_per_client;
        udp.responses = args.udp_responses;
        route = route.protocol(Protocol::Udp).udp_options(udp);
    }
    let mut builder = Relay::builder()
        .route(route)
        .threads(args.options.threads)
        .drain_timeout(args.options.drain_timeout.0)
        .drain_delay(args.options.drain_delay.0)
        .pool_limits(pool_limits(&args.options));
    if let Some(limit) = args.options.max_connections {
        builder = builder.max_connections(limit);
    }
    // Started by `spliceway upgrade`: the old process's sockets.
    let mut takeover = crate::takeover::take()?;
    if let Some(takeover) = takeover.as_mut() {
        let (tcp_listen, udp_listen): (&[std::net::SocketAddr], &[std::net::SocketAddr]) =
            if args.udp {
                (&[], &[listen])
            } else {
                (&[listen], &[])
            };
        for socket in takeover.listeners(tcp_listen) {
            builder = builder.listener(socket);
        }
        for socket in takeover.udp_sockets(udp_listen) {
            builder = builder.udp_socket(socket);
        }
    }
    let metrics_listener = match &args.metrics {
        Some(text) => {
            let addr = parse_listen_addr(text)
                .map_err(|e| exit::usage(anyhow::anyhow!("--metrics {text}: {e}")))?;
            let socket = match takeover.as_mut().and_then(|t| t.metrics(addr)) {
                Some(socket) => socket,
                None => std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot serve metrics on {addr}"))
                    .map_err(exit::usage)?,
            };
            // The metrics server's descriptors are its own, never the relay's.
            builder = builder.reserve_descriptors(crate::metrics::DESCRIPTORS);
            Some(socket)
        }
        None => None,
    };
    // Kept for an upgrade, which hands the metrics socket over with the others.
    let metrics_copy = match &metrics_listener {
        Some(socket) => Some((socket.local_addr()?, socket.try_clone()?)),
        None => None,
    };
    let relay = builder
        .build()
        .map_err(|e| exit::from_relay_error(e, exit::Starter::Relay))?;
    let handle = relay.handle();
    // Bound before the privilege drop (its directory may be root's), owned by the user after.
    let control_listener = match &args.control_socket {
        Some(path) => Some(match takeover.as_mut().and_then(|t| t.control(path)) {
            Some(listener) => listener,
            None => crate::control::bind(path, accounts.target()?).map_err(exit::usage)?,
        }),
        None => None,
    };
    accounts.drop_privileges(&options, net_admin.is_some())?;
    let metrics = match metrics_listener {
        Some(socket) => {
            let server = crate::metrics::serve_on(socket, handle.clone()).map_err(exit::usage)?;
            tracing::info!("metrics at http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let successor = std::sync::Arc::new(crate::succession::Successor::default());
    let lineage = signals::Lineage {
        predecessor: takeover
            .as_ref()
            .and_then(|_| crate::succession::predecessor()),
        successor: std::sync::Arc::clone(&successor),
    };
    let _signals =
        signals::spawn(Stop(handle.clone()), log, lineage).context("installing signal handlers")?;
    let mut answering = None;
    if let (Some(path), Some(listener)) = (&args.control_socket, control_listener) {
        let upgrader = crate::upgrade::Upgrader {
            origin,
            handle: handle.clone(),
            control_path: path.clone(),
            metrics: metrics_copy,
            metrics_server: metrics.as_ref().map(crate::metrics::MetricsServer::control),
            drain_timeout: std::sync::Arc::new(std::sync::Mutex::new(args.options.drain_timeout.0)),
            successor,
        };
        let observer = crate::control_protocol::Observer::new(handle.clone(), Default::default());
        answering = Some(crate::control::spawn(
            listener,
            path.clone(),
            upgrader,
            observer,
        )?);
    }
    if let Some(takeover) = takeover {
        // Reported once the workers run (readiness.rs).
        crate::readiness::once_running(handle.clone(), move || {
            if let Err(e) = takeover.ready() {
                tracing::warn!("{e:#}");
            }
        })
        .context("starting the readiness thread")?;
    }
    for (_, addr) in handle.local_addrs() {
        if args.udp {
            let answers = match args.udp_responses {
                None => String::new(),
                Some(0) => ", ended once its datagrams have left".to_string(),
                Some(n) => format!(", ended once each datagram has had {n} answer(s)"),
            };
            tracing::info!(
                "relaying UDP {addr} -> {upstream} (a session per client address, idle \
                 timeout {idle:?}{answers}; {clients})",
                idle = args.udp_idle_timeout.0,
                clients = describe_access(&access),
            );
            continue;
        }
        tracing::info!(
            "relaying {addr} -> {upstream} ({engine}, idle timeout {idle:?}; {clients})",
            engine = spliceway_config::describe_engine(&options),
            idle = options.idle_timeout,
            clients = describe_access(&access),
        );
    }
    let result = relay.run().context("relay stopped");
    if let Some(answering) = answering {
        // `spliceway upgrade` gets its answer before this process ends (control.rs).
        answering.settle(crate::upgrade::READY_TIMEOUT + std::time::Duration::from_secs(1));
    }
    result?;
    log_stopped(&handle);
    Ok(())
}

/// `--user` and `--group`, looked up before anything is bound: a name that does not exist is a
/// usage error (exit 2), as a bad flag is.
struct Accounts<'a> {
    user: Option<&'a str>,
    group: Option<&'a str>,
}

impl<'a> Accounts<'a> {
    fn check(args: &'a RelayArgs) -> anyhow::Result<Self> {
        use nix::unistd::{Gid, Group, Uid, User};
        let accounts = Accounts {
            user: args.user.as_deref(),
            group: args.group.as_deref(),
        };
        if let Some(name) = accounts.user {
            let found = match name.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(name),
            };
            if !matches!(found, Ok(Some(_))) {
                return Err(exit::usage(anyhow::anyhow!(
                    "--user {name}: no such user on this host"
                )));
            }
        }
        if let Some(name) = accounts.group {
            let found = match name.parse::<u32>() {
                Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                Err(_) => Group::from_name(name),
            };
            if !matches!(found, Ok(Some(_))) {
                return Err(exit::usage(anyhow::anyhow!(
                    "--group {name}: no such group on this host"
                )));
            }
        }
        Ok(accounts)
    }

    /// Who files made before the drop (the control socket) must belong to.
    fn target(&self) -> anyhow::Result<Option<(u32, u32)>> {
        privileges::target(self.user, self.group)
    }

    /// Switches to `--user`/`--group` as `run` does with `user =`/`group =`; without them,
    /// running as root is warned about, as `run` warns.
    fn drop_privileges(&self, options: &ConnectionOptions, net_admin: bool) -> anyhow::Result<()> {
        if self.user.is_none() && self.group.is_none() {
            if nix::unistd::geteuid().is_root() {
                tracing::warn!(
                    "running as root: pass --user NAME (e.g. --user nobody) to drop privileges \
                     after binding, or run unprivileged with CAP_NET_BIND_SERVICE"
                );
            }
            return Ok(());
        }
        if let privileges::Outcome::Dropped { uid, gid } =
            privileges::drop_to(self.user, self.group, net_admin)?
        {
            // What root could set, the new user may not: refuse now rather than run every
            // connection on the system's default (as `run` rechecks its file).
            if let Some(name) = &options.congestion {
                spliceway::check::check_congestion(name).map_err(|e| {
                    exit::usage(anyhow::anyhow!(
                        "--congestion {name}: after dropping privileges to uid {uid}, gid \
                         {gid}: {e}"
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Warns when every client that can reach a non-loopback `listen` address is relayed.
fn warn_if_open(listen: std::net::SocketAddr, access: &AccessList) {
    if access.allow.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(
            "no --allow: every client that reaches {listen} is relayed (an open relay); \
             --allow CIDR limits it to your networks"
        );
    }
}

/// Who may connect, for the start-up line.
fn describe_access(access: &AccessList) -> String {
    let list = |nets: &[ipnet::IpNet]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match (access.allow.is_empty(), access.deny.is_empty()) {
        (true, true) => "every client".into(),
        (true, false) => format!("every client but {}", list(&access.deny)),
        (false, true) => format!("clients in {}", list(&access.allow)),
        (false, false) => format!(
            "clients in {} but not {}",
            list(&access.allow),
            list(&access.deny)
        ),
    }
}

/// The first line of a graceful shutdown: what it will do, phase by phase. Nothing when no
/// connection is open and there is no drain delay: the signal's own line ("draining
/// connections") says all there is, and a line about draining none would only repeat it.
pub fn log_drain(
    handle: &RelayHandle,
    delay: std::time::Duration,
    timeout: Option<std::time::Duration>,
) {
    let timeout = timeout.map_or_else(
        || "the drain timeout".to_string(),
        |t| humantime::format_duration(t).to_string(),
    );
    if delay.is_zero() && handle.snapshot().active_connections == 0 {
        return;
    }
    if delay.is_zero() {
        tracing::info!(
            "draining {} open connections for up to {timeout}",
            handle.snapshot().active_connections
        );
    } else {
        tracing::info!(
            "draining: /readyz now answers 503; still accepting for {}, then the listeners \
             close and {} open connections get up to {timeout}",
            humantime::format_duration(delay),
            handle.snapshot().active_connections
        );
    }
}

/// The last log line of a relay that stopped: what it did in its life.
pub fn log_stopped(handle: &RelayHandle) {
    let stats = handle.snapshot().stats;
    tracing::info!(
        accepted = stats.accepted,
        completed = stats.completed,
        resets = stats.resets(),
        bytes_up = stats.bytes_client_to_upstream,
        bytes_down = stats.bytes_upstream_to_client,
        "stopped"
    );
}
