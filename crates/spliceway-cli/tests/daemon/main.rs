//! Integration tests of `spliceway run` and `spliceway check`: each runs the real binary on
//! loopback addresses with a configuration file, and every wait is bounded.

/// Shared helpers: the daemon child and its log, upstream servers, metrics scraping.
mod util;

/// `allow` / `deny` lists enforced by `run`, seen in the metrics.
mod access;
/// `check` and start-up failures: exact line and column with exit 78, the summary, the
/// packaged example, a port in use (exit 2).
mod config_errors;
/// SIGKILL with 40 connections in every phase: each unfinished peer sees a reset, never EOF.
mod crash;
/// A failed reload fails `systemctl reload` (the unit's `ExecReload=`) and says so to systemd.
mod failed_reload;
/// `max_connections` on a route, and recovery from running out of descriptors (EMFILE).
mod limits;
/// HAProxy in front of two instances (PROXY v2, /readyz checks, a drain); spliceway sending
/// PROXY protocol to HAProxy and nginx.
mod load_balancer;
/// The Prometheus endpoint after known traffic.
mod metrics;
/// `spliceway status`, `connections`, `close`, `top` over the control socket.
mod observe;
/// The kernel's per-user pipe limit reached by a relay running as `nobody`.
mod pipe_limit;
/// Dropping root to `user = "nobody"`.
mod privileges;
/// SIGHUP reload and SIGTERM drain with transfers in flight; sd-notify messages.
mod signals;
/// SNI routing with a real TLS client and server.
mod sni;
/// systemd socket activation with the real `systemd-socket-activate`: passed sockets are
/// served, a socket no route listens on exits 78.
mod socket_activation;
/// `spliceway upgrade`: three in a row under load, failed ones, `SO_PEERCRED` refusal.
mod upgrade;
/// Upgrades keep `CAP_NET_BIND_SERVICE` exactly when the old process had it.
mod upgrade_capabilities;
/// SIGTERM during and after an upgrade stops both processes; one signal to each drains.
mod upgrade_signals;
/// `spliceway upgrade` hands UDP routes' sockets over: no datagram refused, new clients served
/// by the new process, the old one's sessions idle out.
mod upgrade_udp;
