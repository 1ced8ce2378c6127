//! A real TLS handshake through `spliceway run`: rustls client and server, a CA and a server
//! certificate made by rcgen for `bucket.s3.test` and `other.test`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

use crate::util::{Daemon, SPLICEWAY, WAIT, connect, metric, scrape, wait_until};

struct Pki {
    ca: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(vec!["bucket.s3.test".to_string(), "other.test".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let ca_der = ca.as_ref().der().clone();
    Pki {
        server_chain: vec![server.der().clone(), ca_der.clone()],
        ca: ca_der,
        server_key: server_key.serialize_der(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on 127.0.0.1 answering `hello <what the client sent>` and recording the
/// server names it saw.
fn tls_upstream(pki: &Pki) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    thread::spawn({
        let seen = Arc::clone(&seen);
        move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(WAIT));
                let config = Arc::clone(&config);
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let conn = ServerConnection::new(config).unwrap();
                    let mut tls = StreamOwned::new(conn, stream);
                    let mut buf = [0u8; 256];
                    let Ok(n) = tls.read(&mut buf) else { return };
                    if let Some(name) = tls.conn.server_name() {
                        seen.lock().unwrap().push(name.to_string());
                    }
                    let mut reply = b"hello ".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = tls.write_all(&reply);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        }
    });
    (addr, seen)
}

/// Connects through `relay` asking for `name`, verifying the certificate against the CA.
fn tls_request(
    relay: SocketAddr,
    name: &str,
    ca: &CertificateDer<'static>,
) -> std::io::Result<String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), server_name).unwrap();
    let stream: TcpStream = connect(relay);
    let mut tls = StreamOwned::new(conn, stream);
    tls.write_all(b"from the client")?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn tls_passes_for_an_allowed_name_and_fails_for_another() {
    let pki = pki();
    let (upstream, seen) = tls_upstream(&pki);
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
metrics = "127.0.0.1:0"
[[route]]
name = "s3"
listen = ["127.0.0.1:0"]
hello_timeout = "5s"
[[route.sni]]
match = "*.s3.test"
upstream = "{upstream}"
"#
        ),
    );
    let relay = daemon.listen_addr("s3");

    let answer = tls_request(relay, "bucket.s3.test", &pki.ca).expect("TLS through the relay");
    assert_eq!(answer, "hello from the client");
    assert_eq!(seen.lock().unwrap().as_slice(), ["bucket.s3.test"]);

    let refused = tls_request(relay, "other.test", &pki.ca);
    assert!(refused.is_err(), "other.test must be refused: {refused:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the upstream saw no second handshake"
    );

    let metrics = daemon.metrics_addr();
    assert!(
        wait_until(WAIT, || {
            metric(
                &scrape(metrics),
                "spliceway_connections_sni_refused_total",
                &[("route", "s3")],
            ) == Some(1.0)
        }),
        "{}",
        scrape(metrics)
    );
}

/// The ClientHello a TLS client sends for `name`, as bytes.
fn client_hello(name: &str) -> Vec<u8> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Issue 24, finding 9: an SNI entry without an upstream resolves the name the client sends;
/// one that resolves to loopback is refused by the address policy, and that refusal logged a
/// WARN line per connection (1,000 lines for 1,000 connections). It is counted every time and
/// logged at most once a second per route, with the number held back.
#[test]
fn address_policy_refusals_are_counted_each_time_and_logged_once_a_second() {
    let daemon = Daemon::start(
        SPLICEWAY,
        r#"
metrics = "127.0.0.1:0"
[[route]]
name = "sni"
listen = ["127.0.0.1:0"]
[[route.sni]]
match = "localhost"
"#,
    );
    let relay = daemon.listen_addr("sni");
    let hello = client_hello("localhost");
    const CONNECTIONS: usize = 300;
    for _ in 0..CONNECTIONS {
        let mut client = connect(relay);
        client.write_all(&hello).unwrap();
        // Refused: a reset, or an end, once the lookup is answered; never an answer.
        let mut buf = [0u8; 64];
        assert!(!matches!(client.read(&mut buf), Ok(n) if n > 0));
    }
    let metrics = daemon.metrics_addr();
    let refused = || {
        metric(
            &scrape(metrics),
            "spliceway_upstream_refused_total",
            &[("route", "sni"), ("reason", "address_policy")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(WAIT, || refused() >= CONNECTIONS as f64),
        "every refusal counted: {}",
        refused()
    );
    let lines = daemon.count_log("refusing to connect");
    assert!(
        (1..=20).contains(&lines),
        "{lines} log lines for {CONNECTIONS} refusals: {}",
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("held_back="),
        "{}",
        daemon.log_text()
    );
}

/// Issue 25: on a fixed route the log said `sni="-"`, so an operator could not see which names
/// clients asked for (the recipe's whole question with today's AWS CLI). The relay peeks at the
/// ClientHello without waiting for it: a TLS client's name is logged, a plain client is relayed
/// as before with `sni="-"`.
#[test]
fn a_fixed_route_logs_the_tls_server_name_without_waiting_for_one() {
    let pki = pki();
    let (upstream, seen) = tls_upstream(&pki);
    let plain_server = crate::util::echo_server();
    let plain = plain_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
log_level = "info"
[[route]]
name = "fixed"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
[[route]]
name = "plain"
listen = ["127.0.0.1:0"]
upstream = "{plain}"
"#
        ),
    );
    let answer = tls_request(daemon.listen_addr("fixed"), "bucket.s3.test", &pki.ca)
        .expect("TLS through a fixed route");
    assert_eq!(answer, "hello from the client");
    assert_eq!(seen.lock().unwrap().as_slice(), ["bucket.s3.test"]);
    assert!(
        daemon.wait_for_log(r#"sni="bucket.s3.test""#, WAIT),
        "the closed line names the server name: {}",
        daemon.log_text()
    );
    // A client that sends no ClientHello (and waits for an answer first would hang if the
    // relay waited for one): relayed at once, logged without a name.
    crate::util::echo_round_trip(daemon.listen_addr("plain"), b"not TLS");
    assert!(
        wait_until(WAIT, || daemon
            .log_text()
            .lines()
            .any(|l| l.contains("route=plain") && l.contains(r#"sni="-""#))),
        "{}",
        daemon.log_text()
    );
}
