//! Issue 25: a failed reload must not pass for a success. The packaged unit's `ExecReload=`
//! checks the file before it signals the relay, so `systemctl reload` fails on a file that
//! cannot load; and the relay's notify messages after a failed reload say it failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::signals::notify_socket;
use crate::util::{Daemon, WAIT, free_port, spliceway, wait_until};

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/spliceway.service");
    std::fs::read_to_string(path).unwrap()
}

/// The unit's `ExecReload=` command lines, in order, with the installed paths replaced by
/// the binary under test and `config`, and `$MAINPID` by `pid`.
fn exec_reload(config: &Path, pid: u32) -> Vec<Vec<String>> {
    unit()
        .lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .map(|line| {
            assert!(
                !line.starts_with(['-', '@', '+', '!', ':']),
                "a prefix would change how a failure counts: {line}"
            );
            line.split_whitespace()
                .map(|word| match word {
                    "/usr/bin/spliceway" => env!("CARGO_BIN_EXE_spliceway").to_string(),
                    "/etc/spliceway/spliceway.toml" => config.display().to_string(),
                    "$MAINPID" => pid.to_string(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

/// Runs the unit's reload as systemd does: each `ExecReload=` line in order, stopping at the
/// first that fails. Returns the failing line's exit code and stderr, or `None` if all passed.
fn systemctl_reload(config: &Path, pid: u32) -> Option<(Option<i32>, String)> {
    for argv in exec_reload(config, pid) {
        let output = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        if !output.status.success() {
            return Some((
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
    }
    None
}

fn route(port: u16) -> String {
    format!(
        "[[route]]\nname = \"r\"\nlisten = [\"127.0.0.1:{port}\"]\nupstream = \"{}\"\n",
        crate::util::shared_echo_server()
    )
}

/// A stand-in for the relay's main process: a `sleep` that a SIGHUP ends.
struct MainPid(std::process::Child);

impl MainPid {
    /// With SIGHUP's default action even when the tests run with it ignored (under `nohup`,
    /// which `exec` passes on): `env --default-signal` (coreutils 8.31) resets it.
    fn start() -> MainPid {
        let resets = Command::new("env")
            .args(["--default-signal=HUP", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        let mut command = if resets {
            let mut command = Command::new("env");
            command.args(["--default-signal=HUP", "sleep"]);
            command
        } else {
            Command::new("sleep")
        };
        MainPid(command.arg("30").spawn().unwrap())
    }

    fn got_sighup(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt as _;
        let mut status = None;
        let _ = wait_until(WAIT, || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        });
        status.and_then(|s| s.signal()) == Some(Signal::SIGHUP as i32)
    }
}

impl Drop for MainPid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `systemctl reload` with a broken file fails (the check exits 78, naming the place) and the
/// relay is not signalled; with a good file it succeeds and the relay gets its SIGHUP.
#[test]
fn the_units_reload_fails_on_a_file_that_cannot_load() {
    assert!(
        exec_reload(Path::new("/x"), 1).len() >= 2,
        "ExecReload= checks, then signals"
    );
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("spliceway.toml");

    std::fs::write(
        &config,
        format!("threads = \"many\"\n{}", route(free_port())),
    )
    .unwrap();
    let mut main = MainPid::start();
    let (code, stderr) = systemctl_reload(&config, main.0.id()).expect("the reload must fail");
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains(":1:11: threads"), "{stderr}");
    assert!(
        main.0.try_wait().unwrap().is_none(),
        "a failed check must not signal the relay"
    );

    std::fs::write(&config, route(free_port())).unwrap();
    assert_eq!(systemctl_reload(&config, main.0.id()), None);
    assert!(main.got_sighup(), "a good file reaches the relay as SIGHUP");
}

/// What the check cannot see fails in the relay: its `READY=1` after the reload comes with
/// `STATUS=reload failed, ...` (shown by `systemctl status`), not a claim of success; the next
/// good reload says so too.
#[test]
fn a_failed_reload_says_so_to_systemd() {
    let (_socket_dir, socket_path, socket) = notify_socket();
    let receive = || {
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spliceway.toml");
    std::fs::write(&config, route(port)).unwrap();
    let mut command = crate::util::run_command(&config);
    command.env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::spawn(command, config.clone(), None);
    assert_eq!(receive().trim(), "READY=1");

    // A port another process holds: `check` passes, the relay cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let text = format!(
        "{}[[route]]\nname = \"taken\"\nlisten = [\"{taken_addr}\"]\nupstream = \"{}\"\n",
        route(port),
        crate::util::shared_echo_server()
    );
    daemon.rewrite_config(&text);
    let check = spliceway()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check passes what only binding finds"
    );
    daemon.signal(Signal::SIGHUP);
    assert!(receive().contains("RELOADING=1"));
    let after = receive();
    let lines: Vec<&str> = after.lines().collect();
    assert!(lines.contains(&"READY=1"), "{after}");
    let status = lines
        .iter()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {after:?}"));
    assert!(
        status.starts_with("reload failed, the running configuration stays: "),
        "{status}"
    );
    assert!(status.contains(&taken_addr.to_string()), "{status}");
    assert!(!status.contains("reloaded"), "{status}");

    daemon.rewrite_config(&route(port));
    daemon.signal(Signal::SIGHUP);
    assert!(receive().contains("RELOADING=1"));
    assert_eq!(
        receive().trim(),
        format!("READY=1\nSTATUS=reloaded {}", config.display())
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(receive().trim(), "STOPPING=1");
    assert_eq!(daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
