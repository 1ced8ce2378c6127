//! An HTTP CONNECT proxy: the program does the handshake, the engine relays the tunnel.
//!
//! ```text
//! cargo run --example connect_proxy -- 127.0.0.1:3128
//! curl -x http://127.0.0.1:3128 https://example.com/          # curl tunnels https with CONNECT
//! curl -p -x http://127.0.0.1:3128 http://example.com/        # -p: tunnel plain http too
//! ```
//!
//! For each client, on a thread of its own, it:
//!
//! 1. reads the request head (up to the empty line, at most 8 KiB, within 10 s) and parses
//!    `CONNECT host:port HTTP/1.1` (headers are read and ignored);
//! 2. connects to `host:port` (each resolved address in turn, 10 s each);
//! 3. answers `HTTP/1.1 200 Connection established`;
//! 4. hands both sockets to a running relay with [`RelayHandle::adopt`], together with any bytes
//!    the client sent after the request head (a client may start its TLS handshake at once).
//!
//! A malformed request gets `400 Bad Request`, a target that cannot be connected to
//! `502 Bad Gateway`; the proxy goes on serving others. The relay has no routes of its own: it
//! only relays what it is handed, on one worker thread, while the handshakes run on theirs.
//!
//! It prints `listening on ADDR` once bound and, for each tunnel that ends, one line:
//! `end ID: HOW (N bytes up, M down, DURATION) spliced_total=S`, where `spliced_total` is the
//! relay's count of bytes moved by splice so far. There is no access control: do not run it
//! where untrusted clients reach it.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use spliceway::{Adoption, Relay, RelayHandle};

/// The longest request head accepted.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, and an upstream address to accept.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), None) = (args.next(), args.next()) else {
        eprintln!("usage: connect_proxy LISTEN_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&listen)?;
    // No routes: the relay serves only the tunnels handed to it.
    let relay = Relay::builder().build()?;
    let handle = relay.handle();
    let relay_thread = std::thread::spawn(move || relay.run());
    println!("listening on {}", listener.local_addr()?);

    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                eprintln!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let handle = handle.clone();
        std::thread::spawn(move || {
            if let Err(e) = tunnel(client, &handle) {
                eprintln!("client: {e}");
            }
        });
    }
    handle.shutdown();
    relay_thread.join().expect("relay thread")?;
    Ok(())
}

/// One client: handshake, connect, hand over.
fn tunnel(mut client: TcpStream, handle: &RelayHandle) -> io::Result<()> {
    client.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    client.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let (head, early) = match read_head(&mut client)? {
        Some(read) => read,
        None => {
            return respond(
                &mut client,
                "400 Bad Request",
                "request head too long or cut",
            );
        }
    };
    let Some(target) = connect_target(&head) else {
        return respond(
            &mut client,
            "400 Bad Request",
            "expected CONNECT host:port HTTP/1.1",
        );
    };
    let upstream = match connect(target) {
        Ok(upstream) => upstream,
        Err(e) => return respond(&mut client, "502 Bad Gateway", &format!("{target}: {e}")),
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // Timeouts were for the handshake; the relay has its own (idle, half-close).
    client.set_read_timeout(None)?;
    client.set_write_timeout(None)?;
    let stats = handle.clone();
    let adoption = Adoption::new(client, upstream)
        .client_bytes(early)
        .on_end(move |end| {
            // Runs on the relay's worker thread: print and return.
            println!(
                "end {end} spliced_total={}",
                stats.snapshot().stats.bytes_spliced
            );
        });
    match handle.adopt(adoption) {
        Ok(_) => Ok(()),
        Err(refused) => {
            // The relay is stopping or full: the sockets come back; answering is too late
            // (200 was sent), so close the tunnel.
            eprintln!("{refused}");
            Ok(())
        }
    }
}

/// Reads up to the end of the request head. Returns the head and whatever the client sent
/// after it, or `None` if the head is too long or the client ended first.
fn read_head(client: &mut TcpStream) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let early = buf.split_off(end + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), early)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
}

/// The `host:port` of a `CONNECT host:port HTTP/1.x` request line.
fn connect_target(head: &str) -> Option<&str> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (Some("CONNECT"), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    let (host, port) = target.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)).then_some(target)
}

/// Connects to each address of `target` in turn.
fn connect(target: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in target.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Answers with an error status and closes.
fn respond(client: &mut TcpStream, status: &str, why: &str) -> io::Result<()> {
    let body = format!("{why}\n");
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
