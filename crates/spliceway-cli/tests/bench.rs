//! `spliceway bench`: the JSON it prints, integrity failures, remote targets and the emulated
//! topology. Sizes stay small (a few MiB, one run) so the suite stays fast.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use spliceway_test_kit::{free_port, is_root, wait_until};

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

fn bench(args: &[&str]) -> Output {
    Command::new(EXE)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running spliceway bench")
}

/// Stdout must be exactly one JSON object.
fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn result<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no path {path} in {report}"))
}

fn paths(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect()
}

/// The documented shape of a result row.
fn assert_row_shape(row: &Value) {
    for key in [
        "path",
        "seconds",
        "mb_per_s",
        "relay_cpu_seconds",
        "relay_cpu_seconds_per_gib",
        "relative_to_direct",
        "integrity",
        "runs",
    ] {
        assert!(row.get(key).is_some(), "no {key:?} in {row}");
    }
    assert!(row["seconds"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["integrity"].is_boolean(), "{row}");
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(addr: SocketAddr) {
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
        "nothing listens on {addr}"
    );
}

fn have_iproute2() -> bool {
    ["ip", "tc"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn loopback_json_has_the_documented_shape() {
    let out = bench(&["--size", "8MiB", "--runs", "1", "--json", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["workload"], "upload");
    assert!(report.get("requests_per_run").is_none(), "{report}");
    assert!(
        result(&report, "direct").get("p50_us").is_none(),
        "{report}"
    );
    assert_eq!(report["size_bytes"], 8 * 1024 * 1024);
    assert_eq!(report["topology"], "loopback");
    assert_eq!(report["streams"], 1);
    assert!(report["part_size_bytes"].is_null(), "{report}");
    assert_eq!(paths(&report), ["direct", "relay-splice", "relay-copy"]);
    for path in ["direct", "relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        assert_eq!(row["runs"].as_array().unwrap().len(), 1, "{row}");
        assert!(row["runs"][0].get("parts").is_none(), "{row}");
    }
    assert!(result(&report, "direct")["relay_cpu_seconds"].is_null());
    assert_eq!(result(&report, "direct")["relative_to_direct"], 1.0);
    for path in ["relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert!(row["relay_cpu_seconds"].as_f64().is_some(), "{row}");
        assert!(row["relay_cpu_seconds_per_gib"].as_f64().is_some(), "{row}");
    }
    // --quiet: nothing on stderr.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn table_is_the_default_output() {
    let out = bench(&["--size", "1MiB", "--runs", "1", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for word in [
        "path",
        "MB/s",
        "relay CPU s",
        "direct",
        "relay-splice",
        "relay-copy",
        "ok",
    ] {
        assert!(table.contains(word), "{word:?} missing from\n{table}");
    }
}

#[test]
fn runs_show_their_spread_beside_the_median() {
    // Two runs: the table (stdout) gains min..max columns and the loopback note; the JSON
    // gains the spread keys beside the medians it had.
    let out = bench(&["--size", "1MiB", "--runs", "2", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "s min..max",
        "CPU min..max",
        "vs min..max",
        "note: on loopback",
        "CPU s/GiB is the figure that means something",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let out = bench(&["--size", "1MiB", "--runs", "2", "--json", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    for path in ["direct", "relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert_row_shape(row);
        let (lo, mid, hi) = (
            row["seconds_min"].as_f64().unwrap(),
            row["seconds"].as_f64().unwrap(),
            row["seconds_max"].as_f64().unwrap(),
        );
        assert!(lo <= mid && mid <= hi, "{row}");
        let (lo, hi) = (
            row["relative_to_direct_min"].as_f64().unwrap(),
            row["relative_to_direct_max"].as_f64().unwrap(),
        );
        assert!(0.0 < lo && lo <= hi, "{row}");
    }
    assert_eq!(result(&report, "direct")["relative_to_direct_min"], 1.0);
    let splice = result(&report, "relay-splice");
    assert!(
        splice["relay_cpu_seconds_per_gib_min"].as_f64().unwrap()
            <= splice["relay_cpu_seconds_per_gib_max"].as_f64().unwrap(),
        "{splice}"
    );
    assert!(result(&report, "direct")["relay_cpu_seconds_per_gib_min"].is_null());
}

#[test]
fn emulation_flags_without_the_emulated_topology_are_a_usage_error() {
    // Before, each was ignored and the run went over unshaped loopback, looking like a shaped one.
    for (args, flag) in [
        (&["--link", "direct-connect"][..], "--link"),
        (&["--nic", "ec2"], "--nic"),
        (&["--internet-rate", "5mbit"], "--internet-rate"),
        (&["--vpc-rate", "1gbit"], "--vpc-rate"),
        (&["--tbf-burst", "64KiB"], "--tbf-burst"),
        (&["--topology", "loopback", "--link", "home"], "--link"),
    ] {
        let mut args = args.to_vec();
        args.extend(["--size", "1MiB", "--runs", "1"]);
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("add --topology emulated"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing measured");
    }
    let out = bench(&["--kernel-counters", "--size", "1MiB", "--runs", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--kernel-counters") && stderr.contains("add --topology emulated"),
        "{stderr}"
    );
    // With --target the network is real: the rates are refused too (the other three already
    // conflict with --target in the parser).
    let out = bench(&["--target", "127.0.0.1:9", "--internet-rate", "5mbit"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("with --target"));
}

#[test]
fn corrupting_peer_fails_integrity_and_the_exit_status() {
    let peer = format!("broken={EXE} corrupting-relay 127.0.0.1:{{listen}} 127.0.0.1:{{upstream}}");
    let out = bench(&[
        "--size", "8MiB", "--runs", "1", "--json", "--quiet", "--peer", &peer,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json_of(&out);
    assert_eq!(result(&report, "broken")["integrity"], false);
    assert_eq!(
        result(&report, "broken")["runs"][0]["bytes_received"],
        8 * 1024 * 1024
    );
    for path in ["direct", "relay-splice", "relay-copy"] {
        assert_eq!(result(&report, path)["integrity"], true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("integrity"), "{stderr}");
}

#[test]
fn peer_templates_are_checked_before_anything_runs() {
    let out = bench(&["--peer", "x=socat {listen} {port}"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = bench(&["--peer", "relay-splice=x {listen} {upstream}"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = bench(&[
        "--peer",
        "x=program-that-does-not-exist {listen} {upstream}",
        "--size",
        "1MiB",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn target_and_via_reach_a_remote_sink_directly_and_through_a_relay() {
    let (sink, sink_addr) = remote_sink();
    let (relay, relay_addr) = relay_to(sink_addr);
    let out = bench(&[
        "--target",
        &sink_addr.to_string(),
        "--via",
        &relay_addr.to_string(),
        "--size",
        "8MiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    drop((relay, sink));
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["topology"], "remote");
    assert_eq!(paths(&report), ["direct", "via"]);
    for path in ["direct", "via"] {
        let row = result(&report, path);
        assert_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        assert!(row["relay_cpu_seconds"].is_null(), "{row}");
    }
}

#[test]
fn emulated_topology_without_root_is_a_usage_error() {
    if is_root() {
        eprintln!("skipped: running as root (the emulated topology would be built)");
        return;
    }
    let out = bench(&["--topology", "emulated", "--size", "1MiB", "--runs", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
}

#[test]
fn emulated_topology_measures_every_path_and_cleans_up() {
    if !is_root() || !have_iproute2() {
        eprintln!("skipped: needs root and iproute2 (ip, tc)");
        return;
    }
    let child = Command::new(EXE)
        .args([
            "bench",
            "--topology",
            "emulated",
            "--size",
            "4MiB",
            "--runs",
            "1",
            "--internet-rate",
            "50mbit",
            "--vpc-rate",
            "50mbit",
            "--relay-cpu",
            "0.5",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("swb{}-", child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["topology"], "emulated");
    assert_eq!(
        paths(&report),
        ["direct", "vpc", "relay-splice", "relay-copy"]
    );
    for row in report["results"].as_array().unwrap() {
        assert_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        assert!(row["origin_seconds"].as_f64().is_some(), "{row}");
    }
    assert!(
        result(&report, "relay-splice")["relay_cpu_seconds"]
            .as_f64()
            .is_some()
    );
    // --tbf-burst auto: 10 ms of 50 Mbit/s is below one GSO packet, so 64 KiB on both links.
    assert_eq!(report["links"]["internet_burst_bytes"], 65536, "{report}");
    assert_eq!(report["links"]["vpc_burst_bytes"], 65536, "{report}");
    assert!(
        report["links"]["tbf_burst"]
            .as_str()
            .unwrap()
            .starts_with("auto"),
        "{report}"
    );
    // 4 MiB at 50 Mbit/s takes about 0.7 s: the shaping is in place.
    assert!(result(&report, "direct")["seconds"].as_f64().unwrap() > 0.5);
    // The table (stderr, with --json) shows the origin's 512 MB rows once, as another test,
    // not its 46.320 s beside every relay row of this 4 MiB run.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("origin, another test (not this run)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("46.320").count(), 1, "{stderr}");
    assert!(!stderr.contains("note: on loopback"), "{stderr}");

    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!namespaces.contains(&prefix), "left behind: {namespaces}");
    for root in [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(&prefix),
                    "cgroup left behind: {root}/{name}"
                );
            }
        }
    }
}

/// `--pattern aws-cli` with 1 MiB parts instead of 8 MiB, so 32 MiB make 32 parts.
const AWS_CLI_SMALL: [&str; 6] = [
    "--pattern",
    "aws-cli",
    "--part-size",
    "1MiB",
    "--size",
    "32MiB",
];

/// Every row intact, each run's 32 parts answered and none wrong.
fn assert_parts_intact(report: &Value, rows: &[&str]) {
    assert_eq!(report["streams"], 10, "{report}");
    assert_eq!(report["part_size_bytes"], 1 << 20, "{report}");
    assert!(
        report["timing"]
            .as_str()
            .unwrap()
            .contains("last part's answer"),
        "{report}"
    );
    for path in rows {
        let row = result(report, path);
        assert_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        let run = &row["runs"][0];
        assert_eq!(run["bytes_received"], 32 << 20, "{row}");
        assert_eq!(run["parts"]["answered"], 32, "{row}");
        assert_eq!(run["parts"]["failed"], 0, "{row}");
    }
}

#[test]
fn aws_cli_pattern_checks_every_part_and_catches_a_corrupted_one() {
    // The relay flips byte 1000 of each connection's stream: past the hello line, inside the
    // first part that connection sends.
    let peer = format!(
        "broken={EXE} corrupting-relay 127.0.0.1:{{listen}} 127.0.0.1:{{upstream}} --at 1000"
    );
    let mut args = AWS_CLI_SMALL.to_vec();
    args.extend(["--runs", "1", "--json", "--quiet", "--peer", &peer]);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json_of(&out);
    assert_parts_intact(&report, &["direct", "relay-splice", "relay-copy"]);
    let broken = result(&report, "broken");
    assert_eq!(broken["integrity"], false, "{broken}");
    let parts = &broken["runs"][0]["parts"];
    assert_eq!(parts["answered"], 32, "{broken}");
    // One wrong part per connection that sent any (10, unless some found the queue empty).
    let failed = parts["failed"].as_u64().unwrap();
    assert!((1..=10).contains(&failed), "{broken}");
    assert_eq!(broken["runs"][0]["bytes_received"], 32 << 20, "{broken}");
}

#[test]
fn streams_without_parts_split_the_upload() {
    let out = bench(&[
        "--streams",
        "3",
        "--size",
        "8MiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["streams"], 3);
    assert!(report["part_size_bytes"].is_null());
    for path in ["direct", "relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        assert_eq!(row["runs"][0]["bytes_received"], 8 << 20, "{row}");
    }
}

#[test]
fn stream_and_part_flags_are_checked() {
    for args in [
        ["--streams", "0"],
        ["--part-size", "0"],
        ["--pattern", "aws-cli-v3"],
        ["--link", "dial-up"],
        ["--nic", "e1000"],
    ] {
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = bench(&["--link", "home", "--internet-rate", "5mbit"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Explicit flags override the pattern's half: 2 streams of 1 MiB parts.
    let out = bench(&[
        "--pattern",
        "aws-cli",
        "--streams",
        "2",
        "--part-size",
        "1MiB",
        "--size",
        "3MiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["streams"], 2);
    assert_eq!(report["part_size_bytes"], 1 << 20);
    assert_eq!(result(&report, "direct")["runs"][0]["parts"]["answered"], 3);
}

/// `spliceway relay` on a free loopback port, forwarding to `upstream`, once it listens.
fn relay_to(upstream: SocketAddr) -> (Running, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let relay = Running(
        Command::new(EXE)
            .args(["relay", &addr.to_string(), &upstream.to_string(), "-q"])
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    (relay, addr)
}

/// A `spliceway sink` on a free loopback port.
fn remote_sink() -> (Running, SocketAddr) {
    let mut sink = Command::new(EXE)
        .args(["sink", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = sink.stderr.take().unwrap();
    let sink = Running(sink);
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first).unwrap();
    let addr = first
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sink said {first:?}"));
    (sink, addr)
}

#[test]
fn aws_cli_pattern_reaches_a_remote_sink_directly_and_through_a_relay() {
    let (sink, sink_addr) = remote_sink();
    let (relay, relay_addr) = relay_to(sink_addr);
    let (target, via) = (sink_addr.to_string(), relay_addr.to_string());
    let mut args = AWS_CLI_SMALL.to_vec();
    args.extend([
        "--target", &target, "--via", &via, "--runs", "1", "--json", "--quiet",
    ]);
    let out = bench(&args);
    drop((relay, sink));
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["topology"], "remote");
    assert_eq!(paths(&report), ["direct", "via"]);
    assert_parts_intact(&report, &["direct", "via"]);
}

#[test]
fn aws_cli_pattern_on_emulated_direct_connect_links() {
    let have_ethtool = Command::new("ethtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !have_iproute2() || !have_ethtool {
        eprintln!("skipped: needs root, iproute2 (ip, tc) and ethtool");
        return;
    }
    let mut args = AWS_CLI_SMALL.to_vec();
    args.extend([
        "--topology",
        "emulated",
        "--link",
        "direct-connect",
        "--nic",
        "ec2",
        "--relay-cpu",
        "0.5",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    let out = bench(&args);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["topology"], "emulated");
    assert_eq!(report["links"]["internet_mbit"], 1000.0);
    assert_eq!(report["links"]["vpc_mbit"], 2000.0);
    assert_eq!(report["links"]["nic"], "ec2");
    assert_parts_intact(&report, &["direct", "vpc", "relay-splice", "relay-copy"]);
    assert!(
        result(&report, "relay-splice")["relay_cpu_seconds"]
            .as_f64()
            .is_some()
    );
}

/// The documented shape of a request workload's row.
fn assert_request_row_shape(row: &Value) {
    for key in [
        "path",
        "p50_us",
        "p99_us",
        "p999_us",
        "per_second",
        "relay_cpu_seconds",
        "integrity",
        "runs",
    ] {
        assert!(row.get(key).is_some(), "no {key:?} in {row}");
    }
    let (p50, p99, p999) = (
        row["p50_us"].as_f64().unwrap(),
        row["p99_us"].as_f64().unwrap(),
        row["p999_us"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{row}");
    assert!(row["per_second"].as_f64().unwrap() > 0.0, "{row}");
}

#[test]
fn rtt_workload_reports_latency_and_relay_cpu_per_round_trip() {
    let out = bench(&[
        "--workload",
        "rtt",
        "--requests",
        "300",
        "--runs",
        "2",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["workload"], "rtt");
    assert_eq!(report["requests_per_run"], 300);
    assert_eq!(report["message_size_bytes"], 64);
    assert_eq!(paths(&report), ["direct", "relay-splice", "relay-copy"]);
    for path in ["direct", "relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert_request_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        for run in row["runs"].as_array().unwrap() {
            assert_eq!(run["requests"], 300, "{run}");
            assert_eq!(run["bytes_received"], 300 * 64, "{run}");
        }
    }
    assert!(result(&report, "direct")["relay_cpu_us_per_request"].is_null());
    assert!(result(&report, "direct")["added_p50_us"].is_null());
    for path in ["relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert!(
            row["relay_cpu_us_per_request"].as_f64().unwrap() > 0.0,
            "{row}"
        );
        assert!(row["added_p50_us"].as_f64().is_some(), "{row}");
    }
}

#[test]
fn connect_workload_makes_every_connection_with_concurrency() {
    let out = bench(&[
        "--workload",
        "connect",
        "--requests",
        "200",
        "--concurrency",
        "3",
        "--message-size",
        "1KiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["workload"], "connect");
    assert_eq!(report["concurrency"], 3);
    assert_eq!(report["message_size_bytes"], 1024);
    for path in ["direct", "relay-splice", "relay-copy"] {
        let row = result(&report, path);
        assert_request_row_shape(row);
        assert_eq!(row["integrity"], true, "{row}");
        assert_eq!(row["runs"][0]["requests"], 200, "{row}");
    }
    assert!(
        result(&report, "relay-splice")["relay_cpu_us_per_request"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The table names the workload and its columns.
    let out = bench(&[
        "--workload",
        "connect",
        "--requests",
        "20",
        "--runs",
        "1",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--workload connect",
        "p99 us",
        "relay CPU us each",
        "relay-splice",
    ] {
        assert!(table.contains(word), "{word:?} missing from\n{table}");
    }
}

#[test]
fn request_workloads_catch_a_corrupted_answer() {
    // Past the 21-byte hello line: the sink still echoes, the echo differs from the request.
    let peer = format!(
        "broken={EXE} corrupting-relay 127.0.0.1:{{listen}} 127.0.0.1:{{upstream}} \
         --at 40"
    );
    for workload in ["rtt", "connect"] {
        let out = bench(&[
            "--workload",
            workload,
            "--requests",
            "50",
            "--runs",
            "1",
            "--json",
            "--quiet",
            "--peer",
            &peer,
        ]);
        assert_eq!(out.status.code(), Some(1), "{workload}: {out:?}");
        let report = json_of(&out);
        assert_eq!(result(&report, "broken")["integrity"], false, "{workload}");
        for path in ["direct", "relay-splice", "relay-copy"] {
            assert_eq!(
                result(&report, path)["integrity"],
                true,
                "{workload} {path}"
            );
        }
    }
}

#[test]
fn request_workload_flags_are_checked() {
    for args in [
        &["--requests", "10"][..],
        &["--message-size", "64"],
        &["--workload", "rtt", "--concurrency", "2"],
        &[
            "--workload",
            "connect",
            "--requests",
            "2",
            "--concurrency",
            "3",
        ],
        &["--workload", "rtt", "--message-size", "2MiB"],
        &["--workload", "rtt", "--requests", "0"],
        &["--workload", "dance"],
        &["--workload", "rtt", "--pattern", "aws-cli"],
        &["--tbf-burst", "1500"],
        &["--tbf-burst", "some"],
        &["--workload", "connect", "--streams", "4"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn request_workloads_reach_a_remote_sink() {
    let (sink, sink_addr) = remote_sink();
    let sink_addr = sink_addr.to_string();
    for workload in ["rtt", "connect"] {
        let out = bench(&[
            "--target",
            &sink_addr,
            "--workload",
            workload,
            "--requests",
            "100",
            "--runs",
            "1",
            "--json",
            "--quiet",
        ]);
        assert!(out.status.success(), "{workload}: {out:?}");
        let report = json_of(&out);
        assert_eq!(report["topology"], "remote");
        assert_request_row_shape(result(&report, "direct"));
        assert_eq!(result(&report, "direct")["integrity"], true);
    }
    drop(sink);
}

#[test]
fn request_workloads_run_in_the_emulated_topology() {
    if !is_root() || !have_iproute2() {
        eprintln!("skipped: needs root and iproute2 (ip, tc)");
        return;
    }
    for workload in ["rtt", "connect"] {
        let out = bench(&[
            "--topology",
            "emulated",
            "--workload",
            workload,
            "--requests",
            "100",
            "--relay-cpu",
            "0.5",
            "--runs",
            "1",
            "--json",
            "--quiet",
        ]);
        assert!(out.status.success(), "{workload}: {out:?}");
        let report = json_of(&out);
        assert_eq!(report["workload"], workload);
        assert_eq!(
            paths(&report),
            ["direct", "vpc", "relay-splice", "relay-copy"]
        );
        for row in report["results"].as_array().unwrap() {
            assert_request_row_shape(row);
            assert_eq!(row["integrity"], true, "{row}");
        }
    }
}

/// `--plot` draws the run it just made; `--plot-from` draws (and `--markdown` tabulates) a saved
/// report without running.
#[test]
fn plot_draws_the_run_and_saved_reports() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("upload.svg");
    let out = bench(&[
        "--size",
        "1MiB",
        "--runs",
        "2",
        "--json",
        "--quiet",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg "), "{drawn}");
    assert!(drawn.trim_end().ends_with("</svg>"), "{drawn}");
    for path in paths(&report) {
        assert!(
            drawn.contains(&format!(">{path}</text>")),
            "{path}: {drawn}"
        );
    }
    assert!(drawn.contains("whiskers: fastest..slowest run"), "{drawn}");

    let saved = dir.path().join("upload.json");
    std::fs::write(&saved, &out.stdout).unwrap();
    let again = dir.path().join("again.svg");
    let out = bench(&[
        "--plot-from",
        saved.to_str().unwrap(),
        "--plot",
        again.to_str().unwrap(),
        "--plot-metric",
        "relative",
        "--markdown",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("| path | seconds |"), "{table}");
    assert!(table.contains("| relay-splice |"), "{table}");
    let drawn = std::fs::read_to_string(&again).unwrap();
    assert!(drawn.contains("time relative to direct"), "{drawn}");

    let rtt = dir.path().join("rtt.svg");
    let out = bench(&[
        "--workload",
        "rtt",
        "--requests",
        "50",
        "--runs",
        "1",
        "--quiet",
        "--plot",
        rtt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let drawn = std::fs::read_to_string(&rtt).unwrap();
    assert!(drawn.starts_with("<svg "), "{drawn}");
    assert!(drawn.contains("p50 (dark), p99 (light)"), "{drawn}");
    assert!(drawn.contains(">relay-splice</text>"), "{drawn}");
}

#[test]
fn plot_flags_that_do_not_fit_are_usage_errors() {
    for args in [
        &["--plot-from", "/nonexistent.json"][..],
        &["--markdown"],
        &["--plot-metric", "relative", "--size", "1MiB"],
        &[
            "--workload",
            "rtt",
            "--plot",
            "x.svg",
            "--plot-metric",
            "seconds",
        ],
        &[
            "--plot",
            "x.svg",
            "--plot-metric",
            "latency",
            "--size",
            "1MiB",
        ],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

/// `--compare`: the same binary twice, tiny counts, one round each; both names and figures.
#[test]
fn compare_runs_two_builds_in_interleaved_rounds() {
    let connect = bench(&[
        "--compare",
        &format!("a={EXE}"),
        "--compare",
        &format!("b={EXE} --accept-proxy v2 --accept-proxy-from 127.0.0.1"),
        "--workload",
        "connect",
        "--requests",
        "20",
        "--runs",
        "2",
    ]);
    assert!(connect.status.success(), "{connect:?}");
    let stdout = String::from_utf8_lossy(&connect.stdout);
    let stderr = String::from_utf8_lossy(&connect.stderr);
    for name in ["a", "b"] {
        assert!(
            stdout.contains(&format!("median {name}: ")) && stdout.contains(" us per connection ("),
            "{stdout}"
        );
        assert_eq!(stderr.matches(&format!(" {name}: ")).count(), 2, "{stderr}");
    }

    let rtt = bench(&[
        "--compare",
        &format!("a={EXE}"),
        "--compare",
        &format!("b={EXE}"),
        "--workload",
        "rtt",
        "--requests",
        "50",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(rtt.status.success(), "{rtt:?}");
    let report = json_of(&rtt);
    assert_eq!(report["compare"], "rtt");
    assert_eq!(report["per_round"], 50);
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    for (v, name) in variants.iter().zip(["a", "b"]) {
        assert_eq!(v["name"], name);
        assert_eq!(v["rounds"].as_array().unwrap().len(), 1);
        assert!(v["median"].as_f64().unwrap() > 0.0, "{v}");
    }

    let upload = bench(&[
        "--compare",
        &format!("a={EXE}"),
        "--compare",
        &format!("b={EXE}"),
        "--size",
        "2MiB",
        "--runs",
        "1",
        "--quiet",
    ]);
    assert!(upload.status.success(), "{upload:?}");
    let stdout = String::from_utf8_lossy(&upload.stdout);
    assert!(
        stdout.contains("median a: ") && stdout.contains(" CPU s/GiB ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("median b: ") && stdout.contains(" MB/s"),
        "{stdout}"
    );
}

/// `--compare` of rate limits (was scripts/rate-limit-bench.py): a variant limited with
/// `--rate-limit-up`, one from a `--config` file with `route_rate_limit` and a `--compare-peer`
/// reach far less than the unlimited relay, over `--streams 2` each with its own MB/s, and the
/// relays' wake-ups are counted. The limits are a small fraction of what loopback moves, so the
/// margins are wide; nothing here is timed.
#[test]
fn compare_measures_rate_limits_over_several_streams() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("route.toml");
    std::fs::write(
        &config,
        "threads = 1\n[[route]]\nname = \"bench\"\nlisten = [\"127.0.0.1:{listen}\"]\n\
         upstream = \"{upstream_addr}\"\nroute_rate_limit = { up = \"40mbit\" }\n",
    )
    .unwrap();
    let out = bench(&[
        "--compare",
        &format!("unlimited={EXE}"),
        "--compare",
        &format!("limited={EXE} --rate-limit-up 40mbit"),
        "--compare",
        &format!("route={EXE} --config {}", config.display()),
        "--compare-peer",
        &format!("peer={EXE} relay {{listen_addr}} {{upstream_addr}} -q --rate-limit-up 20mbit"),
        "--size",
        "2MiB",
        "--streams",
        "2",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["compare"], "upload");
    assert_eq!(report["streams"], 2);
    let variants = report["variants"].as_array().unwrap();
    let rate = |name: &str| {
        let v = variants.iter().find(|v| v["name"] == name).unwrap();
        let streams = v["streams_mb_per_s"].as_array().unwrap();
        assert_eq!(streams.len(), 1, "{v}");
        assert_eq!(streams[0].as_array().unwrap().len(), 2, "{v}");
        assert!(v["wakeups_per_s_median"].as_f64().unwrap() > 0.0, "{v}");
        v["mb_per_s_median"].as_f64().unwrap()
    };
    let unlimited = rate("unlimited");
    // Two connections of 40 Mbit/s each: 10 MB/s in all at most (plus the bursts); the route's
    // 40 Mbit/s and the peer's 2 x 20 Mbit/s: 5 MB/s.
    for (name, limit) in [("limited", 10.0), ("route", 5.0), ("peer", 5.0)] {
        let got = rate(name);
        assert!(
            got < limit * 2.0 && got * 4.0 < unlimited,
            "{name}: {got} MB/s, unlimited {unlimited} MB/s"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("median"), "--quiet: {stderr}");
}

/// `--compare-top` (was scripts/observer-cost.py): a variant watched by `spliceway top` in a
/// tmux pane while idle connections are held through every relay; top's own CPU is reported
/// for that variant alone. Skipped without tmux.
#[test]
fn compare_top_watches_one_variant_with_idle_connections_held() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let out = bench(&[
        "--compare",
        &format!("none={EXE}"),
        "--compare-top",
        &format!("top={EXE}"),
        "--idle-connections",
        "20",
        "--size",
        "2MiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["idle_connections"], 20);
    let variants = report["variants"].as_array().unwrap();
    let none = variants.iter().find(|v| v["name"] == "none").unwrap();
    let top = variants.iter().find(|v| v["name"] == "top").unwrap();
    assert!(none.get("observer_cpu_seconds").is_none(), "{none}");
    let seconds = top["observer_cpu_seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 1, "{top}");
    assert!(seconds[0].as_f64().unwrap() >= 0.0, "{top}");
    for v in [none, top] {
        assert!(v["median"].as_f64().unwrap() > 0.0, "{v}");
    }
}

/// `--topology interception` (was scripts/interception-bench.py): the variant runs three ways
/// in namespaces, each a figure of its own; the original-destination way only works if the
/// REDIRECT rule sent the client's connections to the relay. Skipped without root or nft.
#[test]
fn compare_interception_runs_each_variant_three_ways() {
    if !is_root() || Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    for (workload, count) in [("connect", "--requests"), ("upload", "--size")] {
        let amount = if workload == "connect" { "20" } else { "2MiB" };
        let out = bench(&[
            "--compare",
            &format!("s={EXE}"),
            "--topology",
            "interception",
            "--workload",
            workload,
            count,
            amount,
            "--runs",
            "1",
            "--json",
            "--quiet",
        ]);
        assert!(out.status.success(), "{out:?}");
        let report = json_of(&out);
        assert_eq!(report["compare"], workload);
        let names: Vec<&str> = report["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                assert!(v["median"].as_f64().unwrap() > 0.0, "{v}");
                v["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            ["s/fixed", "s/original-destination", "s/http-connect"]
        );
    }
}

#[test]
fn compare_usage_errors_exit_2() {
    let a = format!("a={EXE}");
    let b = format!("b={EXE}");
    let config_missing = format!("c={EXE} --config /nonexistent/spliceway.toml");
    for args in [
        vec!["--compare", a.as_str()],
        vec!["--compare", a.as_str(), "--compare", a.as_str()],
        vec!["--compare", "no-equals-sign"],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--peer",
            "x=y {listen} {upstream}",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--workload",
            "connect",
            "--message-size",
            "8",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare-connect-proxy",
            b.as_str(),
            "--workload",
            "rtt",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--release-profile",
            "--workload",
            "rtt",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--starts",
            "3",
        ],
        vec!["--release-profile"],
        vec!["--starts", "3"],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--workload",
            "rtt",
            "--streams",
            "2",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--streams",
            "0",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--release-profile",
            "--streams",
            "2",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare-peer",
            "nginx=nginx.sh 127.0.0.1:80",
        ],
        vec!["--compare", a.as_str(), "--compare", &config_missing],
        vec!["--idle-connections", "5"],
        vec!["--topology", "interception"],
        vec![
            "--compare",
            a.as_str(),
            "--topology",
            "interception",
            "--workload",
            "rtt",
        ],
        vec!["--compare-top", a.as_str(), "--topology", "interception"],
        vec![
            "--compare",
            a.as_str(),
            "--compare",
            b.as_str(),
            "--idle-connections",
            "20000",
        ],
        vec![
            "--compare",
            a.as_str(),
            "--compare-top",
            b.as_str(),
            "--workload",
            "rtt",
        ],
    ] {
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
