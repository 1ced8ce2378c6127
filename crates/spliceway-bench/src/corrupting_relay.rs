//! `spliceway corrupting-relay LISTEN UPSTREAM [--flip-offset N]` (hidden): a deliberately
//! broken relay that flips one byte of what each client sends (the first, or the one at
//! offset N: past a request workload's hello line, so the sink still echoes). The integrity tests pass it to `bench --peer` to
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
    /// Which byte of each client's stream to flip, counted from 0.
    #[arg(long, default_value_t = 0)]
    pub(crate) flip_offset: u64,
}

/// Relays connections, thread per connection, until killed.
pub fn run(args: CorruptingRelayArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let upstream = args.upstream;
        let flip_offset = args.flip_offset;
        std::thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(upstream) {
                let _ = relay(client, server, flip_offset);
            }
        });
    }
    Ok(())
}

fn relay(client: TcpStream, server: TcpStream, flip_offset: u64) -> std::io::Result<()> {
    let (mut client_in, mut server_out) = (client.try_clone()?, server.try_clone()?);
    let answers = std::thread::spawn(move || {
        let (mut server_in, mut client_out) = (server, client);
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let _ = client_in.set_nodelay(true);
    let _ = server_out.set_nodelay(true);
    let mut offset = 0u64;
    loop {
        let n = client_in.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if let Some(i) = flip_offset.checked_sub(offset).filter(|&i| i < n as u64) {
            buffer[i as usize] ^= 0x01;
        }
        offset += n as u64;
        server_out.write_all(&buffer[..n])?;
    }
    server_out.shutdown(Shutdown::Write)?;
    let _ = answers.join();
    Ok(())
}
