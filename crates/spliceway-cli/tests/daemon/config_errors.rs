use std::process::Output;

use crate::util::{config_file, spliceway};

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
            "{path}:5:1: route \"a\": idle_timout: unknown field `idle_timout`"
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
    ] {
        assert!(summary.contains(&needle), "{needle:?} not in:\n{summary}");
    }
}

#[test]
fn the_packaged_example_passes_check() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/spliceway.toml");
    let output = spliceway()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains("route \"s3\""), "{summary}");
}
