//! `spliceway corrupting-relay LISTEN UPSTREAM` (hidden): a deliberately broken relay that
//! flips one byte of what each client sends (the first, or the one at `--at OFFSET`, so that a
//! hello line can pass untouched and a part's payload be hit). The integrity tests pass it to
//! `bench --peer` to check that a corrupted path is reported and fails the run.

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
    /// Offset in each client's stream of the byte to flip.
    #[arg(long, default_value_t = 0)]
    pub(crate) at: u64,
}

/// Relays connections, thread per connection, until killed.
pub fn run(args: CorruptingRelayArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (upstream, at) = (args.upstream, args.at);
        std::thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(upstream) {
                let _ = relay(client, server, at);
            }
        });
    }
    Ok(())
}

fn relay(client: TcpStream, server: TcpStream, at: u64) -> std::io::Result<()> {
    let (mut client_in, mut server_out) = (client.try_clone()?, server.try_clone()?);
    let answers = std::thread::spawn(move || {
        let (mut server_in, mut client_out) = (server, client);
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; 64 * 1024];
    // Small requests pass at once (the request workloads), as through any relay.
    let _ = client_in.set_nodelay(true);
    let _ = server_out.set_nodelay(true);
    let mut offset = 0u64;
    loop {
        let n = client_in.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if (offset..offset + n as u64).contains(&at) {
            buffer[(at - offset) as usize] ^= 0x01;
        }
        offset += n as u64;
        server_out.write_all(&buffer[..n])?;
    }
    server_out.shutdown(Shutdown::Write)?;
    let _ = answers.join();
    Ok(())
}
