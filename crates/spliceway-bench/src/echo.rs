//! The `echo` workload at a sink: every byte back as it arrives, until end of stream.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};

/// Largest read handed back in one write.
const ECHO_CHUNK_BYTES: usize = 64 * 1024;

/// Writes `already` (what came with the hello line) back, then echoes until the client ends
/// its stream, and ends ours. Returns the bytes echoed. Small writes go out at once
/// (TCP_NODELAY), as a request/response server's would.
pub(crate) fn serve(stream: &mut TcpStream, already: &[u8]) -> std::io::Result<u64> {
    stream.set_nodelay(true)?;
    let mut total = already.len() as u64;
    if !already.is_empty() {
        stream.write_all(already)?;
    }
    let mut buffer = vec![0u8; ECHO_CHUNK_BYTES];
    loop {
        let n = match stream.read(&mut buffer) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            break;
        }
        stream.write_all(&buffer[..n])?;
        total += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(total)
}
