use nix::unistd::{Group, User, geteuid};

use crate::util::{Daemon, echo_round_trip, echo_server};

/// The real, effective, saved and file-system ids on a `Uid:`/`Gid:` line of
/// /proc/PID/status.
fn ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn root_drops_to_nobody_after_binding() {
    if !geteuid().is_root() {
        eprintln!("skipped: privilege drop needs root");
        return;
    }
    let Some(nobody) = User::from_name("nobody").unwrap() else {
        eprintln!("skipped: no user nobody");
        return;
    };
    let group = Group::from_gid(nobody.gid).unwrap().map(|g| g.name);
    let upstream = echo_server();
    let mut config = format!(
        "user = \"nobody\"\n[[route]]\nname = \"low\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"{upstream}\"\n"
    );
    if let Some(group) = &group {
        config = format!("group = \"{group}\"\n{config}");
    }
    let daemon = Daemon::start(&config);
    assert!(
        daemon.wait_for_log("dropped privileges", crate::util::WAIT),
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
