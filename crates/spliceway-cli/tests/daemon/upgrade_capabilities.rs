//! Issue 24, finding 7: an upgrade keeps `CAP_NET_BIND_SERVICE` exactly when the old process
//! had it. Started as root with `user = "nobody"`, the relay keeps that one capability after
//! its drop; the process an upgrade starts runs as `nobody` from its first instruction and,
//! before the fix, had lost it (capabilities survive `execve` for a non-root user only in the
//! ambient set), so a reload adding a port below 1024 failed. A relay that never had it must
//! not gain it. Every test here needs root and says it was skipped otherwise.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::privileges::free_low_port;
use crate::upgrade::{addr, new_pid, reap, serving_pid, upgrade, upload};
use crate::util::{Daemon, WAIT, drop_to_nobody, hash_server, pattern, wait_until};

/// `CAP_NET_BIND_SERVICE` is bit 10 of the masks in /proc/PID/status.
const BIND_ONLY: u64 = 1 << 10;
/// The sets a relay's threads show: inheritable, permitted, effective, ambient.
const SETS: [&str; 4] = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"];

/// The capability sets of every thread of `pid`, as `(thread, [inh, prm, eff, amb])`.
fn capabilities(pid: i32) -> Vec<(String, [u64; 4])> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task.join("status")) else {
            continue;
        };
        let name = crate::util::status_field(&status, "Name:").to_string();
        let sets = SETS
            .map(|key| u64::from_str_radix(crate::util::status_field(&status, key), 16).unwrap());
        threads.push((name, sets));
    }
    assert!(!threads.is_empty(), "no thread of pid {pid}");
    threads
}

/// Asserts that every thread of `pid` holds exactly `mask` in each of the four sets.
fn assert_capabilities(pid: i32, mask: u64, what: &str) {
    for (thread, sets) in capabilities(pid) {
        let shown: Vec<String> = SETS
            .iter()
            .zip(sets)
            .map(|(key, value)| format!("{key} {value:016x}"))
            .collect();
        assert!(
            sets.iter().all(|&value| value == mask),
            "{what}: pid {pid} thread {thread:?} has {}; expected {mask:016x} in each",
            shown.join(", ")
        );
    }
}

/// A directory the relay's user can read (and, for `owner`, write: the control socket is bound
/// there by a relay started unprivileged).
fn shared_dir(owner: Option<u32>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
    }
    dir
}

fn route(name: &str, listen: &str, upstream: std::net::SocketAddr) -> String {
    format!("[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nupstream = \"{upstream}\"\n")
}

/// Global lines: the control socket in `dir`, info logging (the reload lines).
fn globals(dir: &Path) -> String {
    format!(
        "control_socket = \"{}\"\nlog_level = \"info\"\nthreads = 2\n",
        dir.join("control.sock").display()
    )
}

/// Runs `spliceway upgrade` on the relay `daemon` logs for; the new pid (the log when it fails).
fn upgraded(daemon: &Daemon, path: &Path) -> i32 {
    let output = upgrade(path);
    assert!(
        output.status.success(),
        "upgrade failed: {}; log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log_text()
    );
    new_pid(&output)
}

/// Writes `text` as the configuration file in `dir`, readable by every user.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("spliceway.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Started as root with `user = "nobody"`: after an upgrade the new process (and each of its
/// threads) holds `CAP_NET_BIND_SERVICE` in its effective and ambient sets and nothing else; a
/// reload adding a route on a port below 1024 then binds it, and a second upgrade keeps it
/// again.
#[test]
fn an_upgrade_after_a_drop_from_root_keeps_cap_net_bind_service() {
    let Some(privileges) = drop_to_nobody("drops to nobody, then upgrades") else {
        return;
    };
    let Some(port) = free_low_port() else {
        eprintln!("skipped: no free port in 900..1024 on 127.0.0.1");
        return;
    };
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let dir = shared_dir(None);
    let first_listen = addr().to_string();
    let base = privileges + &globals(dir.path()) + &route("first", &first_listen, upstream);
    let path = write_config(dir.path(), &base);
    let mut command = crate::util::spliceway();
    command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET");
    let mut old = Daemon::spawn(command, path.clone(), None);
    assert!(
        old.wait_for_log("keeping only CAP_NET_BIND_SERVICE", WAIT),
        "{}",
        old.log_text()
    );

    let pid = upgraded(&old, &path);
    assert_capabilities(pid, BIND_ONLY, "after the first upgrade");

    // A reload of the new process adds a route on a low port.
    let low = format!("127.0.0.1:{port}");
    write_config(dir.path(), &(base.clone() + &route("low", &low, upstream)));
    let reloads_before = old.count_log("reloaded");
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    assert!(
        wait_until(WAIT, || old.count_log("reloaded") > reloads_before
            || old.count_log("reload failed") > 0),
        "no reload line; log:\n{}",
        old.log_text()
    );
    assert_eq!(
        old.count_log("reload failed"),
        0,
        "the upgraded relay could not bind {low}; log:\n{}",
        old.log_text()
    );
    let low: std::net::SocketAddr = low.parse().unwrap();
    let data = pattern(64 << 10, 9);
    assert!(upload(low, &data, 16 << 10, Duration::ZERO).unwrap());

    // A second upgrade still works and keeps the capability.
    let second = upgraded(&old, &path);
    assert_capabilities(second, BIND_ONLY, "after the second upgrade");
    assert_eq!(serving_pid(low, true, &[pid, second]), second);

    assert_eq!(old.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(reap(pid, WAIT), Some(0), "the first upgraded process");
    kill(Pid::from_raw(second), Signal::SIGTERM).unwrap();
    assert_eq!(reap(second, WAIT), Some(0), "the second upgraded process");
}

/// Runs `prefix... spliceway run --config FILE` (`prefix` may change who it runs as), upgrades
/// it once, and returns the capability masks (all four sets equal on every thread, asserted)
/// of the old and the new process.
fn masks_across_an_upgrade(prefix: &[&str], config: &str, dir: &Path) -> (u64, u64) {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let path = write_config(dir, config);
    let mut command = Command::new(prefix[0]);
    command
        .args(&prefix[1..])
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET");
    let mut old = Daemon::spawn(command, path.clone(), None);
    let mask = |pid: i32| {
        let threads = capabilities(pid);
        let first = threads[0].1[0];
        for (thread, sets) in &threads {
            assert!(
                sets.iter().all(|&s| s == first),
                "pid {pid} thread {thread}: sets {sets:x?} differ; log:\n{}",
                old.log_text()
            );
        }
        first
    };
    let before = mask(old.child.id() as i32);
    let pid = upgraded(&old, &path);
    let after = mask(pid);
    assert_eq!(old.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(reap(pid, WAIT), Some(0));
    (before, after)
}

/// A relay that has no capability gives none to the process an upgrade starts: started
/// unprivileged without capabilities, or as root with `user = "nobody"` under a bounding set
/// without `CAP_NET_BIND_SERVICE` (the drop cannot keep it, and says so).
#[test]
fn an_upgrade_gives_no_capability_the_old_process_lacked() {
    let Some(privileges) = drop_to_nobody("starts relays as nobody") else {
        return;
    };
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;

    // Started as nobody, without capabilities.
    let dir = shared_dir(Some(nobody.uid.as_raw()));
    let reuid = format!("--reuid={}", nobody.uid);
    let regid = format!("--regid={}", nobody.gid);
    let config = globals(dir.path()) + &route("r", &addr().to_string(), upstream);
    let prefix = ["setpriv", &reuid, &regid, "--clear-groups"];
    assert_eq!(
        masks_across_an_upgrade(&prefix, &config, dir.path()),
        (0, 0),
        "started as nobody"
    );

    // Started as root, dropping to nobody, with CAP_NET_BIND_SERVICE out of reach.
    let dir = shared_dir(None);
    let config = privileges + &globals(dir.path()) + &route("r", &addr().to_string(), upstream);
    let prefix = ["setpriv", "--bounding-set=-net_bind_service"];
    assert_eq!(
        masks_across_an_upgrade(&prefix, &config, dir.path()),
        (0, 0),
        "dropped from root without the capability in the bounding set"
    );
}

/// As under systemd (`User=`, `AmbientCapabilities=CAP_NET_BIND_SERVICE`, no `user =` in the
/// file): started unprivileged with the capability ambient, the relay keeps exactly that
/// capability, and so does the process an upgrade starts.
#[test]
fn an_upgrade_under_ambient_capabilities_keeps_exactly_them() {
    let Some(_) = drop_to_nobody("starts a relay as nobody with an ambient capability") else {
        return;
    };
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dir = shared_dir(Some(nobody.uid.as_raw()));
    let upstream = hash_server();
    let config = globals(dir.path()) + &route("r", &addr().to_string(), upstream.addr);
    let reuid = format!("--reuid={}", nobody.uid);
    let regid = format!("--regid={}", nobody.gid);
    let prefix = [
        "setpriv",
        &reuid,
        &regid,
        "--clear-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
    ];
    assert_eq!(
        masks_across_an_upgrade(&prefix, &config, dir.path()),
        (BIND_ONLY, BIND_ONLY)
    );
}
