use std::process::Stdio;

use nix::unistd::User;

use crate::util::{
    Daemon, SPLICEWAY, SysctlOverride, WAIT, config_file, drop_to_nobody, echo_round_trip,
    echo_server, spliceway, status_field, wait_until,
};

/// The real, effective, saved and file-system ids on a `Uid:`/`Gid:` line of
/// /proc/PID/status.
fn ids(status: &str, key: &str) -> Vec<u32> {
    status_field(status, key)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn root_drops_to_nobody_after_binding() {
    let Some(privileges) = drop_to_nobody("privilege drop") else {
        return;
    };
    let nobody = User::from_name("nobody").unwrap().unwrap();
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let config = format!(
        "{privileges}[[route]]\nname = \"low\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"{upstream}\"\n"
    );
    let daemon = Daemon::start(SPLICEWAY, &config);
    assert!(
        daemon.wait_for_log("dropped privileges", WAIT),
        "{}",
        daemon.log_text()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let uid = nobody.uid.as_raw();
    let gid = nobody.gid.as_raw();
    assert_eq!(ids(&status, "Uid:"), vec![uid; 4], "{status}");
    assert_eq!(ids(&status, "Gid:"), vec![gid; 4], "{status}");
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        groups.is_empty() || groups == gid.to_string(),
        "supplementary groups: {groups}"
    );
    // Still relaying after the drop.
    echo_round_trip(daemon.listen_addr("low"), b"as nobody");
}

const ALLOWED_CC: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// Root may set any available congestion control; `nobody` only the allowed ones. A relay
/// that checked `congestion` as root and then dropped to a user who may not set it must not
/// start (exit 78, the key located), rather than run every connection on the system default.
#[test]
fn a_congestion_control_the_dropped_user_may_not_set_exits_78() {
    let Some(privileges) = drop_to_nobody("restricts congestion controls and drops to nobody")
    else {
        return;
    };
    let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_string();
    let default = read("/proc/sys/net/ipv4/tcp_congestion_control");
    let available = read("/proc/sys/net/ipv4/tcp_available_congestion_control");
    // Reno and the system default are always allowed; any other available one can be
    // restricted.
    let Some(restricted) = available
        .split_whitespace()
        .find(|cc| *cc != "reno" && *cc != default)
        .map(str::to_string)
    else {
        eprintln!("skipped: no congestion control besides reno and {default} ({available})");
        return;
    };
    let others: Vec<&str> = available
        .split_whitespace()
        .filter(|cc| *cc != restricted)
        .collect();
    let _restore = SysctlOverride::set(ALLOWED_CC, &others.join(" "));

    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let config = format!(
        "{privileges}[[route]]\nname = \"s3\"\nlisten = [\"127.0.0.1:0\"]\n\
         upstream = \"{upstream}\"\ncongestion = \"{restricted}\"\n"
    );
    let line = config.lines().count();
    let (dir, path) = config_file(&config);
    let log = dir.path().join("stderr");
    let mut child = spliceway()
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    let _ = wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(78),
        "the relay must refuse to start; its log:\n{stderr}"
    );
    assert!(stderr.contains("after dropping privileges"), "{stderr}");
    let located = format!(
        "{}:{line}:14: route \"s3\": congestion: congestion control \"{restricted}\" is not \
         allowed for this user",
        path.display()
    );
    assert!(
        stderr.contains(&located),
        "expected {located:?} in:\n{stderr}"
    );
}

/// A port below 1024 on 127.0.0.1 that root could bind a moment ago.
pub(crate) fn free_low_port() -> Option<u16> {
    (900..1024).find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// After dropping to `nobody` the relay keeps `CAP_NET_BIND_SERVICE` and nothing else, so a
/// reload can add a listener on a port below 1024 (what `AmbientCapabilities=` gives under
/// systemd, ambient set included); `setuid(0)` still fails, which the drop itself checks.
#[test]
fn after_the_drop_a_reload_can_bind_a_port_below_1024() {
    let Some(privileges) = drop_to_nobody("binds a low port after dropping to nobody") else {
        return;
    };
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let route = |name: &str, listen: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nupstream = \"{upstream}\"\n"
        )
    };
    let daemon = Daemon::start(
        SPLICEWAY,
        &(privileges.clone() + &route("first", "127.0.0.1:0")),
    );
    assert!(
        daemon.wait_for_log("keeping only CAP_NET_BIND_SERVICE", WAIT),
        "{}",
        daemon.log_text()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let bind_only = format!("{:016x}", 1u64 << 10); // CAP_NET_BIND_SERVICE is bit 10
    // Inheritable and ambient too (issue 24, finding 7): what carries it through the exec of
    // an upgrade (tests/daemon/upgrade_capabilities.rs). Nothing else in any set.
    for key in ["CapPrm:", "CapEff:", "CapInh:", "CapAmb:"] {
        assert_eq!(status_field(&status, key), bind_only, "{key} in {status}");
    }

    // The user the relay now runs as must be able to read the file it reloads.
    let config_dir = daemon.config.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(port) = free_low_port() else {
        eprintln!("skipped: no free port in 900..1024 on 127.0.0.1");
        return;
    };
    let low = format!("127.0.0.1:{port}");
    daemon.rewrite_config(
        &(privileges
            + &route("first", &daemon.listen_addr("first").to_string())
            + &route("low", &low)),
    );
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        daemon.wait_for_log("reloaded", WAIT),
        "the reload as nobody did not take; log:\n{}",
        daemon.log_text()
    );
    echo_round_trip(low.parse().unwrap(), b"on a low port, as nobody");
}
