use nix::unistd::User;

use crate::util::{Daemon, drop_to_nobody, echo_round_trip, echo_server};

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
    let Some(privileges) = drop_to_nobody("privilege drop") else {
        return;
    };
    let nobody = User::from_name("nobody").unwrap().unwrap();
    let upstream = echo_server();
    let config = format!(
        "{privileges}[[route]]\nname = \"low\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"{upstream}\"\n"
    );
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
