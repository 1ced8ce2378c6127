//! `spliceway corrupting-relay LISTEN UPSTREAM` (hidden): a deliberately broken relay that
//! flips the first byte each client sends. The integrity tests pass it to `bench --peer` to
//! check that a corrupted path is reported and fails the run.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use anyhow::Context as _;

/// Arguments of the hidden `corrupting-relay` command.
#[derive(Debug, clap::Args)]
pub struct CorruptingRelayArgs {
    /// Address to listen on (ip:port).
    pub(crate) listen: SocketAddr,
    /// Address to forward to (ip:port).
    pub(crate) upstream: SocketAddr,
}

/// Relays connections, thread per connection, until killed.
pub fn run(args: CorruptingRelayArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let upstream = args.upstream;
        std::thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(upstream) {
                let _ = relay(client, server);
            }
        });
    }
    Ok(())
}

fn relay(client: TcpStream, server: TcpStream) -> std::io::Result<()> {
    let (mut client_in, mut server_out) = (client.try_clone()?, server.try_clone()?);
    let answers = std::thread::spawn(move || {
        let (mut server_in, mut client_out) = (server, client);
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let mut flipped = false;
    loop {
        let n = client_in.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if !flipped {
            buffer[0] ^= 0x01;
            flipped = true;
        }
        server_out.write_all(&buffer[..n])?;
    }
    server_out.shutdown(Shutdown::Write)?;
    let _ = answers.join();
    Ok(())
}
