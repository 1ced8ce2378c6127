//! The programs in `examples/` run and do what their docs say: each is started as its own
//! process (the binary `cargo test` builds beside this test's, or built here if missing) and
//! driven over loopback, and what comes out is hashed against what went in.
//!
//! The connect_proxy tests use `curl` and `openssl` (installed by `.ci/run`); without them they
//! are skipped with a message, except under CI (`CI` set), where a missing tool is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spliceway_test_kit::{
    Server, TEST_TIMEOUT, dead_addr, echo_server, generated, hash_answer, hash_server, try_echo,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The path of example `name`'s binary: where cargo builds it (`target/<profile>/examples/`,
/// beside this test's `deps/`). `cargo test` builds every example before the tests run; when
/// only this test was built (`cargo test --test examples`) and the binary is missing or older
/// than the crate's sources, it is built here with the same cargo.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let stale = built.is_none_or(|built| {
        newest_source(&crate_dir.join("src")).max(newest_source(&crate_dir.join("examples")))
            > Some(built)
    });
    if stale {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "spliceway", "--example", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    assert!(path.exists(), "no example binary at {}", path.display());
    path
}

/// The latest modification time of the `.rs` files under `dir`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.map_while(Result::ok) {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(time);
    }
    newest
}

/// A running example: killed when dropped. Its stdout lines after the first come on a channel.
struct Running {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts example `name` with `args` and waits for its `listening on ADDR` line.
    fn start(name: &str, args: &[&str]) -> Running {
        let mut child = Command::new(example(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name} said {first:?}"))
            .parse()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, addr, lines }
    }

    /// The next `end ...` line the example prints.
    fn next_end(&self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(TIMEOUT)
                .expect("the example reports the end");
            if line.starts_with("end ") {
                return line;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Sends `payload` through `addr` to a hash server (write, half-close, read to the end);
/// returns the server's answer line.
fn through_to_sink(addr: SocketAddr, payload: &[u8]) -> String {
    let answer = try_echo(addr, payload, TEST_TIMEOUT).expect("an upload through the example");
    String::from_utf8(answer).expect("an answer line in ASCII")
}

/// The answer line a hash server owes for `payload`.
fn sink_answer(payload: &[u8]) -> String {
    format!("{}\n", hash_answer(payload))
}

#[test]
fn forward_relays_bytes_intact() {
    let sink = hash_server();
    let forward = Running::start("forward", &["127.0.0.1:0", &sink.to_string()]);
    let payload = generated(1, 24 << 20);
    assert_eq!(
        through_to_sink(forward.addr, &payload),
        sink_answer(&payload)
    );
}

#[test]
fn tokio_embed_relays_bytes_intact() {
    let sink = hash_server();
    let proxy = Running::start("tokio_embed", &["127.0.0.1:0", &sink.to_string()]);
    let payload = generated(2, 24 << 20);
    assert_eq!(through_to_sink(proxy.addr, &payload), sink_answer(&payload));
    let end = proxy.next_end();
    assert!(end.contains("both finished"), "{end}");
    assert!(
        end.contains(&format!("{} bytes up", payload.len())),
        "{end}"
    );
}

/// Reads an HTTP response head from `stream` (up to the empty line).
fn response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn connect_proxy_refuses_bad_requests_and_hands_over_early_bytes() {
    let proxy = Running::start("connect_proxy", &["127.0.0.1:0"]);
    let ask = |request: &[u8]| {
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(request).unwrap();
        (response_head(&mut stream), stream)
    };
    for malformed in [
        &b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n"[..],
        b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:80 HTTP/9\r\n\r\n",
        b"\x16\x03\x01 not http at all\r\n\r\n",
    ] {
        let (head, _) = ask(malformed);
        assert!(head.starts_with("HTTP/1.1 400 "), "{malformed:?}: {head:?}");
    }
    // A port nothing listens on.
    let dead_addr = dead_addr();
    let (head, _) = ask(format!("CONNECT {dead_addr} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 502 "), "{head:?}");

    // Bytes sent with the request head reach the target first.
    let echo = echo_server();
    let early = generated(3, 3000);
    let mut request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").into_bytes();
    request.extend_from_slice(&early);
    let (head, mut tunnel) = ask(&request);
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established"),
        "{head:?}"
    );
    tunnel.write_all(b"and after").unwrap();
    tunnel.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    tunnel.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), early.len() + 9);
    assert_eq!(sha(&back), sha(&[&early[..], b"and after"].concat()));
    let end = proxy.next_end();
    assert!(end.contains("both finished"), "{end}");
}

/// Whether `tool` can be run; outside CI a missing tool skips the test (returns false).
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Command::new(tool)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing under CI (.ci/run installs it)"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// A plain HTTP server answering every GET with `body` (the kit's accept loop).
fn http_server(body: Vec<u8>) -> Server {
    let body = std::sync::Arc::new(body);
    Server::start(move |mut stream| {
        let head = {
            let mut reader = BufReader::new(&stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            head
        };
        if head.starts_with("GET ") {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    })
}

/// `openssl s_server -WWW` serving `dir` over TLS on loopback with a fresh self-signed
/// certificate for 127.0.0.1 (`dir/cert.pem`); killed when dropped.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl TlsServer {
    fn start(dir: &Path) -> TlsServer {
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl req");
        assert!(status.success(), "openssl req");
        // A free port (the kernel's choice, released for openssl to bind).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-WWW", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", "cert.pem", "-key", "key.pem"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        // It prints ACCEPT once it listens.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if line.contains("ACCEPT") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(TIMEOUT).expect("openssl s_server listens");
        TlsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args`, returns what it downloaded.
fn curl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = dir.join("downloaded");
    let _ = std::fs::remove_file(&out);
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "60",
            "-o",
        ])
        .arg(&out)
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(&out).unwrap()
}

/// The relay's `spliced_total` on an `end` line.
fn spliced_total(end: &str) -> u64 {
    end.rsplit_once("spliced_total=")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spliced_total in {end:?}"))
}

#[test]
fn connect_proxy_tunnels_http_and_https_for_curl_with_splice() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = generated(4, 12 << 20);
    std::fs::write(dir.path().join("file.bin"), &body).unwrap();
    let proxy = Running::start("connect_proxy", &["127.0.0.1:0"]);
    let proxy_url = format!("http://{}", proxy.addr);

    // Plain http through the tunnel (-p: CONNECT for http too).
    let http = http_server(body.clone());
    let got = curl(
        dir.path(),
        &["-p", "-x", &proxy_url, &format!("http://{http}/file.bin")],
    );
    assert_eq!(sha(&got), sha(&body), "http through the proxy");
    let end = proxy.next_end();
    assert!(end.contains("both finished"), "{end}");
    assert!(
        spliced_total(&end) > body.len() as u64,
        "moved by splice: {end}"
    );

    // https: curl tunnels with CONNECT and does TLS end to end with the server.
    let tls = TlsServer::start(dir.path());
    let cert = dir.path().join("cert.pem");
    let got = curl(
        dir.path(),
        &[
            "-x",
            &proxy_url,
            "--cacert",
            cert.to_str().unwrap(),
            &format!("https://{}/file.bin", tls.addr),
        ],
    );
    assert_eq!(sha(&got), sha(&body), "https through the proxy");
    let end = proxy.next_end();
    assert!(
        spliced_total(&end) > 2 * body.len() as u64,
        "both downloads moved by splice: {end}"
    );
}
