//! The engine beside a tokio runtime: tokio accepts and connects, the engine relays.
//!
//! ```text
//! cargo run --example tokio_embed -- 127.0.0.1:8080 127.0.0.1:9000
//! ```
//!
//! A program built on tokio keeps its accept loop, its handshakes and whatever else it does
//! asynchronously, and hands the long transfers to the engine for zero-copy forwarding:
//! `tokio::net::TcpStream::into_std` takes a socket out of tokio's reactor, and
//! [`spliceway::RelayHandle::adopt`] gives it to a relay running on an ordinary thread of its
//! own (the engine has its own epoll loop and needs no runtime). The relay takes the sockets in
//! whatever blocking mode they are and makes them non-blocking itself; tokio never sees them
//! again. Adopting does not block, so it may be called from async code.
//!
//! It relays each connection to `LISTEN` to `UPSTREAM` (an `ip:port`), prints
//! `listening on ADDR` once bound and one `end ...` line per connection that ends.

use std::net::SocketAddr;

use spliceway::{Adoption, Relay};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: tokio_embed LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;

    // The relay on a thread of its own, with no routes: it relays what it is handed.
    let relay = Relay::builder().build()?;
    let handle = relay.handle();
    let relay_thread = std::thread::spawn(move || relay.run());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let served: std::io::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (client, _) = listener.accept().await?;
            let handle = handle.clone();
            tokio::spawn(async move {
                let upstream = match tokio::net::TcpStream::connect(upstream).await {
                    Ok(upstream) => upstream,
                    Err(e) => return eprintln!("connect {upstream}: {e}"),
                };
                // Out of tokio's reactor, into the engine.
                let (client, upstream) = match (client.into_std(), upstream.into_std()) {
                    (Ok(c), Ok(u)) => (c, u),
                    (Err(e), _) | (_, Err(e)) => return eprintln!("into_std: {e}"),
                };
                let adoption = Adoption::new(client, upstream).on_end(|end| println!("end {end}"));
                if let Err(refused) = handle.adopt(adoption) {
                    eprintln!("{refused}");
                }
            });
        }
    });
    served?;
    relay_thread.join().expect("relay thread")?;
    Ok(())
}
