//! `spliceway run` under `systemd-socket-activate` (Debian's systemd package), which binds the
//! sockets, waits for the first client, then starts spliceway with them as descriptors 3... and
//! `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` set: the same protocol as a `.socket` unit,
//! without a running systemd.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{
    Daemon, WAIT, config_file, connect, free_port, hash_answer, hash_server, pattern, read_answer,
};

const TOOL: &str = "/usr/bin/systemd-socket-activate";

/// The tool, or `None` (and a line saying the test is skipped) where it is not installed.
fn tool() -> Option<&'static str> {
    if Path::new(TOOL).exists() {
        Some(TOOL)
    } else {
        eprintln!("skipped: {TOOL} is missing (apt-get install systemd)");
        None
    }
}

/// Starts `systemd-socket-activate -l LISTEN [--fdname NAME] spliceway run --config FILE`.
fn activate(tool: &str, listen: SocketAddr, name: Option<&str>, config: &str) -> Daemon {
    let (dir, path) = config_file(config);
    let mut command = Command::new(tool);
    command.arg("-l").arg(listen.to_string());
    if let Some(name) = name {
        command.arg(format!("--fdname={name}"));
    }
    command
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET");
    let daemon = Daemon::launch(command, path, Some(dir));
    // The tool reports its socket before it waits for the first client.
    assert!(
        daemon.wait_for_log("Listening on", WAIT),
        "systemd-socket-activate did not start:\n{}",
        daemon.log_text()
    );
    daemon
}

/// Uploads `data` through `addr` and returns the hash server's answer.
fn upload(addr: SocketAddr, data: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    read_answer(&mut stream)
}

/// The first client (the one that makes the tool start spliceway) and later ones are relayed
/// over the passed socket, its name matching the route's; a second route that was not passed
/// is bound as usual.
#[test]
fn passed_socket_is_served_and_other_routes_are_bound() {
    let Some(tool) = tool() else { return };
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let passed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[[route]]\nname = \"up\"\nlisten = [\"{passed}\"]\nupstream = \"{upstream}\"\n\n\
         [[route]]\nname = \"other\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"{upstream}\"\n"
    );
    let mut daemon = activate(tool, passed, Some("up"), &config);
    let data = pattern(1 << 20, 7);
    assert_eq!(upload(passed, &data), hash_answer(&data), "first client");
    assert!(
        daemon.wait_for_log("running from", WAIT),
        "{}",
        daemon.log_text()
    );
    assert!(
        daemon
            .log_text()
            .contains("socket activation: serving 1 passed")
    );
    assert_eq!(daemon.listen_addr("up"), passed);
    let data = pattern(256 << 10, 9);
    assert_eq!(upload(passed, &data), hash_answer(&data), "second client");
    let other = daemon.listen_addr("other");
    assert_ne!(other.port(), 0);
    assert_eq!(
        upload(other, &data),
        hash_answer(&data),
        "route bound as usual"
    );
    // A reload keeps the passed socket (its address stays) and still serves through it.
    daemon.rewrite_config(&config.replace("name = \"other\"", "name = \"renamed\""));
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        daemon.wait_for_log("reloaded", WAIT),
        "{}",
        daemon.log_text()
    );
    assert_eq!(upload(passed, &data), hash_answer(&data), "after a reload");
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
}

/// A socket bound to an address no route listens on is a configuration error naming it.
#[test]
fn socket_matching_no_route_exits_78() {
    let Some(tool) = tool() else { return };
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let passed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let configured = free_port();
    let config = format!(
        "[[route]]\nname = \"up\"\nlisten = [\"127.0.0.1:{configured}\"]\nupstream = \"{upstream}\"\n"
    );
    let mut daemon = activate(tool, passed, None, &config);
    // The first client starts spliceway; it is reset or closed when spliceway refuses. The
    // reset can come before connect(2) reports success (connect_timeout reads SO_ERROR after
    // its poll, by when spliceway may have exited and the queued connection been reset), so
    // only a refusal (nothing listening) is a failure here.
    let client = std::net::TcpStream::connect_timeout(&passed, WAIT);
    if let Err(e) = &client {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "connecting: {e}"
        );
    }
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("spliceway exits");
    let log = daemon.log_text();
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains(&passed.to_string()) && log.contains("no route's listen address"),
        "{log}"
    );
}
