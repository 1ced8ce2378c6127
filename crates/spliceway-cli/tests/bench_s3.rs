//! `spliceway bench --s3` against an S3-compatible server on this machine: moto's server over
//! TLS with a certificate for `localhost` from a test CA made here (rcgen), started by each
//! test. Sizes stay small (20 MiB: three 8 MiB parts) so the suite stays fast. moto comes from
//! PyPI (`pip install 'moto[server]'`, done by .ci/run); without it the tests say they were
//! skipped, except under CI, where that is a failure.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use spliceway_test_kit::{free_port, wait_until};

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");
const BUCKET: &str = "bench-bucket";
const WAIT: Duration = Duration::from_secs(30);

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test CA and a server certificate for `names`, as PEM files in `dir` (ca.pem, server.pem,
/// server.key) and as DER for a rustls server.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn pki(dir: &Path, names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (moto's TLS, curl) does not chain to an issuer without a name.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "spliceway test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let (ca_path, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_path, ca.as_ref().pem()).unwrap();
    std::fs::write(&cert, server.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    Pki {
        ca: ca_path,
        cert,
        key,
        chain: vec![server.der().clone(), ca.as_ref().der().clone()],
        key_der: server_key.serialize_der(),
    }
}

/// Waits until something accepts connections on `addr` (the kit's bounded wait).
fn wait_listening(addr: SocketAddr) {
    assert!(
        wait_until(WAIT, || TcpStream::connect(addr).is_ok()),
        "nothing listens on {addr}"
    );
}

/// The Python that has moto's server (`PYTHON`, default python3), if one does.
fn moto_python() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then_some(python)
}

/// moto's S3 over TLS on 127.0.0.1, as `https://localhost:PORT`, with bucket BUCKET.
struct Moto {
    _server: Running,
    port: u16,
    pki: Pki,
    dir: tempfile::TempDir,
}

impl Moto {
    /// None (the test is skipped) when moto is not installed, except under CI.
    fn start(test: &str) -> Option<Moto> {
        let Some(python) = moto_python() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: moto's server is not installed (.ci/run installs it)"
            );
            eprintln!("{test}: skipped: moto not found (pip install 'moto[server]')");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path(), &["localhost"]);
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let server = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
            ])
            .arg(&pki.cert)
            .arg("-k")
            .arg(&pki.key)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting moto's server");
        let moto = Moto {
            _server: Running(server),
            port,
            pki,
            dir,
        };
        wait_listening(moto.addr());
        // moto listens a moment before it answers: retry, bounded.
        let deadline = Instant::now() + WAIT;
        loop {
            let created = moto.curl(&["-X", "PUT", "--data", ""], &format!("/{BUCKET}"));
            if created.ends_with("200") {
                break;
            }
            assert!(Instant::now() < deadline, "creating the bucket: {created}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(moto)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// A request to moto (it takes unsigned ones); the body, then the status.
    fn curl(&self, args: &[&str], path: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--max-time",
                "20",
                "--cacert",
            ])
            .arg(&self.pki.ca)
            .args(args)
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("running curl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    }

    /// (objects, open multipart uploads) in the bucket.
    fn leftovers(&self) -> (usize, usize) {
        let objects = self.curl(&[], &format!("/{BUCKET}?list-type=2"));
        let uploads = self.curl(&[], &format!("/{BUCKET}?uploads"));
        assert!(
            objects.ends_with("200") && uploads.ends_with("200"),
            "{objects}\n{uploads}"
        );
        (
            objects.matches("<Key>").count(),
            uploads.matches("<Upload>").count(),
        )
    }

    /// `spliceway bench --s3 s3://BUCKET/test --endpoint-url URL ARGS`, with keys in the
    /// environment and nothing else of the user's AWS setup.
    fn bench_command(&self, args: &[&str]) -> Command {
        let mut command = bench_env(self.dir.path(), &self.pki.ca);
        command
            .args(["--s3", &format!("s3://{BUCKET}/test"), "--endpoint-url"])
            .arg(self.url())
            .args(args);
        command
    }

    fn bench(&self, args: &[&str]) -> Output {
        self.bench_command(args)
            .output()
            .expect("running spliceway bench")
    }
}

/// `spliceway bench` with test keys, the CA, no instance metadata (no traffic off loopback)
/// and no AWS files or variables of the user's.
fn bench_env(home: &Path, ca: &Path) -> Command {
    let mut command = Command::new(EXE);
    command.arg("bench").stdin(Stdio::null());
    for var in [
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        command.env_remove(var);
    }
    command
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CA_BUNDLE", ca)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn row<'a>(report: &'a Value, path: &str, direction: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path && r["direction"] == direction)
        .unwrap_or_else(|| panic!("no row {path} {direction} in {report}"))
}

fn assert_intact_row(row: &Value) {
    for key in [
        "seconds",
        "seconds_min",
        "seconds_max",
        "mb_per_s",
        "client_cpu_seconds_per_gib",
        "client_cores",
        "relative_to_direct",
        "integrity",
        "runs",
    ] {
        assert!(row.get(key).is_some(), "no {key:?} in {row}");
    }
    assert_eq!(row["integrity"], true, "{row}");
    assert!(row["seconds"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
    assert!(
        row["client_cpu_seconds_per_gib"].as_f64().unwrap() > 0.0,
        "{row}"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn relay_to(upstream: SocketAddr) -> (Running, SocketAddr) {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new(EXE)
        .args(["relay", &listen.to_string(), &upstream.to_string(), "-q"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let relay = Running(child);
    wait_listening(listen);
    (relay, listen)
}

#[test]
fn s3_direct_through_a_relay_and_an_sni_route_keeps_the_object_intact() {
    let Some(moto) = Moto::start("s3_direct_through_a_relay_and_an_sni_route") else {
        return;
    };
    let (_relay, relay) = relay_to(moto.addr());
    // `spliceway run` routing by the endpoint's name, as a relay for S3 is configured.
    let sni = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = moto.dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\nname = \"s3\"\nlisten = [\"{sni}\"]\n[[route.sni]]\nmatch = \
             \"localhost\"\nupstream = \"{}\"\n",
            moto.addr()
        ),
    )
    .unwrap();
    let _run = Running(
        Command::new(EXE)
            .args(["run", "-q", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(sni);

    let out = moto.bench(&[
        "--size",
        "20MiB",
        "--runs",
        "1",
        "--via",
        &format!("spliceway={relay}"),
        "--via",
        &format!("sni={sni}"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["workload"], "s3");
    assert_eq!(report["bucket"], BUCKET);
    assert_eq!(report["prefix"], "test/");
    assert_eq!(report["multipart"], true);
    assert_eq!(report["streams"], 10);
    assert_eq!(report["part_size_bytes"], 8 * 1024 * 1024);
    assert_eq!(report["endpoint_resolved"][0], "127.0.0.1", "{report}");
    assert_eq!(report["credentials"], "environment");
    for path in ["direct", "spliceway", "sni"] {
        assert_intact_row(row(&report, path, "up"));
    }
    assert_eq!(row(&report, "direct", "up")["relative_to_direct"], 1.0);
    assert_eq!(row(&report, "sni", "up")["via"], sni.to_string());
    // The table goes to stderr with --json, one line per path.
    let table = stderr(&out);
    assert!(table.contains("bench CPU s/GiB"), "{table}");
    for path in ["direct ", "spliceway ", "sni "] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(path) && l.ends_with("ok")),
            "{path}: {table}"
        );
    }
    assert_eq!(moto.leftovers(), (0, 0), "objects or uploads left behind");

    // Without --json, the table is stdout; --keep leaves the object.
    let out = moto.bench(&["--size", "20MiB", "--runs", "1", "--keep"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("S3 bench: 20.0 MiB to s3://bench-bucket/test/"),
        "{table}"
    );
    assert_eq!(moto.leftovers(), (1, 0));
}

#[test]
fn s3_corrupting_relay_is_an_integrity_failure() {
    let Some(moto) = Moto::start("s3_corrupting_relay_is_an_integrity_failure") else {
        return;
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _broken = Running(
        Command::new(EXE)
            .args([
                "corrupting-relay",
                &listen.to_string(),
                &moto.addr().to_string(),
                "--at",
                "100000",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(listen);
    let out = moto.bench(&[
        "--size",
        "20MiB",
        "--runs",
        "1",
        "--via",
        &format!("broken={listen}"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    assert_intact_row(row(&report, "direct", "up"));
    let broken = row(&report, "broken", "up");
    assert_eq!(broken["integrity"], false, "{broken}");
    assert!(broken["runs"][0]["error"].is_string(), "{broken}");
    assert!(
        stderr(&out).contains("S3 run failed on broken up"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        moto.leftovers(),
        (0, 0),
        "the failed upload was not aborted"
    );
}

#[test]
fn s3_interrupted_run_leaves_no_multipart_upload() {
    let Some(moto) = Moto::start("s3_interrupted_run_leaves_no_multipart_upload") else {
        return;
    };
    let mut child = moto
        .bench_command(&["--size", "256MiB", "--runs", "1", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the multipart upload is open (bounded wait).
    let deadline = Instant::now() + WAIT;
    while moto.leftovers().1 == 0 {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the bench never opened a multipart upload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted, cleaning up"), "{err}");
    assert_eq!(
        moto.leftovers(),
        (0, 0),
        "an upload or object was left behind: {err}"
    );
}

#[test]
fn s3_direction_down_times_ranged_gets_of_an_intact_object() {
    let Some(moto) = Moto::start("s3_direction_down_times_ranged_gets_of_an_intact_object") else {
        return;
    };
    let (_relay, relay) = relay_to(moto.addr());
    let out = moto.bench(&[
        "--size",
        "20MiB",
        "--runs",
        "2",
        "--direction",
        "down",
        "--via",
        &relay.to_string(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["direction"], "down");
    assert_eq!(report["results"].as_array().unwrap().len(), 2, "{report}");
    for path in ["direct", "relay"] {
        let row = row(&report, path, "down");
        assert_intact_row(row);
        assert_eq!(row["runs"].as_array().unwrap().len(), 2);
    }
    assert_eq!(moto.leftovers(), (0, 0));

    // Below one part: a single PUT and a single GET, both ways in each run.
    let out = moto.bench(&[
        "--size",
        "1MiB",
        "--runs",
        "1",
        "--direction",
        "both",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["multipart"], false);
    assert_intact_row(row(&report, "direct", "up"));
    assert_intact_row(row(&report, "direct", "down"));
    assert_eq!(moto.leftovers(), (0, 0));
}

/// A TLS server on 127.0.0.1 with a certificate for `names` that answers every request with
/// `answer` (head and body) and closes: a TLS-terminating relay, or an S3 that refuses.
fn canned_tls_server(
    names: &[&str],
    head: &'static str,
    body: &'static str,
) -> (SocketAddr, Pki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), names);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        pki.chain.clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        // Bounded: a handful of connections per test, and the thread ends with the process.
        for stream in listener.incoming().take(64) {
            let Ok(tcp) = stream else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                // Read the request head, then answer.
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let answer = format!(
                    "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (addr, pki, dir)
}

#[test]
fn s3_errors_give_their_message_and_exit_status() {
    // Wrong keys: S3's answer to an unknown access key.
    let (addr, pki, dir) = canned_tls_server(
        &["localhost"],
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n",
        "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS \
         Access Key Id does not exist.</Message></Error>",
    );
    let out = bench_env(dir.path(), &pki.ca)
        .args(["--s3", "s3://some-bucket", "--endpoint-url"])
        .arg(format!("https://localhost:{}", addr.port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("S3 does not know the access key: check the credentials (InvalidAccessKeyId"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    // The bucket in another region: S3 says which.
    let (addr, pki, dir) = canned_tls_server(
        &["localhost"],
        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-1\r\n",
        "<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>",
    );
    let out = bench_env(dir.path(), &pki.ca)
        .args([
            "--s3",
            "s3://some-bucket",
            "--region",
            "us-east-1",
            "--endpoint-url",
        ])
        .arg(format!("https://localhost:{}", addr.port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in region eu-west-1, not us-east-1: give --region eu-west-1"),
        "{}",
        stderr(&out)
    );

    // No credentials anywhere (and no instance metadata: it is disabled).
    let out = bench_env(dir.path(), &pki.ca)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "--s3",
            "s3://some-bucket",
            "--endpoint-url",
            "https://localhost:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no AWS credentials"),
        "{}",
        stderr(&out)
    );

    // A missing bucket, and a --via that terminates TLS with its own certificate.
    let Some(moto) = Moto::start("s3_errors_give_their_message_and_exit_status") else {
        return;
    };
    let mut command = bench_env(moto.dir.path(), &moto.pki.ca);
    let out = command
        .args(["--s3", "s3://no-such-bucket", "--endpoint-url"])
        .arg(moto.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bucket no-such-bucket does not exist"),
        "{}",
        stderr(&out)
    );
    let (terminating, _pki, _dir) = canned_tls_server(&["relay.test"], "HTTP/1.1 200 OK\r\n", "");
    let out = moto.bench(&["--via", &format!("lb={terminating}")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the certificate is not valid for localhost")
            && err.contains("the relay must pass TLS through untouched"),
        "{err}"
    );
    assert_eq!(moto.leftovers(), (0, 0));
}
