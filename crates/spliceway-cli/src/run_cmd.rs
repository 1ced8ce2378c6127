//! `spliceway run --config FILE`: the relay daemon.
//!
//! Order of start-up: read the configuration (exit 78 if invalid), set up logging, raise the
//! open-file limit, bind every listener (or take those systemd passed: `socket_activation.rs`) (exit 2 if a port is taken), drop privileges, start
//! the metrics endpoint, install signal handlers, tell systemd `READY=1`, relay.
//!
//! Signals: SIGTERM/SIGINT drain (a second one resets what is left; after an upgrade, one
//! passed on by the old process and one sent directly count apart: `signals.rs`), and are
//! passed on to the process an upgrade started (`succession.rs`); SIGHUP reloads the file (an
//! invalid file is logged, the running configuration stays, and systemd's `STATUS=` says so);
//! SIGUSR1/SIGUSR2 raise and lower the log level. Reloads run on a thread of their own, so a reload that waits on DNS
//! never delays a signal.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use sd_notify::NotifyState;
use spliceway::{RelayHandle, ReloadSummary};
use spliceway_config::{Config, LogFormat, LogLevel, Resolvers};

use crate::cli::ConfigArgs;
use crate::control;
use crate::control_protocol::{LastReload, Observer, ReloadRecord};
use crate::exit;
use crate::limits;
use crate::logging::{self, LogControl};
use crate::metrics;
use crate::privileges;
use crate::signals::{self, SignalActions};
use crate::socket_activation::{self, RouteAddrs};
use crate::succession::{self, Successor};
use crate::takeover;
use crate::upgrade;

/// Position on the logging ladder (see `logging.rs`) of a configured level, moved by `-v`/`-q`.
/// More `-q` than `-v` means what `--help` says whatever the configured level: `-q` warnings
/// and errors only, `-qq` errors only.
fn ladder(level: LogLevel, offset: isize) -> usize {
    let base: isize = match level {
        LogLevel::Error => 0,
        LogLevel::Warn => 1,
        LogLevel::Notice => 2,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
        _ => 3, // Info, and any level added later
    };
    let position = (base + offset).clamp(0, 5) as usize;
    if offset < 0 {
        position.min((logging::QUIET_LEVEL as isize + 1 + offset).max(0) as usize)
    } else {
        position
    }
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) what the daemon is doing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// What the signals do to the running relay. A reload is only requested here: it runs on the
/// reload thread, because resolving new upstream names can block for as long as a DNS server
/// stays silent, and a SIGTERM meanwhile must act at once.
struct Signals {
    handle: RelayHandle,
    /// The configured drain timeout, updated by each successful reload.
    drain_timeout: Arc<Mutex<Duration>>,
    /// The configured drain delay, likewise.
    drain_delay: Arc<Mutex<Duration>>,
    reloads: mpsc::Sender<()>,
}

impl SignalActions for Signals {
    fn shutdown(&mut self) {
        notify(&[NotifyState::Stopping]);
        let drain_timeout = *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner());
        let drain_delay = *self.drain_delay.lock().unwrap_or_else(|e| e.into_inner());
        crate::relay_cmd::log_drain(&self.handle, drain_delay, Some(drain_timeout));
        self.handle.shutdown_with(drain_delay, Some(drain_timeout));
    }

    fn shutdown_now(&mut self) {
        self.handle.shutdown_now();
    }

    fn reload(&mut self) {
        // The reload thread takes every request queued while it was busy as one.
        let _ = self.reloads.send(());
    }
}

/// The reload thread's state: the configuration in force and what re-reading it needs.
struct Daemon {
    handle: RelayHandle,
    config: Config,
    resolvers: Resolvers,
    log: LogControl,
    offset: isize,
    drain_timeout: Arc<Mutex<Duration>>,
    drain_delay: Arc<Mutex<Duration>>,
    /// How the last reload went, for `spliceway status`.
    last_reload: LastReload,
}

/// Starts the reload thread; it runs one reload per batch of requests and ends when the
/// sender is dropped. It is not joined: a reload stuck on a silent DNS server must not hold up
/// the process's exit.
fn spawn_reloader(mut daemon: Daemon) -> anyhow::Result<mpsc::Sender<()>> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("spliceway-reload".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                if daemon.handle.is_stopping() {
                    return;
                }
                daemon.reload();
            }
        })?;
    Ok(tx)
}

impl Daemon {
    /// Re-reads the file and applies it; on any error the running configuration stays.
    ///
    /// systemd is told `RELOADING=1`, then `READY=1` (the service runs either way: the reload
    /// is over) with a `STATUS=` that says how the reload went, so that a failed one shows in
    /// `systemctl status` instead of passing for a success (issue 25). The notify protocol
    /// (systemd 252, Debian bookworm's) has no way to fail a reload from the daemon; the unit's
    /// `ExecReload=` runs `spliceway check` first, which fails `systemctl reload` on a file
    /// that cannot load.
    fn reload(&mut self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        notify(&states);
        tracing::info!("SIGHUP: reloading {}", self.config.path().display());
        let outcome = self.try_reload();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadRecord {
            at: std::time::SystemTime::now(),
            error: outcome.as_ref().err().map(|e| format!("{e:#}")),
        });
        let status = match outcome {
            Ok(summary) => {
                tracing::info!(
                    "reloaded {}: added {:?}, removed {:?}, changed {:?}, unchanged {:?}",
                    self.config.path().display(),
                    summary.added,
                    summary.removed,
                    summary.changed,
                    summary.unchanged
                );
                format!("reloaded {}", self.config.path().display())
            }
            Err(e) => {
                tracing::error!("reload failed, the running configuration stays: {e:#}");
                format!(
                    "reload failed, the running configuration stays: {}",
                    status_text(&format!("{e:#}"))
                )
            }
        };
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    fn try_reload(&mut self) -> anyhow::Result<ReloadSummary> {
        let new = Config::from_file(self.config.path())?;
        warn_fixed_settings(&self.config, &new);
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        let routes = new.routes_with(&mut self.resolvers)?;
        let summary = self.handle.reload(routes, new.max_connections())?;
        if new.log_level() != self.config.log_level() && !self.log.filter_from_env() {
            self.log.set(ladder(new.log_level(), self.offset));
            tracing::info!("log level now {}", new.log_level().name());
        }
        if let Ok((soft, hard)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            limits::check(limits::FileLimit { soft, hard }, new.connection_capacity());
        }
        *self.drain_timeout.lock().unwrap_or_else(|e| e.into_inner()) = new.drain_timeout();
        *self.drain_delay.lock().unwrap_or_else(|e| e.into_inner()) = new.drain_delay();
        self.config = new;
        Ok(summary)
    }
}

/// `text` fit for a `STATUS=` line: one line (a newline would end the assignment) of at most
/// [`MAX_STATUS`] bytes.
fn status_text(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_STATUS {
        let mut end = MAX_STATUS;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

/// Longest error text in a `STATUS=` line (a notify datagram should stay small).
const MAX_STATUS: usize = 1024;

/// Warns about relay-wide settings that only take effect on a restart.
fn warn_fixed_settings(old: &Config, new: &Config) {
    let mut changed = Vec::new();
    if old.threads() != new.threads() {
        changed.push("threads");
    }
    if old.user() != new.user() {
        changed.push("user");
    }
    if old.group() != new.group() {
        changed.push("group");
    }
    if old.metrics() != new.metrics() {
        changed.push("metrics");
    }
    if old.log_format() != new.log_format() {
        changed.push("log_format");
    }
    if old.pool_limits() != new.pool_limits() {
        changed.push("pool_idle_pipes/pipe_budget");
    }
    if !changed.is_empty() {
        tracing::warn!(
            "{} changed: these take effect only when spliceway restarts",
            changed.join(", ")
        );
    }
}

/// Runs the daemon until a signal stops it.
pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let origin = upgrade::Origin::now().context("finding this executable")?;
    let config = Config::from_file(&args.config).map_err(exit::config)?;
    let offset = isize::from(args.log.verbose) - isize::from(args.log.quiet);
    let format = if args.log.log_format == LogFormat::Json || config.log_format() == LogFormat::Json
    {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    let log = logging::init(ladder(config.log_level(), offset), format);

    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    match limits::raise_nofile() {
        Ok(limit) => limits::check(limit, config.connection_capacity()),
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }

    let mut resolvers = Resolvers::default();
    let described = config.routes_with(&mut resolvers).map_err(exit::config)?;
    // Interception (transparent listeners, the client's address upstream) needs CAP_NET_ADMIN:
    // said now, before anything is bound, rather than as a bind or connect error later.
    let net_admin = privileges::net_admin_needed(&described);
    privileges::require_net_admin(net_admin.as_deref())?;
    let udp_listen: Vec<std::net::SocketAddr> = described
        .iter()
        .filter(|r| r.transport() == spliceway::Protocol::Udp)
        .flat_map(|r| r.listen_addrs().iter().copied())
        .collect();
    let routes: Vec<RouteAddrs> = described
        .iter()
        // Socket activation passes TCP listeners; an upgrade hands UDP sockets over apart.
        .filter(|r| r.transport() == spliceway::Protocol::Tcp)
        .map(|r| RouteAddrs {
            name: r.name().to_string(),
            listen: r.listen_addrs().to_vec(),
        })
        .collect();
    let passed = socket_activation::take(&routes).map_err(exit::config)?;
    if !passed.is_empty() {
        tracing::info!("socket activation: serving {} passed sockets", passed.len());
    }
    // Started by `spliceway upgrade`: the old process's sockets (after the file was read, so
    // that a bad file exits 78 having taken nothing).
    let mut takeover = takeover::take()?;
    let mut builder = config
        .relay_builder_with(&mut resolvers)
        .map_err(exit::config)?;
    if config.metrics().is_some() {
        // The metrics server's descriptors are its own, never the relay's.
        builder = builder.reserve_descriptors(metrics::DESCRIPTORS);
    }
    for socket in passed {
        builder = builder.listener(socket);
    }
    if let Some(takeover) = takeover.as_mut() {
        let all: Vec<_> = routes
            .iter()
            .flat_map(|r| r.listen.iter().copied())
            .collect();
        for socket in takeover.listeners(&all) {
            builder = builder.listener(socket);
        }
        for socket in takeover.udp_sockets(&udp_listen) {
            builder = builder.udp_socket(socket);
        }
    }
    let relay = builder
        .build()
        .map_err(|e| exit::from_relay_error(e, exit::Starter::Run))?;
    let handle = relay.handle();

    // Bound before the privilege drop (its directory may be root's), owned by the user after.
    let control = match config.control_socket() {
        Some(path) => Some(match takeover.as_mut().and_then(|t| t.control(path)) {
            Some(listener) => listener,
            None => control::bind(path, privileges::target(config.user(), config.group())?)
                .map_err(exit::usage)?,
        }),
        None => None,
    };

    if let privileges::Outcome::Dropped { uid, gid } =
        privileges::drop_to(config.user(), config.group(), net_admin.is_some())?
    {
        // What root could set (a congestion control outside the allowed list) the new user
        // may not: such a setting is refused now rather than ignored on every connection.
        config.recheck().map_err(|e| {
            exit::config(
                anyhow::Error::new(e)
                    .context(format!("after dropping privileges to uid {uid}, gid {gid}")),
            )
        })?;
    }

    let mut metrics_copy = None;
    let metrics = match config.metrics() {
        Some(addr) => {
            let socket = match takeover.as_mut().and_then(|t| t.metrics(addr)) {
                Some(socket) => socket,
                None => std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot serve metrics on {addr}"))
                    .map_err(exit::usage)?,
            };
            // Kept for an upgrade, which hands the metrics socket over with the others.
            metrics_copy = Some((socket.local_addr()?, socket.try_clone()?));
            let server = metrics::serve_on(socket, handle.clone()).map_err(exit::usage)?;
            tracing::info!("metrics at http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };

    for (route, addr) in handle.local_addrs() {
        tracing::info!("route {route:?}: listening on {addr}");
    }
    let path = config.path().to_path_buf();
    let control_path = config.control_socket().map(std::path::Path::to_path_buf);
    let drain_timeout = Arc::new(Mutex::new(config.drain_timeout()));
    let drain_delay = Arc::new(Mutex::new(config.drain_delay()));
    let upgrade_drain = Arc::clone(&drain_timeout);
    let last_reload = LastReload::default();
    let reloads = spawn_reloader(Daemon {
        handle: handle.clone(),
        config,
        resolvers,
        log: log.clone(),
        offset,
        drain_timeout: Arc::clone(&drain_timeout),
        drain_delay: Arc::clone(&drain_delay),
        last_reload: Arc::clone(&last_reload),
    })
    .context("starting the reload thread")?;
    let signals = Signals {
        handle: handle.clone(),
        drain_timeout,
        drain_delay,
        reloads,
    };
    let successor = Arc::new(Successor::default());
    let lineage = signals::Lineage {
        predecessor: takeover.as_ref().and_then(|_| succession::predecessor()),
        successor: Arc::clone(&successor),
    };
    let signal_thread =
        signals::spawn(signals, log, lineage).context("installing signal handlers")?;
    let mut answering = None;
    if let (Some(listener), Some(control_path)) = (control, control_path) {
        let upgrader = upgrade::Upgrader {
            origin,
            handle: handle.clone(),
            control_path: control_path.clone(),
            metrics: metrics_copy,
            metrics_server: metrics.as_ref().map(metrics::MetricsServer::control),
            drain_timeout: Arc::clone(&upgrade_drain),
            successor,
        };
        let observer = Observer::new(handle.clone(), last_reload);
        answering = Some(control::spawn(listener, control_path, upgrader, observer)?);
    }
    // Reported once the workers run, so that no health check finds this process not running
    // after the old one (or systemd) was told it serves (readiness.rs). The "running from"
    // line too: signals are handled by then (a SIGHUP reloads instead of killing), and
    // /healthz answers 200 from that line on (logged before `run` set the relay started, it
    // let a check right after it see 503 on a loaded machine).
    let config_path = path.display().to_string();
    let _readiness = crate::readiness::once_running(handle.clone(), move || {
        tracing::info!(
            "spliceway {} running from {config_path}",
            env!("CARGO_PKG_VERSION")
        );
        match takeover {
            Some(takeover) => {
                if let Err(e) = takeover.ready() {
                    tracing::warn!("{e:#}");
                    return;
                }
                // This process is the service's main process now (NotifyAccess=all in the unit).
                notify(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready]);
            }
            None => notify(&[NotifyState::Ready]),
        }
    })
    .context("starting the readiness thread")?;

    let result = relay.run().context("relay stopped");
    if let Some(answering) = answering {
        // `spliceway upgrade` gets its answer before this process ends (control.rs).
        answering.settle(upgrade::READY_TIMEOUT + Duration::from_secs(1));
    }
    drop(signal_thread);
    drop(metrics);
    result?;
    crate::relay_cmd::log_stopped(&handle);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_levels_sit_on_the_ladder() {
        assert_eq!(
            ladder(LogLevel::Info, 0),
            3,
            "info shows closed connections"
        );
        assert_eq!(ladder(LogLevel::Notice, 0), logging::DEFAULT_LEVEL);
        assert_eq!(ladder(LogLevel::Info, 1), 4);
        assert_eq!(ladder(LogLevel::Error, -3), 0);
        assert_eq!(ladder(LogLevel::Trace, 3), 5);
    }

    #[test]
    fn a_status_is_one_bounded_line() {
        assert_eq!(status_text("a\nb\tc"), "a b c");
        let long = "é".repeat(MAX_STATUS);
        let cut = status_text(&long);
        assert!(
            cut.len() <= MAX_STATUS + 3 && cut.ends_with("..."),
            "{}",
            cut.len()
        );
    }

    /// Hostile input 12: `run -q` with the default `log_level = "info"` still logged INFO
    /// start-up and drain lines, although `-q` means warnings and errors only.
    #[test]
    fn quiet_means_warnings_and_errors_whatever_the_configured_level() {
        for level in [LogLevel::Info, LogLevel::Debug, LogLevel::Trace] {
            assert_eq!(ladder(level, -1), logging::QUIET_LEVEL, "{level:?}");
            assert_eq!(ladder(level, -2), 0, "{level:?}");
        }
        assert_eq!(ladder(LogLevel::Error, -1), 0, "never more than configured");
    }
}
