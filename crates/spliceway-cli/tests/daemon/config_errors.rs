use std::process::{Output, Stdio};

use crate::util::{WAIT, config_file, free_port, spliceway, wait_until};

/// Runs `spliceway COMMAND --config FILE` on `text`.
fn with_config(command: &str, text: &str) -> (Output, String) {
    let (_dir, path) = config_file(text);
    let output = spliceway()
        .arg(command)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (output, path.display().to_string())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const BAD_CIDR: &str = r#"# the S3 stand-in
metrics = "127.0.0.1:0"

[[route]]
name = "s3"
listen = ["127.0.0.1:0"]
upstream = "127.0.0.1:9"
allow = ["10.0.0.0/33"]
"#;

#[test]
fn check_reports_file_line_column_and_exits_78() {
    let (output, path) = with_config("check", BAD_CIDR);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    let expected = format!(
        "spliceway: error: {path}:8:10: route \"s3\": allow: invalid CIDR \"10.0.0.0/33\": "
    );
    assert!(
        stderr(&output).starts_with(&expected),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn run_reports_the_same_error_and_exits_78() {
    let (output, path) = with_config("run", BAD_CIDR);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("{path}:8:10: route \"s3\": allow: invalid CIDR")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn syntax_and_unknown_keys_are_located() {
    let (output, path) = with_config(
        "check",
        "threads = 1\n[[route]]\nname = \"a\"\nlisten = [\n",
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains(&format!("{path}:4:")),
        "{}",
        stderr(&output)
    );

    let (output, path) = with_config(
        "run",
        "[[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"127.0.0.1:9\"\n\
         idle_timout = \"5s\"\n",
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains(&format!(
            "{path}:5:1: route \"a\": idle_timout: unknown key `idle_timout`: did you mean \
             `idle_timeout`?"
        )),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("half_close_timeout"),
        "not every key of the table: {}",
        stderr(&output)
    );

    // Issue 25: `[route]` said "invalid type: map, expected a sequence".
    let (output, path) = with_config(
        "check",
        "metrics = \"127.0.0.1:0\"\n[route]\nname = \"a\"\nlisten = [\"127.0.0.1:0\"]\n\
         upstream = \"127.0.0.1:9\"\n",
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains(&format!(
            "{path}:2:1: route: write [[route]], with two brackets"
        )),
        "{}",
        stderr(&output)
    );

    let (output, path) = with_config(
        "check",
        "[[route]]\nname = \"a\"\nlisten = [\"127.0.0.1:0\"]\n",
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains(&format!("{path}:1:1: route \"a\": needs either upstream")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_file_exits_78() {
    let output = spliceway()
        .args(["check", "--config", "/nonexistent/spliceway.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr(&output).contains("/nonexistent/spliceway.toml"));
}

#[test]
fn a_port_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[[route]]\nname = \"a\"\nlisten = [\"{}\"]\nupstream = \"127.0.0.1:9\"\n",
        taken.local_addr().unwrap()
    );
    let (output, _) = with_config("run", &text);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot listen on"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_prints_a_summary() {
    let text = r#"
max_connections = 100
[[route]]
name = "s3"
listen = ["127.0.0.1:0"]
upstream = "s3-ap-northeast-1.amazonaws.com:443"
allow = ["10.0.0.0/8"]
deny = ["10.9.0.0/16"]
max_connections = 50
mode = "copy"

[[route]]
name = "sni"
listen = ["127.0.0.1:0"]
[[route.sni]]
match = "*.s3.ap-northeast-1.amazonaws.com"
upstream = "s3-ap-northeast-1.amazonaws.com:443"
"#;
    let (output, path) = with_config("check", text);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = String::from_utf8(output.stdout).unwrap();
    for needle in [
        format!("{path}: OK, 2 routes"),
        "route \"s3\"".into(),
        "upstream  s3-ap-northeast-1.amazonaws.com:443".into(),
        "allow     10.0.0.0/8".into(),
        "deny      10.9.0.0/16".into(),
        "max connections 50".into(),
        "mode      copy".into(),
        "route \"sni\"".into(),
        "*.s3.ap-northeast-1.amazonaws.com -> s3-ap-northeast-1.amazonaws.com:443".into(),
        "max connections 100".into(),
        // Hostile input 12: the summary left it out.
        "half-close timeout 1m; hello timeout 10s".into(),
    ] {
        assert!(summary.contains(&needle), "{needle:?} not in:\n{summary}");
    }
}

/// `packaging/spliceway.toml` as shipped, or with its SNI example uncommented (the lines between
/// its "---- Example: routing by TLS server name" and "---- end of the SNI example" markers,
/// each without its leading "# ").
fn packaged_example(with_sni: bool) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/spliceway.toml");
    let text = std::fs::read_to_string(path).unwrap();
    if !with_sni {
        return text;
    }
    let (_, rest) = text
        .split_once("# ---- Example: routing by TLS server name")
        .expect("the SNI example's first marker");
    let (block, _) = rest
        .split_once("# ---- end of the SNI example")
        .expect("the SNI example's last marker");
    let uncommented: String = block
        .lines()
        .skip(2) // the rest of the marker line, and the second line of its comment
        .map(|l| match l {
            "#" => "\n".to_string(),
            _ => format!(
                "{}\n",
                l.strip_prefix("# ")
                    .unwrap_or_else(|| panic!("{l:?}: not commented"))
            ),
        })
        .collect();
    format!("{text}\n{uncommented}")
}

/// Runs `spliceway check` on `text`; asserts it passes and returns the summary it prints.
fn check_passes(text: &str) -> String {
    let (output, _) = with_config("check", text);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// Issue 25: the example opened 0.0.0.0:8443 (the SNI route) besides 443 while the install
/// message spoke of 443 alone. It ships one route, S3 on 443, for its allow list only.
#[test]
fn the_packaged_example_passes_check() {
    let summary = check_passes(&packaged_example(false));
    assert!(summary.contains(": OK, 1 route"), "{summary}");
    assert!(summary.contains("route \"s3\""), "{summary}");
    assert!(summary.contains("0.0.0.0:443"), "{summary}");
    assert!(summary.contains("allow     10.0.0.0/8"), "{summary}");
    assert!(!summary.contains("8443"), "nothing else listens: {summary}");
}

/// Hostile input 12: in the packaged example, the SNI entry without an upstream relayed to S3
/// on the port the route listens on, 8443, where S3 does not listen. Every entry of that
/// route (now commented out) names its upstream on 443.
#[test]
fn the_packaged_sni_example_relays_to_port_443() {
    let summary = check_passes(&packaged_example(true));
    assert!(summary.contains(": OK, 2 routes"), "{summary}");
    let (_, sni) = summary
        .split_once("route \"s3-by-name\"")
        .expect("the SNI example");
    let entries: Vec<&str> = sni.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(entries.len(), 2, "{summary}");
    for entry in entries {
        assert!(entry.ends_with(":443"), "{entry:?} in:\n{summary}");
    }
}

/// Runs `spliceway run --config FILE` on `text` until it exits, at most [`WAIT`]; a relay
/// still running then (a configuration it accepted) is killed and `None` returned.
fn run_to_exit(text: &str) -> (Option<Output>, String) {
    let (_dir, path) = config_file(text);
    let mut child = spliceway()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(WAIT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    (exited.then_some(output), path.display().to_string())
}

/// What is wrong with how a command ended, if it did not exit 78 with stderr starting
/// `spliceway: error: PATH:expected`.
fn refused_at(output: Option<&Output>, path: &str, expected: &str) -> Option<String> {
    let Some(output) = output else {
        return Some(format!("still running after {WAIT:?}"));
    };
    let start = format!("spliceway: error: {path}:{expected}");
    let ok = output.status.code() == Some(78) && stderr(output).starts_with(&start);
    (!ok).then(|| {
        format!(
            "exit {:?}, expected 78 and {start:?}; stderr: {}",
            output.status.code(),
            stderr(output).trim_end()
        )
    })
}

/// Hostile input 11 (with the static part of 3, and 4 and 5): configurations that passed
/// `check` and that `run` then refused at start-up (exit 2, or 78 without a place), or ran
/// with every connection failing or looping. Both commands now refuse each with exit 78 and
/// the same file:line:column and key.
#[test]
fn check_finds_what_run_would_refuse_at_start_up() {
    let (p, q) = (free_port(), free_port());
    let route = |name: &str, listen: String, upstream: String| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nupstream = \"{upstream}\"\n"
        )
    };
    let cases = [
        (
            format!("user = \"no-such-user-17\"\n{}", route("a", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())),
            "1:8: user: user \"no-such-user-17\" does not exist".to_string(),
        ),
        (
            route("a", format!("127.0.0.1:{p}"), format!("127.0.0.1:{p}")),
            format!("4:12: route \"a\": upstream: 127.0.0.1:{p} reaches this route's own listener"),
        ),
        (
            route("a", format!("0.0.0.0:{p}"), format!("127.0.0.1:{p}")),
            format!("4:12: route \"a\": upstream: 127.0.0.1:{p} reaches this route's own listener 0.0.0.0:{p}"),
        ),
        (
            format!(
                "{}{}",
                route("a", format!("127.0.0.1:{p}"), format!("127.0.0.1:{q}")),
                route("b", format!("127.0.0.1:{q}"), format!("127.0.0.1:{p}"))
            ),
            format!("4:12: route \"a\": upstream: 127.0.0.1:{q} reaches the listener 127.0.0.1:{q} of route \"b\""),
        ),
        (
            format!(
                "{}{}",
                route("a", format!("0.0.0.0:{p}"), "127.0.0.1:9".into()),
                route("b", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())
            ),
            format!("7:11: route \"b\": listen: 127.0.0.1:{p} overlaps 0.0.0.0:{p} of route \"a\""),
        ),
        (
            route("a", format!("[::ffff:127.0.0.1]:{p}"), "127.0.0.1:9".into()),
            format!("3:11: route \"a\": listen: invalid listen address \"[::ffff:127.0.0.1]:{p}\""),
        ),
        (
            format!("metrics = \"127.0.0.1:{p}\"\n{}", route("a", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())),
            format!("1:11: metrics: 127.0.0.1:{p} cannot be bound next to 127.0.0.1:{p}"),
        ),
        (
            route("a", format!("127.0.0.1:{p}"), "127.0.0.1:0".into()),
            "4:12: route \"a\": upstream: invalid upstream address \"127.0.0.1:0\": port 0".to_string(),
        ),
        (
            format!("{}idle_timeout = \"400000000000years\"\n", route("a", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())),
            "5:16: route \"a\": idle_timeout: \"400000000000years\" is longer than the longest time accepted, 7days".to_string(),
        ),
        (
            format!("{}keepalive = \"40000s\"\n", route("a", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())),
            "5:13: route \"a\": keepalive: ".to_string(),
        ),
        (
            format!("{}accept_proxy = \"v2\"\n", route("a", format!("127.0.0.1:{p}"), "127.0.0.1:9".into())),
            "5:16: route \"a\": accept_proxy: accept_proxy needs accept_proxy_from".to_string(),
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let (output, path) = with_config("check", &text);
        if let Some(wrong) = refused_at(Some(&output), &path, &expected) {
            failures.push(format!("check: {wrong}\n{text}"));
        }
        let (output, path) = run_to_exit(&text);
        if let Some(wrong) = refused_at(output.as_ref(), &path, &expected) {
            failures.push(format!("run: {wrong}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 25: an upstream name that does not resolve passed `check` (names were not looked up)
/// and then `run` exited 2 at every restart. `check --resolve` looks every name up as `run`
/// does at start-up, prints the addresses, and exits 2 naming the route and the name. The
/// failing name asks a DNS server on loopback that answers NXDOMAIN (no packet leaves the
/// host).
#[test]
fn check_resolve_looks_every_upstream_name_up_as_run_would() {
    let dns = nxdomain_server();
    let text = format!(
        r#"[[route]]
name = "local"
listen = ["127.0.0.1:0"]
upstream = "localhost:443"
[[route]]
name = "missing"
listen = ["127.0.0.1:0"]
upstream = "bucket.s3.test:443"
resolver = {{ servers = ["{dns}"] }}
"#
    );
    let (_dir, path) = config_file(&text);
    let check = |resolve: bool| {
        let mut command = spliceway();
        command.arg("check").arg("--config").arg(&path);
        if resolve {
            command.arg("--resolve");
        }
        command.env_remove("RUST_LOG").output().unwrap()
    };
    let plain = check(false);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let resolved = check(true);
    assert_eq!(resolved.status.code(), Some(2), "{}", stderr(&resolved));
    let out = String::from_utf8_lossy(&resolved.stdout);
    assert!(
        out.contains("resolve   route \"local\": localhost:443 -> ") && out.contains(":443"),
        "{out}"
    );
    assert!(
        stderr(&resolved).contains("route \"missing\": bucket.s3.test:443"),
        "{}",
        stderr(&resolved)
    );
    let run = with_config("run", &text).0;
    assert_eq!(
        run.status.code(),
        Some(2),
        "run exits as check said: {}",
        stderr(&run)
    );
}

/// A DNS server on 127.0.0.1 that answers every query NXDOMAIN (the question echoed), for as
/// long as the test process runs.
fn nxdomain_server() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut answer = buf[..n].to_vec();
            // QR = 1 (a response), keep the opcode and RD; RA = 1, RCODE = 3 (NXDOMAIN); no
            // answer, authority or additional records.
            answer[2] = 0x80 | (buf[2] & 0x79);
            answer[3] = 0x80 | 0x03;
            answer[6..12].fill(0);
            let _ = socket.send_to(&answer, from);
        }
    });
    addr
}

/// Issue 25: `run` listening on a privileged port unprivileged said only "Permission denied".
/// The error names CAP_NET_BIND_SERVICE, the unit and `user =`, with exit status 2. As root the
/// relay runs as nobody for the test; unprivileged, as itself.
#[test]
fn a_low_port_refused_to_an_unprivileged_run_names_the_capability() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1 {
        eprintln!("skipped: every port is unprivileged here (ip_unprivileged_port_start {start})");
        return;
    }
    let (dir, path) = config_file(&format!(
        "[[route]]\nname = \"low\"\nlisten = [\"127.0.0.1:{}\"]\nupstream = \"127.0.0.1:9\"\n",
        start - 1
    ));
    // Readable by whoever the relay runs as.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = crate::util::run_command(&path);
    if nix::unistd::geteuid().is_root() {
        let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
            eprintln!("skipped: no user nobody to run as");
            return;
        };
        command.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for needle in [
        "Permission denied",
        "CAP_NET_BIND_SERVICE",
        "systemd unit",
        "user = \"NAME\"",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

/// Issue 29: a route's upstreams refused where they are written, with exit 78 and the same
/// file:line:column and key from `check` and from `run`: an empty list, a weight of 0 or an
/// absurd one, only backups, bad check settings, a listed upstream that is the route's own
/// listener. A valid group passes `check`, which lists its upstreams with weights and roles.
#[test]
fn upstream_lists_are_refused_alike_by_check_and_run() {
    let p = free_port();
    let route =
        |rest: &str| format!("[[route]]\nname = \"db\"\nlisten = [\"127.0.0.1:{p}\"]\n{rest}");
    let two = "upstream = [\"127.0.0.1:9\", \"127.0.0.1:10\"]\n";
    let cases = [
        (
            route("upstream = []\n"),
            "4:12: route \"db\": upstream: the list of upstreams is empty".to_string(),
        ),
        (
            route("[[route.upstreams]]\naddress = \"127.0.0.1:9\"\nweight = 0\n"),
            "6:10: route \"db\": upstreams.weight: must be from 1 to 1000, not 0".to_string(),
        ),
        (
            route("[[route.upstreams]]\naddress = \"127.0.0.1:9\"\nweight = 99999999\n"),
            "6:10: route \"db\": upstreams.weight: must be from 1 to 1000, not 99999999"
                .to_string(),
        ),
        (
            route("[[route.upstreams]]\naddress = \"127.0.0.1:9\"\nbackup = true\n"),
            "4:1: route \"db\": upstreams: every upstream is a backup".to_string(),
        ),
        (
            route(&format!(
                "{two}health_check = {{ interval = \"1s\", fall = 0 }}\n"
            )),
            "5:42: route \"db\": health_check.fall: must be from 1 to 100, not 0".to_string(),
        ),
        (
            route(&format!(
                "{two}health_check = {{ http_get = \"/\", status = 1000 }}\n"
            )),
            "5:43: route \"db\": health_check.status: must be an HTTP status from 100 to 599"
                .to_string(),
        ),
        (
            route(&format!(
                "upstream = [\"127.0.0.1:9\", \"127.0.0.1:{p}\"]\n"
            )),
            format!(
                "4:28: route \"db\": upstream: 127.0.0.1:{p} reaches this route's own listener"
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let (output, path) = with_config("check", &text);
        if let Some(wrong) = refused_at(Some(&output), &path, &expected) {
            failures.push(format!("check: {wrong}\n{text}"));
        }
        let (output, path) = run_to_exit(&text);
        if let Some(wrong) = refused_at(output.as_ref(), &path, &expected) {
            failures.push(format!("run: {wrong}\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let (output, _) = with_config(
        "check",
        &route(
            "balance = \"least-connections\"\n[[route.upstreams]]\naddress = \"127.0.0.1:9\"\n\
             weight = 3\n[[route.upstreams]]\naddress = \"127.0.0.1:10\"\nbackup = true\n",
        ),
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for line in [
        "upstreams (least-connections balance)",
        "127.0.0.1:9  weight 3  primary",
        "127.0.0.1:10  weight 1  backup",
    ] {
        assert!(summary.contains(line), "{line:?} not in:\n{summary}");
    }
}
